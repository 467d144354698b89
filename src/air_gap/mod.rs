//! The air-gapped flow: a batch's three stages on two machines, with plain files carried
//! between them. On the offline machine `prepare` makes the keys (kept only in the encrypted
//! key store, `keys.age`) and the CSRs (`csrs.jsonl`); on the online machine `register`
//! sends the CSRs to AWS IoT as `batch` does, journaled and resumable, and writes
//! `certificates.jsonl`; back offline, `package` checks every certificate against its
//! device's key and batch, then writes the bundles and the manifest as `batch` does. The
//! formats are `core::carried`'s and `core::key_store`'s.

pub mod csrs;
pub mod package;
pub mod prepare;
pub mod register;
