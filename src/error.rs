//! The errors a user can cause: bad station files, bad serial lists, bad flags, an unusable
//! output directory, an unusable identity file, a missing AWS resource. Each renders as one line that names the file,
//! line or value at fault and says how to fix it; all of them exit with code 2.

use std::path::PathBuf;

/// A mistake in the input or the environment that the user must fix before a batch can run.
/// Nothing has been created in AWS or on disk when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The station config file could not be parsed or holds a bad value.
    #[error("{file}: {problem}")]
    Station { file: PathBuf, problem: String },

    /// The serials file could not be parsed or holds a bad or duplicate serial.
    #[error("{file}:{line}: {problem}")]
    Devices {
        file: PathBuf,
        line: u64,
        problem: String,
    },

    /// A file carried between the air-gapped and the online machine was refused: another
    /// batch's, cut short, edited, or holding a certificate for another key.
    #[error("{file}:{line}: {problem}")]
    Carried {
        file: PathBuf,
        line: u64,
        problem: String,
    },

    /// A command-line value is invalid.
    #[error("{flag} {value:?}: {problem}")]
    Flag {
        flag: &'static str,
        value: String,
        problem: String,
    },

    /// The output directory cannot be used.
    #[error("output directory {dir}: {problem}")]
    OutputDir { dir: PathBuf, problem: String },

    /// A station's age identity file cannot be used: unreadable, not an identity, or not
    /// one a bundle was encrypted to. Never holds the file's contents.
    #[error("identity {file}: {problem}")]
    Identity { file: PathBuf, problem: String },

    /// AWS said something the user must fix (missing policy, no credentials, access denied).
    #[error("{0}")]
    Aws(String),
}

impl UserError {
    /// Builds a station error.
    pub fn station(file: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        UserError::Station {
            file: file.into(),
            problem: problem.into(),
        }
    }

    /// Builds an output-directory error.
    pub fn output_dir(dir: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        UserError::OutputDir {
            dir: dir.into(),
            problem: problem.into(),
        }
    }
}
