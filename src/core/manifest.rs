//! The batch manifest flashing stations consume: one CSV row per device with stable columns,
//! certificate and bundle fingerprints, and a status. Never holds key material.

use serde::{Deserialize, Serialize};

/// The manifest's column order; stations may rely on it. Columns are only ever added at
/// the end: the first ten are those of the first manifests, which still read.
pub const COLUMNS: [&str; 12] = [
    "serial",
    "thing_name",
    "certificate_id",
    "certificate_arn",
    "certificate_sha256",
    "not_after",
    "bundle",
    "bundle_sha256",
    "status",
    "created_at",
    "station",
    "station_at",
];

/// Columns of manifests written before the factory floor's two.
const FIRST_COLUMNS: usize = 10;

/// Where a device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceStatus {
    /// Certificate active with the claim policy, bundle written: flash it.
    Ready,
    /// Ready, and handed to a station by `claimfab take` (not yet recorded as flashed).
    HandedOut,
    /// Ready, and flashed onto its board (`claimfab flashed`).
    Flashed,
    /// Ready, but its board failed (`claimfab flashed --spoiled`): its claim is to be retired.
    Spoiled,
    /// This run could not finish the device; the summary says why. Re-run to retry.
    Failed,
    /// Not reached yet (the run was interrupted). Re-run to finish.
    Pending,
    /// Taken out of service by `claimfab revoke --status INACTIVE`.
    Inactive,
    /// Taken out of service by `claimfab revoke` (REVOKED: cannot be reactivated).
    Revoked,
    /// Revoked and deleted from AWS by `claimfab revoke --delete`.
    Deleted,
}

impl DeviceStatus {
    /// Whether the device's claim is meant to be ACTIVE with the claim policy attached:
    /// ready, or on the factory floor.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            DeviceStatus::Ready
                | DeviceStatus::HandedOut
                | DeviceStatus::Flashed
                | DeviceStatus::Spoiled
        )
    }
}

/// One manifest row. Certificate and bundle fields are empty unless the device is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRow {
    pub serial: String,
    pub thing_name: String,
    pub certificate_id: String,
    pub certificate_arn: String,
    pub certificate_sha256: String,
    /// RFC 3339 UTC.
    pub not_after: String,
    /// Path of the zip (`bundles/NAME.zip`, or encrypted to its stations
    /// `bundles/NAME.zip.age`), relative to the batch directory; `bundle_sha256` is over the
    /// file's bytes as stored.
    pub bundle: String,
    pub bundle_sha256: String,
    pub status: DeviceStatus,
    /// When the certificate was created, RFC 3339 UTC.
    pub created_at: String,
    /// The station that last handled the bundle (took, flashed or spoiled it), if any.
    #[serde(default)]
    pub station: String,
    /// When, RFC 3339 UTC.
    #[serde(default)]
    pub station_at: String,
}

impl ManifestRow {
    /// A device's row with only its names and status; the rest is filled in as known.
    pub fn new(serial: &str, thing_name: &str, status: DeviceStatus) -> Self {
        Self {
            serial: serial.to_string(),
            thing_name: thing_name.to_string(),
            certificate_id: String::new(),
            certificate_arn: String::new(),
            certificate_sha256: String::new(),
            not_after: String::new(),
            bundle: String::new(),
            bundle_sha256: String::new(),
            status,
            created_at: String::new(),
            station: String::new(),
            station_at: String::new(),
        }
    }
}

/// Writes manifest rows as CSV, with the header row, to any writer, one row at a time, so a
/// manifest of any size is never held in memory whole.
pub struct ManifestWriter<W: std::io::Write> {
    csv: csv::Writer<W>,
}

impl<W: std::io::Write> ManifestWriter<W> {
    pub fn new(writer: W) -> std::io::Result<Self> {
        let mut csv = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(writer);
        csv.write_record(COLUMNS)?;
        Ok(Self { csv })
    }

    pub fn write(&mut self, row: &ManifestRow) -> std::io::Result<()> {
        self.csv.serialize(row).map_err(std::io::Error::other)
    }

    /// Flushes and hands back the writer.
    pub fn finish(self) -> std::io::Result<W> {
        self.csv.into_inner().map_err(|e| e.into_error())
    }
}

/// Serializes rows to CSV bytes with a header row.
pub fn to_csv(rows: &[ManifestRow]) -> Vec<u8> {
    let mut writer =
        ManifestWriter::new(Vec::with_capacity(rows.len() * 400 + 200)).expect("in-memory CSV");
    for row in rows {
        writer.write(row).expect("in-memory CSV");
    }
    writer.finish().expect("in-memory CSV")
}

/// Parses manifest bytes back into rows (for resume and for auditors' tools).
pub fn from_csv(bytes: &[u8]) -> Result<Vec<ManifestRow>, String> {
    let mut reader = csv::Reader::from_reader(bytes);
    let headers = reader.headers().map_err(|e| e.to_string())?;
    let first = COLUMNS[..FIRST_COLUMNS].iter();
    if headers.iter().ne(COLUMNS) && headers.iter().ne(first.copied()) {
        return Err(format!(
            "manifest columns are {headers:?}, expected {COLUMNS:?}"
        ));
    }
    let headers = headers.clone();
    reader
        .records()
        .map(|record| {
            let record = record.map_err(|e| e.to_string())?;
            let line = record.position().map_or(0, |p| p.line());
            let row: ManifestRow = record
                .deserialize(Some(&headers))
                .map_err(|e| format!("line {line}: {e}"))?;
            check_row(&row).map_err(|problem| format!("line {line}: {problem}"))?;
            Ok(row)
        })
        .collect()
}

/// A manifest is data a person may have edited: fields that claimfab uses as ids and paths
/// must have the shapes claimfab writes.
fn check_row(row: &ManifestRow) -> Result<(), String> {
    let hex64 = |v: &str| {
        v.len() == 64
            && v.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    for (column, value) in [
        ("certificate_id", &row.certificate_id),
        ("certificate_sha256", &row.certificate_sha256),
        ("bundle_sha256", &row.bundle_sha256),
    ] {
        if !value.is_empty() && !hex64(value) {
            return Err(format!(
                "{column} {value:?} is not 64 lowercase hex digits; restore the manifest claimfab wrote"
            ));
        }
    }
    if !row.station.is_empty()
        && crate::core::floor_records::check_station_id(&row.station).is_err()
    {
        return Err(format!(
            "station {:?} is not a station id; restore the manifest claimfab wrote",
            row.station
        ));
    }
    let bundle_ok = row.bundle.is_empty()
        || row.bundle.strip_prefix("bundles/").is_some_and(|name| {
            (name.ends_with(".zip") || name.ends_with(".zip.age"))
                && !name.contains('/')
                && !name.contains('\\')
                && !name.starts_with('.')
        });
    if !bundle_ok {
        return Err(format!(
            "bundle {:?} is not a bundle inside the batch directory (bundles/NAME.zip or, encrypted, bundles/NAME.zip.age); restore the manifest claimfab wrote",
            row.bundle
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_edited_fields_are_refused_with_their_line() {
        let good = to_csv(&[row(DeviceStatus::Ready)]);
        from_csv(&good).unwrap();
        let text = String::from_utf8(good).unwrap();
        for (from, to, needle) in [
            ("bundles/SN1.zip", "../../../etc/passwd", "bundle"),
            ("bundles/SN1.zip", "bundles/../x.zip", "bundle"),
            ("bundles/SN1.zip", "bundles/SN1.age", "bundle"),
            ("bundles/SN1.zip", "bundles/../x.zip.age", "bundle"),
            (&"ab".repeat(32)[..], "ééééééééééééééééé", "certificate_id"),
        ] {
            let edited = text.replacen(from, to, 1);
            let err = from_csv(edited.as_bytes()).unwrap_err();
            assert!(err.starts_with("line 2: ") && err.contains(needle), "{err}");
        }
    }

    fn row(status: DeviceStatus) -> ManifestRow {
        ManifestRow {
            serial: "SN1".into(),
            thing_name: "gg-SN1".into(),
            certificate_id: "ab".repeat(32),
            certificate_arn: format!(
                "arn:aws:iot:us-east-1:123456789012:cert/{}",
                "ab".repeat(32)
            ),
            certificate_sha256: "ab".repeat(32),
            not_after: "2049-12-31T23:59:59Z".into(),
            bundle: "bundles/SN1.zip".into(),
            bundle_sha256: "cd".repeat(32),
            status,
            created_at: "2026-11-23T20:00:00Z".into(),
            station: String::new(),
            station_at: String::new(),
        }
    }

    #[test]
    fn encrypted_bundles_are_named_zip_age() {
        let mut sealed = row(DeviceStatus::Ready);
        sealed.bundle = "bundles/SN1.zip.age".into();
        assert_eq!(from_csv(&to_csv(&[sealed.clone()])).unwrap(), [sealed]);
    }

    #[test]
    fn header_and_columns_are_stable() {
        let csv = String::from_utf8(to_csv(&[row(DeviceStatus::Ready)])).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next().unwrap(), COLUMNS.join(","));
        let fields: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(fields[0], "SN1");
        assert_eq!(fields[8], "ready");
        assert_eq!(fields.len(), COLUMNS.len());
    }

    #[test]
    fn empty_manifest_still_has_a_header() {
        assert_eq!(
            String::from_utf8(to_csv(&[])).unwrap().trim(),
            COLUMNS.join(",")
        );
    }

    #[test]
    fn a_manifest_of_the_first_ten_columns_still_reads() {
        let text = String::from_utf8(to_csv(&[row(DeviceStatus::Ready)])).unwrap();
        let first: Vec<String> = text
            .lines()
            .map(|line| {
                line.split(',')
                    .take(FIRST_COLUMNS)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let rows = from_csv(format!("{}\n", first.join("\n")).as_bytes()).unwrap();
        assert_eq!(rows, vec![row(DeviceStatus::Ready)]);
    }

    #[test]
    fn floor_statuses_are_spelled_with_hyphens() {
        let mut handed_out = row(DeviceStatus::HandedOut);
        handed_out.station = "line1-st2".into();
        handed_out.station_at = "2026-11-26T08:00:00Z".into();
        let text = String::from_utf8(to_csv(std::slice::from_ref(&handed_out))).unwrap();
        assert!(text.contains(",handed-out,"), "{text}");
        assert!(
            text.trim_end().ends_with(",line1-st2,2026-11-26T08:00:00Z"),
            "{text}"
        );
        assert_eq!(from_csv(text.as_bytes()).unwrap(), vec![handed_out]);
    }

    #[test]
    fn round_trips() {
        let rows = vec![
            row(DeviceStatus::Ready),
            row(DeviceStatus::Failed),
            row(DeviceStatus::Pending),
        ];
        assert_eq!(from_csv(&to_csv(&rows)).unwrap(), rows);
    }
}
