//! What the machine that makes batches and the stations trust each other with, on disk:
//! age identities and recipients for bundles sealed to stations (`age_files`), and the
//! batch-signing key and the signatures a station checks (`signature_files`). The formats
//! and the cryptography are `core::sealed`'s and `core::signing`'s.

pub mod age_files;
pub mod signature_files;
