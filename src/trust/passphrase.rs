//! The passphrase an air-gapped batch's key store is encrypted with: asked for on the
//! terminal (twice when it is set), or read from the first line of a file (for scripts; a
//! pipe such as `<(pass show claimfab)` keeps it off disk). Held only as age's
//! `SecretString`, wiped on drop, never echoed or logged.

use std::path::Path;

use age::secrecy::SecretString;
use zeroize::Zeroizing;

use crate::core::sealed::read_fixed;
use crate::error::UserError;

/// A passphrase is a line; a file far longer is not a passphrase file.
const MAX_PASSPHRASE_BYTES: usize = 4096;

/// The passphrase on the first line of `path`.
pub fn from_file(path: &Path) -> Result<SecretString, UserError> {
    let fail = |problem: String| UserError::Flag {
        flag: "--passphrase-file",
        value: path.display().to_string(),
        problem,
    };
    let file = std::fs::File::open(path)
        .map_err(|e| fail(format!("cannot be read ({e}); check the path")))?;
    let bytes = read_fixed(file, MAX_PASSPHRASE_BYTES + 1)
        .map_err(|e| fail(format!("cannot be read ({e})")))?;
    if bytes.len() > MAX_PASSPHRASE_BYTES {
        return Err(fail(format!(
            "is over {MAX_PASSPHRASE_BYTES} bytes: put the passphrase alone on its first line"
        )));
    }
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let text =
        std::str::from_utf8(first).map_err(|_| fail("its first line is not UTF-8 text".into()))?;
    checked(Zeroizing::new(text.to_string())).map_err(fail)
}

/// Asks for the passphrase on the terminal; `confirm` asks twice (when it is being set).
pub fn prompt(flag: &'static str, confirm: bool) -> Result<SecretString, UserError> {
    let fail = |problem: String| UserError::Flag {
        flag,
        value: String::new(),
        problem,
    };
    let ask = |question: &str| {
        rpassword::prompt_password(question).map(Zeroizing::new).map_err(|e| {
            fail(format!("cannot ask on the terminal ({e}); run it on a terminal or pass --passphrase-file"))
        })
    };
    let first = ask("key store passphrase: ")?;
    if confirm {
        let again = ask("the same passphrase again: ")?;
        if *again != *first {
            return Err(fail(
                "the two passphrases differ; nothing was written".into(),
            ));
        }
    }
    checked(first).map_err(fail)
}

/// Refuses an empty passphrase (age would accept it, and it protects nothing).
fn checked(text: Zeroizing<String>) -> Result<SecretString, String> {
    if text.is_empty() {
        return Err("the passphrase is empty".into());
    }
    Ok(SecretString::from(text.to_string()))
}
