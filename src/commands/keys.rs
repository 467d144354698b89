//! The key-making commands: `station-key` (a station's age identity, for bundles sealed to
//! it) and `batch-key` (the batch-signing key). Each writes the secret to `--out` (mode
//! 0600, never over an existing file) and prints only the public half on standard output.

use anyhow::Result;

use crate::cli::{BatchKeyArgs, StationKeyArgs};
use crate::trust::age_files::write_station_key;
use crate::trust::signature_files::write_signing_key;

/// Runs `claimfab station-key`: the identity to `--out`, its recipient on standard output
/// (the secret never is).
pub fn station_key(args: &StationKeyArgs) -> Result<()> {
    let recipient = write_station_key(&args.out)?;
    eprintln!(
        "wrote the station's identity to {} (mode 0600; keep it on the station); its recipient, for `batch --encrypt-to`:",
        args.out.display()
    );
    crate::say!("{recipient}");
    emit_key(&args.out, &recipient);
    Ok(())
}

/// Runs `claimfab batch-key`: the private key to `--out`, its public key on standard output.
pub fn batch_key(args: &BatchKeyArgs) -> Result<()> {
    let public = write_signing_key(&args.out)?;
    eprintln!(
        "wrote the batch-signing key to {} (mode 0600; keep it on the machine that makes batches, never on the shared drive); its public key, for the stations' [station] batch_keys:",
        args.out.display()
    );
    crate::say!("{public}");
    emit_key(&args.out, &public.to_string());
    Ok(())
}

fn emit_key(file: &std::path::Path, public_key: &str) {
    crate::output::emit(&crate::output::records::Record::Key {
        file: &file.display().to_string(),
        public_key,
    });
}
