//! What the machine that makes batches and the stations trust each other with, on disk:
//! age identities and recipients for bundles sealed to stations (`age_files`), and the
//! batch-signing key and the signatures a station checks (`signature_files`), and the
//! passphrase of an air-gapped batch's key store (`passphrase`). The formats and the
//! cryptography are `core::sealed`'s, `core::signing`'s and `core::key_store`'s.

pub mod age_files;
pub mod passphrase;
pub mod signature_files;
