//! Bundles sealed for their stations with age (X25519): recipients (`age1...`, a station's
//! public key) parsed from flags and recipients files, identity files (as `age-keygen` and
//! `claimfab station-key` write them) parsed, bundle bytes encrypted to every recipient, and
//! opened again with an identity, the plaintext bounded and in a buffer wiped on drop and
//! never grown ([`read_fixed`], which file readers use too). Pure: text, bytes and readers
//! in, values out; no file is opened here.

use std::io::{self, Read, Write};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age::x25519;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::core::wiping::wiping;

/// What a sealed bundle's name ends with (`bundles/SERIAL.zip.age`).
pub const SEALED_SUFFIX: &str = ".age";

/// How every binary age file begins.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// What an age identity line begins with; never echoed back in an error.
const SECRET_PREFIX: &str = "AGE-SECRET-KEY-";

/// Whether `bytes` are an age-encrypted file (binary format).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(AGE_MAGIC)
}

/// The lines of an age recipients or identity file that say something, trimmed, with their
/// 1-based numbers: `#` comments and blank lines are skipped.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(i, line)| (i + 1, line))
}

/// The stations a batch's bundles are encrypted to: one or more X25519 recipients, in a
/// canonical order without repeats.
#[derive(Clone)]
pub struct Recipients(Vec<x25519::Recipient>);

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.to_strings()).finish()
    }
}

/// One recipient, or why the value is none. A secret key passed by mistake is not echoed.
pub fn parse_recipient(value: &str) -> Result<x25519::Recipient, RecipientError> {
    let value = value.trim();
    if value
        .get(..SECRET_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(SECRET_PREFIX))
    {
        return Err(RecipientError::Secret);
    }
    x25519::Recipient::from_str(value).map_err(|why| RecipientError::Bad {
        value: value.to_string(),
        why: why.to_string(),
    })
}

/// Why a value is not a recipient (said after the value, or after a recipients file's line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    #[error("is not an age X25519 recipient ({why}); pass a station's public key, age1... as `claimfab station-key` prints it")]
    Bad { value: String, why: String },
    #[error("is an age identity (a secret key), not a recipient; pass its public key (`age-keygen -y FILE` shows it) and keep the identity on its station")]
    Secret,
    #[error("names no recipient; pass a station's public key, age1... as `claimfab station-key` prints it")]
    Empty,
}

impl Recipients {
    /// The recipients named by `values` (each may list several, comma-separated). A value
    /// that names none (an unset variable's `""`) is refused: it must not quietly mean
    /// "unencrypted".
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, RecipientError> {
        let mut recipients = Vec::new();
        for value in values {
            let before = recipients.len();
            for item in value.split(',').filter(|v| !v.trim().is_empty()) {
                recipients.push(parse_recipient(item)?);
            }
            if recipients.len() == before {
                return Err(RecipientError::Empty);
            }
        }
        Ok(Self::canonical(recipients))
    }

    /// The recipients of a recipients file (as age's `-R` reads: one per line, `#` comments
    /// and blank lines ignored). An error names its line.
    pub fn parse_file(text: &str) -> Result<Self, String> {
        let mut recipients = Vec::new();
        for (number, line) in content_lines(text) {
            let recipient = parse_recipient(line).map_err(|e| match &e {
                RecipientError::Bad { value, .. } => format!("line {number}: {value:?} {e}"),
                _ => format!("line {number} {e}"),
            })?;
            recipients.push(recipient);
        }
        Ok(Self::canonical(recipients))
    }

    fn canonical(recipients: Vec<x25519::Recipient>) -> Self {
        let mut by_text: Vec<(String, x25519::Recipient)> =
            recipients.into_iter().map(|r| (r.to_string(), r)).collect();
        by_text.sort_by(|a, b| a.0.cmp(&b.0));
        by_text.dedup_by(|a, b| a.0 == b.0);
        Self(by_text.into_iter().map(|(_, r)| r).collect())
    }

    /// These and `other`'s, together.
    pub fn join(self, other: Self) -> Self {
        Self::canonical(self.0.into_iter().chain(other.0).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each recipient as `age1...`, in canonical order.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// An age encryptor to every recipient.
    pub fn encryptor(&self) -> age::Encryptor {
        let recipients = self.0.iter().map(|r| r as &dyn age::Recipient);
        age::Encryptor::with_recipients(recipients)
            .expect("X25519 recipients, at least one: checked when parsed")
    }

    /// Encrypts `plaintext` to every recipient (binary age format); the ciphertext is not
    /// secret. age's writer copies the plaintext into a 64 KiB chunk buffer that it frees
    /// without wiping (age 0.12): that happens inside [`wiping`], so the binary's allocator
    /// zeroes it (tests/wiping.rs).
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        wiping(|| self.seal_unwiped(plaintext))
    }

    fn seal_unwiped(&self, plaintext: &[u8]) -> Vec<u8> {
        let recipients = self.0.iter().map(|r| r as &dyn age::Recipient);
        let encryptor = age::Encryptor::with_recipients(recipients)
            .expect("X25519 recipients, at least one: checked when parsed");
        let mut sealed = Vec::with_capacity(plaintext.len() + 256 * (self.0.len() + 1));
        let mut writer = encryptor
            .wrap_output(&mut sealed)
            .expect("writing to memory cannot fail");
        writer
            .write_all(plaintext)
            .and_then(|()| writer.finish().map(drop))
            .expect("writing to memory cannot fail");
        sealed
    }
}

/// The identities of one identity file (X25519 only).
pub struct Identities(Vec<x25519::Identity>);

/// Shows the public keys only: a secret never reaches a log or a panic message.
impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Identities")
            .field(&self.recipients())
            .finish()
    }
}

/// Parses an identity file as `age-keygen` writes it: `#` comment lines, blank lines and
/// one `AGE-SECRET-KEY-1...` line per identity. Errors give the line number, never its text.
pub fn parse_identities(text: &str) -> Result<Identities, String> {
    let mut identities = Vec::new();
    for (number, line) in content_lines(text) {
        match x25519::Identity::from_str(line) {
            Ok(identity) => identities.push(identity),
            Err(_) if line.starts_with("age1") => {
                return Err(format!(
                    "line {number} is a recipient (a public key), not an identity; pass the station's identity file (the secret key)"
                ))
            }
            Err(why) => {
                return Err(format!(
                    "line {number} is not an age X25519 identity ({why}); pass a file `claimfab station-key` or `age-keygen` wrote"
                ))
            }
        }
    }
    if identities.is_empty() {
        return Err("holds no age identity (AGE-SECRET-KEY-1...); pass a file `claimfab station-key` or `age-keygen` wrote".into());
    }
    Ok(Identities(identities))
}

impl Identities {
    /// The recipient (public key) of each identity.
    pub fn recipients(&self) -> Vec<String> {
        self.0.iter().map(|i| i.to_public().to_string()).collect()
    }

    /// The identities as age takes them.
    pub fn as_age(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.0.iter().map(|i| i as &dyn age::Identity)
    }
}

/// Why a sealed bundle did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// None of the identities is a recipient of the file (or its header was altered: age
    /// recipients are anonymous, so the two look the same).
    #[error("is not encrypted to this identity")]
    WrongIdentity,
    #[error("is not an age-encrypted bundle ({0})")]
    NotSealed(String),
    #[error("does not decrypt: it was damaged or altered ({0})")]
    Damaged(String),
    #[error("decrypts to over {0} bytes: not a claimfab bundle")]
    TooLarge(u64),
}

/// Decrypts a sealed bundle with `identities`; at most `limit` bytes of plaintext are read,
/// into a buffer that is wiped on drop and never grown (see [`read_fixed`]): age's
/// plaintext is shorter than its ciphertext, so the sealed size bounds it.
pub fn open(
    identities: &Identities,
    sealed: &[u8],
    limit: u64,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let decryptor =
        age::Decryptor::new_buffered(sealed).map_err(|e| OpenError::NotSealed(e.to_string()))?;
    let identities = identities.0.iter().map(|i| i as &dyn age::Identity);
    let reader = decryptor.decrypt(identities).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => OpenError::WrongIdentity,
        other => OpenError::Damaged(other.to_string()),
    })?;
    let over_limit = limit.saturating_add(1);
    let capacity = usize::try_from((sealed.len() as u64).min(over_limit)).unwrap_or(usize::MAX);
    let plaintext = read_fixed(reader, capacity).map_err(|e| OpenError::Damaged(e.to_string()))?;
    // A full buffer was not read to its end, so age has not checked the last chunk.
    if plaintext.len() == capacity {
        return Err(if capacity as u64 == over_limit {
            OpenError::TooLarge(limit)
        } else {
            OpenError::Damaged("it decrypts to more than its own size".into())
        });
    }
    Ok(plaintext)
}

/// Reads `reader` to its end into a buffer of exactly `capacity` bytes, wiped on drop. It is
/// never grown: a `Vec` that grows copies its bytes and frees the old block unwiped, and
/// `read_to_end` grows, or reads through a stack buffer, once its spare room runs out. The
/// result is full (`len() == capacity`) when the reader had that much or more, so a caller
/// that wants at most N bytes passes N + 1 and refuses a full buffer.
pub fn read_fixed(mut reader: impl Read, capacity: usize) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut buffer = Zeroizing::new(vec![0u8; capacity]);
    let mut filled = 0;
    while filled < capacity {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    // Shortening keeps the allocation, which the wipe on drop covers whole.
    buffer.truncate(filled);
    Ok(buffer)
}

/// A new station key pair: the identity file's text (as `age-keygen` writes it; wiped on
/// drop) and the recipient to pass to `batch --encrypt-to`.
pub struct StationKey {
    pub identity_file: Zeroizing<String>,
    pub recipient: String,
}

/// Makes a station key pair with the OS CSPRNG; `now` dates the file, as age-keygen does.
pub fn new_station_key(now: OffsetDateTime) -> StationKey {
    let identity = x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let created = now
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("0 is valid")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("UTC times format");
    let secret = identity.to_string();
    let identity_file = Zeroizing::new(format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        secret.expose_secret()
    ));
    StationKey {
        identity_file,
        recipient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (Identities, String) {
        let key = new_station_key(OffsetDateTime::UNIX_EPOCH);
        (parse_identities(&key.identity_file).unwrap(), key.recipient)
    }

    #[test]
    fn a_bundle_sealed_to_two_stations_opens_with_either_and_not_a_third() {
        let (a, a_public) = key();
        let (b, b_public) = key();
        let (c, _) = key();
        let recipients = Recipients::parse([a_public.as_str(), &format!("{b_public}, ")]).unwrap();
        assert_eq!(recipients.to_strings().len(), 2);
        let sealed = recipients.seal(b"PK\x03\x04 a zip with a -----BEGIN PRIVATE KEY-----");
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(11).any(|w| w == b"PRIVATE KEY"));
        for identities in [&a, &b] {
            let opened = open(identities, &sealed, 1 << 20).unwrap();
            assert!(opened.ends_with(b"-----BEGIN PRIVATE KEY-----"));
        }
        assert_eq!(open(&c, &sealed, 1 << 20), Err(OpenError::WrongIdentity));
    }

    #[test]
    fn damaged_foreign_and_oversized_files_do_not_open() {
        let (a, public) = key();
        let recipients = Recipients::parse([public.as_str()]).unwrap();
        let mut sealed = recipients.seal(&[7u8; 5000]);
        assert_eq!(open(&a, &sealed, 4999), Err(OpenError::TooLarge(4999)));
        let opened = open(&a, &sealed, 5000).unwrap();
        assert_eq!(opened.len(), 5000);
        assert_eq!(
            opened.capacity(),
            5001,
            "one allocation, of the size asked for: never grown"
        );
        let opened = open(&a, &sealed, 1 << 20).unwrap();
        assert_eq!(
            opened.capacity(),
            sealed.len(),
            "bounded by the sealed size"
        );
        let last = sealed.len() - 10;
        sealed[last] ^= 1;
        assert!(matches!(
            open(&a, &sealed, 1 << 20),
            Err(OpenError::Damaged(_))
        ));
        assert!(matches!(
            open(&a, b"PK\x03\x04", 1 << 20),
            Err(OpenError::NotSealed(_))
        ));
        assert!(!is_sealed(b"PK\x03\x04"));
    }

    /// A reader that hands out a few bytes per call, as a pipe or age's chunks do.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(7);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn read_fixed_never_grows_its_buffer() {
        let data: Vec<u8> = (0..100u8).collect();
        let read = read_fixed(Trickle(&data), 101).unwrap();
        assert_eq!(*read, data);
        assert_eq!(read.capacity(), 101, "the one allocation, kept");
        let full = read_fixed(Trickle(&data), 100).unwrap();
        assert_eq!(full.len(), 100, "full: the caller refuses it as too long");
        assert_eq!(full.capacity(), 100);
        let short = read_fixed(Trickle(&data), 10).unwrap();
        assert_eq!((short.len(), short.capacity()), (10, 10));
        assert!(read_fixed(Trickle(&[]), 0).unwrap().is_empty());
    }

    #[test]
    fn recipients_are_checked_and_canonical() {
        let (_, one) = key();
        let (_, two) = key();
        let both = Recipients::parse([format!("{two},{one}").as_str(), &one]).unwrap();
        let mut expected = vec![one.clone(), two.clone()];
        expected.sort();
        assert_eq!(both.to_strings(), expected);
        let err = Recipients::parse([one.as_str(), "age1nope"]).unwrap_err();
        assert!(matches!(&err, RecipientError::Bad { value, .. } if value == "age1nope"));
        assert!(
            err.to_string()
                .starts_with("is not an age X25519 recipient"),
            "{err}"
        );
        let err = Recipients::parse([one.as_str(), " , "]).unwrap_err();
        assert_eq!(
            err,
            RecipientError::Empty,
            "an empty value never means unencrypted"
        );
        let secret = new_station_key(OffsetDateTime::UNIX_EPOCH);
        let line = secret.identity_file.lines().last().unwrap().to_string();
        let err = Recipients::parse([line.as_str()]).unwrap_err();
        assert_eq!(err, RecipientError::Secret);
        assert!(
            !err.to_string().contains(&line[15..]),
            "never echoes a secret"
        );
        let file = format!("# line one\n\n{one}\n  {two}  \n# done\n");
        assert_eq!(
            Recipients::parse_file(&file).unwrap().to_strings(),
            expected
        );
        let err = Recipients::parse_file(&format!("{one}\nssh-ed25519 AAAA x\n")).unwrap_err();
        assert!(
            err.starts_with("line 2: \"ssh-ed25519 AAAA x\" is not an age X25519 recipient"),
            "{err}"
        );
        assert!(Recipients::parse_file("# nobody\n").unwrap().is_empty());
    }

    #[test]
    fn identity_files_parse_as_age_keygen_writes_them_and_errors_hide_the_line() {
        let key = new_station_key(OffsetDateTime::UNIX_EPOCH);
        let lines: Vec<&str> = key.identity_file.lines().collect();
        assert_eq!(lines[0], "# created: 1970-01-01T00:00:00Z");
        assert_eq!(lines[1], format!("# public key: {}", key.recipient));
        assert!(lines[2].starts_with("AGE-SECRET-KEY-1"), "{}", lines[2]);
        let identities = parse_identities(&key.identity_file).unwrap();
        assert_eq!(identities.recipients(), [key.recipient.as_str()]);
        // CRLF line ends and a second identity are fine.
        let other = new_station_key(OffsetDateTime::UNIX_EPOCH);
        let two = format!(
            "{}\r\n{}",
            key.identity_file.replace('\n', "\r\n"),
            *other.identity_file
        );
        assert_eq!(parse_identities(&two).unwrap().recipients().len(), 2);
        // A damaged secret is refused by line number only.
        let damaged = key
            .identity_file
            .replace("AGE-SECRET-KEY-1", "AGE-SECRET-KEY-2");
        let err = parse_identities(&damaged).unwrap_err();
        assert!(
            err.starts_with("line 3 is not an age X25519 identity"),
            "{err}"
        );
        assert!(!err.contains(&lines[2][20..]), "{err}");
        let err = parse_identities(&format!("{}\n", key.recipient)).unwrap_err();
        assert!(err.contains("is a recipient"), "{err}");
        assert!(parse_identities("# only comments\n")
            .unwrap_err()
            .contains("holds no age identity"));
    }
}
