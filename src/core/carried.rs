//! The files carried between the air-gapped machine and the online one: `csrs.jsonl`
//! (`prepare` -> `register`: each device's CSR) and `certificates.jsonl` (`register` ->
//! `package`: each device's certificate). Both are JSON Lines: a header naming the file's
//! kind, format version and batch, one line per device in batch order, and an end line with
//! the number of device lines and the SHA-256 of every byte before it, so a truncated,
//! spliced or damaged file is refused before anything is done with it. Neither ever holds key
//! material. Pure: the writer and the reader take any `Write` / `BufRead`; lines are bounded
//! so a hostile file cannot make the reader hold more than one line.

use std::io::{self, BufRead, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The CSR file `prepare` writes and `register` reads.
pub const CSRS_FILE: &str = "csrs.jsonl";
/// The certificate file `register` writes and `package` reads.
pub const CERTIFICATES_FILE: &str = "certificates.jsonl";
/// The format version of both files; a reader refuses any other.
pub const FORMAT_VERSION: u32 = 1;

/// A header line holds the batch's spec: bounded well above any real one.
const MAX_HEADER_BYTES: u64 = 1 << 20;
/// A device line holds a CSR or a certificate, a few KiB.
const MAX_LINE_BYTES: u64 = 64 << 10;

/// Which carried file a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Csrs,
    Certificates,
}

impl Kind {
    /// The tag in the header's `claimfab` field and the end line's `end` field.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Csrs => "csrs",
            Kind::Certificates => "certificates",
        }
    }

    /// What writes it, for errors that say which file to carry instead.
    pub fn made_by(self) -> &'static str {
        match self {
            Kind::Csrs => "`claimfab prepare`",
            Kind::Certificates => "`claimfab register`",
        }
    }
}

/// The header of `csrs.jsonl`: the batch as `prepare` made it (`batch` is its spec).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsrsHeader<B> {
    pub claimfab: String,
    pub version: u32,
    /// Random, made by `prepare`: ties the three stages' files to one batch.
    pub batch_id: String,
    pub batch: B,
}

/// One device's line in `csrs.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsrLine {
    pub serial: String,
    pub thing_name: String,
    /// PKCS#10, PEM.
    pub csr: String,
}

/// The header of `certificates.jsonl`: which batch and which CSR file it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatesHeader {
    pub claimfab: String,
    pub version: u32,
    pub batch_id: String,
    /// The `sha256` of the CSR file's end line: the exact file `register` worked from.
    pub csrs_sha256: String,
}

/// One registered device's line in `certificates.jsonl` (devices without a certificate are
/// left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateLine {
    pub serial: String,
    pub thing_name: String,
    pub certificate_id: String,
    pub certificate_arn: String,
    /// X.509, PEM, as AWS IoT issued it.
    pub certificate_pem: String,
    /// Whether the claim policy is attached (a device without it cannot provision yet).
    pub policy_attached: bool,
}

/// The last line of a carried file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndLine {
    end: String,
    lines: u64,
    sha256: String,
}

/// Why a carried file was refused: the 1-based line, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct CarriedError {
    pub line: u64,
    pub problem: String,
}

/// Writes a carried file: the header, device lines, then the end line over what came before.
pub struct CarriedWriter<W: Write> {
    out: W,
    kind: Kind,
    hash: Sha256,
    lines: u64,
}

impl<W: Write> CarriedWriter<W> {
    /// Starts the file with its header.
    pub fn new(out: W, kind: Kind, header: &impl Serialize) -> io::Result<Self> {
        let mut writer = Self {
            out,
            kind,
            hash: Sha256::new(),
            lines: 0,
        };
        writer.put(header)?;
        Ok(writer)
    }

    /// One device's line.
    pub fn line(&mut self, line: &impl Serialize) -> io::Result<()> {
        self.lines += 1;
        self.put(line)
    }

    fn put(&mut self, value: &impl Serialize) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.hash.update(&bytes);
        self.out.write_all(&bytes)
    }

    /// Writes the end line; returns the output and the file's `sha256` (of all before it).
    pub fn finish(mut self) -> io::Result<(W, String)> {
        let sha256 = hex::encode(self.hash.finalize_reset());
        let end = EndLine {
            end: self.kind.tag().to_string(),
            lines: self.lines,
            sha256: sha256.clone(),
        };
        let mut bytes = serde_json::to_vec(&end).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.out.write_all(&bytes)?;
        Ok((self.out, sha256))
    }
}

/// Reads a carried file line by line, checking its kind, version, and at the end its line
/// count and checksum. Device lines are handed out before the end is reached: a caller that
/// must refuse a bad file before acting reads it whole once first ([`Self::check_to_end`]).
pub struct CarriedReader<R: BufRead> {
    input: R,
    kind: Kind,
    hash: Sha256,
    /// The 1-based number of the last line read.
    line: u64,
    /// Bytes read so far, and where the last line read began.
    offset: u64,
    line_start: u64,
    device_lines: u64,
    /// Set once the end line was read and checked: the file's `sha256`.
    sha256: Option<String>,
}

impl<R: BufRead> CarriedReader<R> {
    /// Reads the header; `H` is the kind's header type.
    pub fn open<H: DeserializeOwned>(input: R, kind: Kind) -> Result<(Self, H), CarriedError> {
        let mut reader = Self {
            input,
            kind,
            hash: Sha256::new(),
            line: 0,
            offset: 0,
            line_start: 0,
            device_lines: 0,
            sha256: None,
        };
        let bytes = reader.next_bytes(MAX_HEADER_BYTES)?.ok_or_else(|| {
            reader.error(format!("is empty: carry the file {} wrote", kind.made_by()))
        })?;
        let header = reader.check_header(&bytes)?;
        reader.hash.update(&bytes);
        Ok((reader, header))
    }

    fn check_header<H: DeserializeOwned>(&self, bytes: &[u8]) -> Result<H, CarriedError> {
        #[derive(Deserialize)]
        struct Tag {
            claimfab: Option<String>,
            version: Option<u32>,
        }
        let tag: Tag = serde_json::from_slice(bytes).map_err(|e| {
            self.error(format!(
                "is not a claimfab {} file ({e}); carry the file {} wrote",
                self.kind.tag(),
                self.kind.made_by()
            ))
        })?;
        if tag.claimfab.as_deref() != Some(self.kind.tag()) {
            return Err(self.error(format!(
                "is a {:?} file, not a claimfab {} file; carry the file {} wrote",
                tag.claimfab.unwrap_or_default(),
                self.kind.tag(),
                self.kind.made_by()
            )));
        }
        if tag.version != Some(FORMAT_VERSION) {
            return Err(self.error(format!(
                "is format version {:?}; this claimfab reads version {FORMAT_VERSION}: use the same claimfab release on both machines",
                tag.version
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| self.error(format!("header is not valid: {e}")))
    }

    /// The next device line, or `None` after the end line (checked).
    pub fn next_line<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CarriedError> {
        if self.sha256.is_some() {
            return Ok(None);
        }
        let Some(bytes) = self.next_bytes(MAX_LINE_BYTES)? else {
            return Err(self.error(format!(
                "the file ends without its end line: it was cut short; carry the whole file {} wrote",
                self.kind.made_by()
            )));
        };
        if bytes.starts_with(b"{\"end\"") {
            self.check_end(&bytes)?;
            return Ok(None);
        }
        let line = serde_json::from_slice(&bytes)
            .map_err(|e| self.error(format!("is not a valid device line ({e})")))?;
        self.hash.update(&bytes);
        self.device_lines += 1;
        Ok(Some(line))
    }

    fn check_end(&mut self, bytes: &[u8]) -> Result<(), CarriedError> {
        let end: EndLine = serde_json::from_slice(bytes)
            .map_err(|e| self.error(format!("is not a valid end line ({e})")))?;
        let sha256 = hex::encode(self.hash.finalize_reset());
        if end.end != self.kind.tag() || end.lines != self.device_lines || end.sha256 != sha256 {
            return Err(self.error(format!(
                "the end line does not match the file (it counts {} device lines, the file has {}; or its checksum differs): the file was edited or damaged; carry the file {} wrote",
                end.lines, self.device_lines, self.kind.made_by()
            )));
        }
        let more = self.input.fill_buf().map(|rest| !rest.is_empty());
        if more.map_err(|e| self.error(format!("cannot be read: {e}")))? {
            return Err(self.error("there is more after the end line: the file was edited; carry the file as it was written".into()));
        }
        self.sha256 = Some(sha256);
        Ok(())
    }

    /// Reads every remaining device line (each checked as `T`) and the end line: the whole
    /// file is sound. Returns how many device lines it has.
    pub fn check_to_end<T: DeserializeOwned>(
        mut self,
        mut check: impl FnMut(u64, T) -> Result<(), String>,
    ) -> Result<(u64, String), CarriedError> {
        while let Some(line) = self.next_line::<T>()? {
            check(self.line, line).map_err(|problem| self.error(problem))?;
        }
        let sha256 = self.sha256.clone().expect("set when next returns None");
        Ok((self.device_lines, sha256))
    }

    /// The 1-based number of the last line read, for callers' own errors.
    pub fn line_number(&self) -> u64 {
        self.line
    }

    /// The byte offset in the file where the last line read began.
    pub fn line_start(&self) -> u64 {
        self.line_start
    }

    /// The file's checksum, once its end line was read.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }

    /// An error at the last line read.
    pub fn error(&self, problem: String) -> CarriedError {
        CarriedError {
            line: self.line.max(1),
            problem,
        }
    }

    /// The next line with its newline, at most `limit` bytes; `None` at the end of input.
    fn next_bytes(&mut self, limit: u64) -> Result<Option<Vec<u8>>, CarriedError> {
        let mut bytes = Vec::new();
        let read = Read::take(&mut self.input, limit + 1)
            .read_until(b'\n', &mut bytes)
            .map_err(|e| self.error(format!("cannot be read: {e}")))?;
        if read == 0 {
            return Ok(None);
        }
        self.line += 1;
        self.line_start = self.offset;
        self.offset += read as u64;
        if bytes.last() != Some(&b'\n') {
            return Err(self.error(match read as u64 > limit {
                true => format!("is over {limit} bytes: not a line claimfab wrote"),
                false => format!(
                    "the file ends in the middle of a line: it was cut short; carry the whole file {} wrote",
                    self.kind.made_by()
                ),
            }));
        }
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> CertificatesHeader {
        CertificatesHeader {
            claimfab: "certificates".into(),
            version: FORMAT_VERSION,
            batch_id: "b1".into(),
            csrs_sha256: "00".into(),
        }
    }

    fn line(serial: &str) -> CertificateLine {
        CertificateLine {
            serial: serial.into(),
            thing_name: serial.into(),
            certificate_id: format!("id-{serial}"),
            certificate_arn: format!("arn:aws:iot:us-east-1:123456789012:cert/id-{serial}"),
            certificate_pem: "-----BEGIN CERTIFICATE-----\n...\n".into(),
            policy_attached: true,
        }
    }

    fn file(serials: &[&str]) -> (Vec<u8>, String) {
        let mut writer = CarriedWriter::new(Vec::new(), Kind::Certificates, &header()).unwrap();
        for serial in serials {
            writer.line(&line(serial)).unwrap();
        }
        writer.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<CertificateLine>, CarriedError> {
        let (mut reader, parsed): (_, CertificatesHeader) =
            CarriedReader::open(bytes, Kind::Certificates)?;
        assert_eq!(parsed, header());
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line()? {
            lines.push(line);
        }
        Ok(lines)
    }

    #[test]
    fn a_written_file_reads_back_line_by_line_with_its_checksum() {
        let (bytes, sha256) = file(&["A", "B", "C"]);
        assert_eq!(
            read_all(&bytes).unwrap(),
            vec![line("A"), line("B"), line("C")]
        );
        let (reader, _): (_, CertificatesHeader) =
            CarriedReader::open(bytes.as_slice(), Kind::Certificates).unwrap();
        let (count, read_sha) = reader
            .check_to_end::<CertificateLine>(|_, _| Ok(()))
            .unwrap();
        assert_eq!((count, read_sha), (3, sha256));
    }

    #[test]
    fn a_file_cut_anywhere_is_refused() {
        let (bytes, _) = file(&["A", "B"]);
        for cut in 0..bytes.len() {
            assert!(
                read_all(&bytes[..cut]).is_err(),
                "cut at {cut} was accepted"
            );
        }
    }

    #[test]
    fn an_edited_line_a_dropped_line_or_a_tail_is_refused() {
        let (bytes, _) = file(&["A", "B"]);
        let text = String::from_utf8(bytes).unwrap();
        let edited = text.replace("id-A", "id-X");
        let e = read_all(edited.as_bytes()).unwrap_err();
        assert!(e.problem.contains("edited or damaged"), "{e}");
        let lines: Vec<&str> = text.lines().collect();
        let dropped = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3]);
        assert!(read_all(dropped.as_bytes()).is_err());
        let tail = format!("{text}{}\n", lines[1]);
        let e = read_all(tail.as_bytes()).unwrap_err();
        assert!(e.problem.contains("more after the end line"), "{e}");
    }

    #[test]
    fn another_kind_or_version_is_refused_with_what_to_carry() {
        let (bytes, _) = file(&["A"]);
        let opened = CarriedReader::open::<CertificatesHeader>(bytes.as_slice(), Kind::Csrs);
        let Err(e) = opened else {
            panic!("a certificates file opened as a CSR file")
        };
        assert_eq!(e.line, 1);
        assert!(e.problem.contains("`claimfab prepare`"), "{e}");
        let text = String::from_utf8(bytes)
            .unwrap()
            .replace("\"version\":1", "\"version\":2");
        let e = read_all(text.as_bytes()).unwrap_err();
        assert!(e.problem.contains("same claimfab release"), "{e}");
        let e = read_all(b"").unwrap_err();
        assert!(e.problem.contains("is empty"), "{e}");
        let e = read_all(b"\x00\xff garbage\n").unwrap_err();
        assert!(
            e.problem.contains("not a claimfab certificates file"),
            "{e}"
        );
    }

    #[test]
    fn an_overlong_line_is_refused_without_reading_it_whole() {
        let (bytes, _) = file(&[]);
        let text = String::from_utf8(bytes).unwrap();
        let header = text.lines().next().unwrap();
        let long = format!("{header}\n{}\n", "x".repeat(MAX_LINE_BYTES as usize + 10));
        let e = read_all(long.as_bytes()).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.problem.contains("over"), "{e}");
    }
}
