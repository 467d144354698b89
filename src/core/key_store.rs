//! The key store of an air-gapped batch (`keys.age`, written by `prepare`, read by
//! `package`): every device's private key, encrypted at rest with age to one or more X25519
//! recipients or to a passphrase (scrypt), as one stream, so a million keys cost one header
//! and no file each. The plaintext is binary, so no key is ever held in a string or a buffer
//! that is not wiped: a magic line, the batch id, then per device a 16-bit length and the
//! serial, a 16-bit length and the PKCS#8 DER key; an empty serial ends the records, followed
//! by their count and 128 KiB of zeros (see [`WIPE_PADDING`]). age authenticates every chunk
//! and the end of the stream, so a truncated or altered store does not read. Pure: any
//! `Write` / `Read`.

use std::io::{self, Read, Write};

use age::secrecy::SecretString;
use zeroize::Zeroizing;

use crate::core::keys::ClaimKey;
use crate::core::sealed::{Identities, Recipients};

/// The key store's file name in the prepared batch directory.
pub const KEY_STORE_FILE: &str = "keys.age";

const MAGIC: &[u8] = b"claimfab-keys/1\n";

/// age's writer copies plaintext into a 64 KiB chunk buffer that it reuses and frees
/// without wiping. Two chunks of zeros after the last key leave that buffer holding only
/// zeros when it is freed.
const WIPE_PADDING: usize = 2 * 64 * 1024;

/// What the store is encrypted to.
pub enum StoreLock {
    Recipients(Recipients),
    Passphrase(SecretString),
}

/// What opens the store.
pub enum StoreKey {
    Identities(Identities),
    Passphrase(SecretString),
}

/// Why a key store did not open or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("is not encrypted to this identity or passphrase")]
    WrongKey,
    #[error("is not a claimfab key store ({0})")]
    NotAStore(String),
    #[error("does not decrypt: it was damaged, cut short or altered ({0})")]
    Damaged(String),
}

/// Writes the key store, one device at a time.
pub struct StoreWriter<W: Write> {
    out: age::stream::StreamWriter<W>,
    count: u64,
}

impl<W: Write> StoreWriter<W> {
    /// Starts the store for the batch `batch_id`. With a passphrase, age's scrypt takes
    /// about a second here (its work factor is tuned to this machine).
    pub fn new(out: W, lock: &StoreLock, batch_id: &str) -> io::Result<Self> {
        let encryptor = match lock {
            StoreLock::Recipients(recipients) => recipients.encryptor(),
            StoreLock::Passphrase(passphrase) => {
                age::Encryptor::with_user_passphrase(passphrase.clone())
            }
        };
        let mut out = encryptor.wrap_output(out)?;
        out.write_all(MAGIC)?;
        write_field(&mut out, batch_id.as_bytes())?;
        Ok(Self { out, count: 0 })
    }

    /// One device's key. A serial is never empty (that ends the records).
    pub fn add(&mut self, serial: &str, key: &ClaimKey) -> io::Result<()> {
        if serial.is_empty() {
            return Err(io::Error::other(
                "a serial in the key store must not be empty",
            ));
        }
        write_field(&mut self.out, serial.as_bytes())?;
        write_field(&mut self.out, key.pkcs8_der())?;
        self.count += 1;
        Ok(())
    }

    /// Ends the records and the age stream; returns the output (not yet synced).
    pub fn finish(mut self) -> io::Result<W> {
        write_field(&mut self.out, b"")?;
        self.out.write_all(&self.count.to_be_bytes())?;
        self.out.write_all(&[0u8; WIPE_PADDING])?;
        self.out.finish()
    }
}

fn write_field(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let length = u16::try_from(bytes.len()).map_err(|_| io::Error::other("field over 64 KiB"))?;
    out.write_all(&length.to_be_bytes())?;
    out.write_all(bytes)
}

/// Reads the key store back, one device at a time, in the order it was written.
pub struct StoreReader<R: Read> {
    input: age::stream::StreamReader<R>,
    count: u64,
    done: bool,
}

impl<R: Read> StoreReader<R> {
    /// Opens the store; returns it and the batch id it was written for.
    pub fn open(input: R, key: &StoreKey) -> Result<(Self, String), StoreError> {
        let decryptor =
            age::Decryptor::new(input).map_err(|e| StoreError::NotAStore(e.to_string()))?;
        let opened = match key {
            StoreKey::Identities(identities) => decryptor.decrypt(identities.as_age()),
            StoreKey::Passphrase(passphrase) => {
                let identity = age::scrypt::Identity::new(passphrase.clone());
                decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity))
            }
        };
        let input = opened.map_err(|e| match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => {
                StoreError::WrongKey
            }
            other => StoreError::Damaged(other.to_string()),
        })?;
        let mut reader = Self {
            input,
            count: 0,
            done: false,
        };
        let mut magic = [0u8; MAGIC.len()];
        reader.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(StoreError::NotAStore("unknown format".into()));
        }
        let batch_id = reader.field(256)?;
        let batch_id = String::from_utf8(batch_id.to_vec())
            .map_err(|_| StoreError::NotAStore("its batch id is not text".into()))?;
        Ok((reader, batch_id))
    }

    /// The next device's serial and key; `None` after the last, once the whole stream (and
    /// so its authentication) was read.
    pub fn next_key(&mut self) -> Result<Option<(String, ClaimKey)>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let serial = self.field(1024)?;
        if serial.is_empty() {
            self.finish()?;
            return Ok(None);
        }
        let serial = String::from_utf8(serial.to_vec())
            .map_err(|_| StoreError::Damaged("a serial is not text".into()))?;
        let der = self.field(4096)?;
        let key = ClaimKey::from_pkcs8_der(der)
            .ok_or_else(|| StoreError::Damaged(format!("the key of {serial} does not parse")))?;
        self.count += 1;
        Ok(Some((serial, key)))
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        let mut count = [0u8; 8];
        self.read_exact(&mut count)?;
        if u64::from_be_bytes(count) != self.count {
            return Err(StoreError::Damaged("its key count does not match".into()));
        }
        let mut padding = Zeroizing::new(vec![0u8; WIPE_PADDING + 1]);
        let mut read = 0;
        loop {
            match self.input.read(&mut padding[read..]) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StoreError::Damaged(e.to_string())),
            }
            if read == padding.len() {
                return Err(StoreError::Damaged("data after its end".into()));
            }
        }
        if read != WIPE_PADDING || padding.iter().any(|&b| b != 0) {
            return Err(StoreError::Damaged("its end is not as written".into()));
        }
        self.done = true;
        Ok(())
    }

    /// A length-prefixed field of at most `limit` bytes, in a buffer wiped on drop.
    fn field(&mut self, limit: usize) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let mut length = [0u8; 2];
        self.read_exact(&mut length)?;
        let length = u16::from_be_bytes(length) as usize;
        if length > limit {
            return Err(StoreError::Damaged(format!("a field of {length} bytes")));
        }
        let mut bytes = Zeroizing::new(vec![0u8; length]);
        self.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    fn read_exact(&mut self, buffer: &mut [u8]) -> Result<(), StoreError> {
        self.input
            .read_exact(buffer)
            .map_err(|e| StoreError::Damaged(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::keys::public_key_fingerprint;
    use crate::core::sealed::{new_station_key, parse_identities};
    use crate::core::station_config::KeyAlgorithm;

    fn station() -> (Recipients, Identities) {
        let key = new_station_key(time::OffsetDateTime::now_utc());
        let recipients = Recipients::parse([key.recipient.as_str()]).unwrap();
        (recipients, parse_identities(&key.identity_file).unwrap())
    }

    fn store(lock: &StoreLock, keys: &[(&str, &ClaimKey)]) -> Vec<u8> {
        let mut writer = StoreWriter::new(Vec::new(), lock, "batch-1").unwrap();
        for (serial, key) in keys {
            writer.add(serial, key).unwrap();
        }
        writer.finish().unwrap()
    }

    fn read_all(bytes: &[u8], key: &StoreKey) -> Result<Vec<(String, String)>, StoreError> {
        let (mut reader, batch_id) = StoreReader::open(bytes, key)?;
        assert_eq!(batch_id, "batch-1");
        let mut keys = Vec::new();
        while let Some((serial, key)) = reader.next_key()? {
            keys.push((serial, public_key_fingerprint(&key.public_key_der())));
        }
        Ok(keys)
    }

    #[test]
    fn keys_read_back_in_order_with_their_curves() {
        let (recipients, identities) = station();
        let a = ClaimKey::generate(KeyAlgorithm::P256);
        let b = ClaimKey::generate(KeyAlgorithm::P384);
        let bytes = store(&StoreLock::Recipients(recipients), &[("A", &a), ("B", &b)]);
        let read = read_all(&bytes, &StoreKey::Identities(identities)).unwrap();
        let fingerprint = |k: &ClaimKey| public_key_fingerprint(&k.public_key_der());
        assert_eq!(
            read,
            vec![("A".into(), fingerprint(&a)), ("B".into(), fingerprint(&b))]
        );
    }

    #[test]
    fn no_key_is_readable_in_the_file_and_another_identity_cannot_open_it() {
        let (recipients, _) = station();
        let (_, other) = station();
        let key = ClaimKey::generate(KeyAlgorithm::P256);
        let serial = "SERIAL-IN-PLAINTEXT-1";
        let bytes = store(&StoreLock::Recipients(recipients), &[(serial, &key)]);
        let der = key.pkcs8_der();
        assert!(!bytes.windows(16).any(|w| der.windows(16).any(|d| d == w)));
        assert!(!bytes.windows(serial.len()).any(|w| w == serial.as_bytes()));
        let e = read_all(&bytes, &StoreKey::Identities(other)).unwrap_err();
        assert!(matches!(e, StoreError::WrongKey), "{e}");
    }

    #[test]
    fn a_cut_or_altered_store_does_not_read() {
        let (recipients, identities) = station();
        let key = ClaimKey::generate(KeyAlgorithm::P256);
        let bytes = store(&StoreLock::Recipients(recipients), &[("SN1", &key)]);
        let unlock = StoreKey::Identities(identities);
        for cut in [bytes.len() - 1, bytes.len() - 70_000, 200] {
            assert!(read_all(&bytes[..cut], &unlock).is_err(), "cut at {cut}");
        }
        let mut altered = bytes.clone();
        let last = altered.len() - 20;
        altered[last] ^= 1;
        assert!(read_all(&altered, &unlock).is_err());
        let e = read_all(b"not age", &unlock).unwrap_err();
        assert!(matches!(e, StoreError::NotAStore(_)), "{e}");
    }

    #[test]
    fn a_passphrase_store_opens_with_that_passphrase_only() {
        let key = ClaimKey::generate(KeyAlgorithm::P256);
        let lock = StoreLock::Passphrase(SecretString::from("correct horse".to_string()));
        let bytes = store(&lock, &[("SN1", &key)]);
        let right = StoreKey::Passphrase(SecretString::from("correct horse".to_string()));
        assert_eq!(read_all(&bytes, &right).unwrap().len(), 1);
        let wrong = StoreKey::Passphrase(SecretString::from("wrong".to_string()));
        assert!(matches!(
            read_all(&bytes, &wrong).unwrap_err(),
            StoreError::WrongKey
        ));
    }
}
