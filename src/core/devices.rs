//! The devices of a batch: serials from a CSV file or a counted range, mapped to thing names
//! through the station's pattern, with every name checked against AWS's rules and every
//! serial checked for duplicates before anything is created.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::core::names;

/// One device of the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub serial: String,
    pub thing_name: String,
}

/// Which devices share a claim certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClaimScope {
    /// One claim certificate and key per device (the default): one device can be revoked
    /// without touching the others, and a leaked key exposes one device.
    #[default]
    Device,
    /// One claim certificate and key for the whole batch, in every bundle (the pattern of
    /// AWS's samples): one AWS registration per batch, but revoking it retires every device.
    Batch,
}

/// A thing-name pattern such as `gg-{serial}`: literal text around one `{serial}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingNamePattern {
    prefix: String,
    suffix: String,
}

impl ThingNamePattern {
    /// Parses a pattern; it must hold `{serial}` exactly once and otherwise only characters
    /// allowed in thing names.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let Some((prefix, suffix)) = pattern.split_once("{serial}") else {
            return Err("must contain {serial}, e.g. \"gg-{serial}\"".into());
        };
        if suffix.contains("{serial}") {
            return Err("must contain {serial} only once".into());
        }
        for part in [prefix, suffix] {
            if !part.is_empty() {
                names::check_thing_name(part)
                    .map_err(|rule| format!("text around {{serial}} {rule}"))?;
            }
        }
        Ok(Self {
            prefix: prefix.into(),
            suffix: suffix.into(),
        })
    }

    /// The thing name for `serial`, checked against AWS's thing-name rules.
    pub fn thing_name(&self, serial: &str) -> Result<String, String> {
        let name = format!("{}{serial}{}", self.prefix, self.suffix);
        names::check_thing_name(&name).map_err(|rule| format!("thing name {name:?} {rule}"))?;
        Ok(name)
    }
}

/// Where a serial came from, for error messages: a 1-based line (file) or index (range).
pub type SourceLine = u64;

/// A problem with one serial: the line it is on and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceProblem {
    pub line: SourceLine,
    pub problem: String,
}

/// Parses a serials CSV (header `serial`, one serial per row, other columns ignored) and maps
/// each serial to its device.
pub fn parse_serials_csv(
    bytes: &[u8],
    pattern: &ThingNamePattern,
) -> Result<Vec<Device>, DeviceProblem> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(bytes);
    let headers = reader.headers().map_err(|e| csv_problem(&e, 1))?.clone();
    let Some(column) = headers.iter().position(|h| h == "serial") else {
        return Err(DeviceProblem {
            line: 1,
            problem: format!(
                "the header row must name a `serial` column (found {:?})",
                headers.iter().collect::<Vec<_>>()
            ),
        });
    };
    let mut serials = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_problem(&e, 0))?;
        let line = record.position().map_or(0, |p| p.line());
        let serial = record.get(column).unwrap_or_default();
        serials.push((line, serial.to_string()));
    }
    if serials.is_empty() {
        return Err(DeviceProblem {
            line: 1,
            problem: "no serials below the header; add one serial per row".into(),
        });
    }
    devices_from_serials(serials, pattern)
}

fn csv_problem(error: &csv::Error, fallback_line: SourceLine) -> DeviceProblem {
    let line = error.position().map_or(fallback_line, |p| p.line());
    let problem = match error.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => format!(
            "row has {len} fields but the header has {expected_len}; quote values that contain commas"
        ),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8; save the file as UTF-8 CSV".into(),
        _ => format!("unreadable CSV: {error}"),
    };
    DeviceProblem { line, problem }
}

/// Builds `count` serials counting up from `first`, keeping the width of its trailing number
/// (`SN0099` -> `SN0099`, `SN0100`, ...).
pub fn counted_serials(first: &str, count: u64) -> Result<Vec<String>, String> {
    let digits = first.len() - first.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return Err("must end in digits so serials can count up, e.g. SN000001".into());
    }
    if digits > 18 {
        return Err("has more than 18 trailing digits".into());
    }
    let (prefix, number) = first.split_at(first.len() - digits);
    let start: u64 = number.parse().expect("all digits");
    let last = start
        .checked_add(count.saturating_sub(1))
        .filter(|last| last.to_string().len() <= digits)
        .ok_or_else(|| {
            format!(
                "leaves room for only {} serials of this width; add a digit",
                10u64.pow(digits as u32) - start
            )
        })?;
    Ok((start..=last)
        .map(|n| format!("{prefix}{n:0digits$}"))
        .collect())
}

/// Maps serials to devices, rejecting empty or unusable serials and duplicates (naming both
/// lines).
pub fn devices_from_serials(
    serials: Vec<(SourceLine, String)>,
    pattern: &ThingNamePattern,
) -> Result<Vec<Device>, DeviceProblem> {
    let mut seen: HashMap<String, SourceLine> = HashMap::with_capacity(serials.len());
    let mut devices = Vec::with_capacity(serials.len());
    for (line, serial) in serials {
        if serial.is_empty() {
            return Err(DeviceProblem {
                line,
                problem: "empty serial; remove the row or fill it in".into(),
            });
        }
        names::check_thing_name(&serial).map_err(|rule| DeviceProblem {
            line,
            problem: format!("serial {serial:?} {rule}"),
        })?;
        let thing_name = pattern
            .thing_name(&serial)
            .map_err(|problem| DeviceProblem { line, problem })?;
        if let Some(first) = seen.insert(serial.clone(), line) {
            return Err(DeviceProblem {
                line,
                problem: format!(
                    "serial {serial:?} is a duplicate of line {first}; each device needs its own serial"
                ),
            });
        }
        devices.push(Device { serial, thing_name });
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> ThingNamePattern {
        ThingNamePattern::parse(p).unwrap()
    }

    #[test]
    fn an_excel_export_with_bom_and_crlf_works() {
        let bytes = b"\xEF\xBB\xBFserial,board\r\nSN1,rev A\r\nSN2,rev B\r\n";
        let devices = parse_serials_csv(bytes, &pattern("gg-{serial}")).unwrap();
        let names: Vec<_> = devices.iter().map(|d| d.thing_name.as_str()).collect();
        assert_eq!(names, ["gg-SN1", "gg-SN2"]);
    }

    #[test]
    fn pattern_needs_one_serial_placeholder() {
        assert!(ThingNamePattern::parse("gg-{serial}").is_ok());
        assert!(ThingNamePattern::parse("gg").is_err());
        assert!(ThingNamePattern::parse("{serial}{serial}").is_err());
        assert!(ThingNamePattern::parse("gg {serial}").is_err());
        assert_eq!(
            pattern("gg-{serial}-x").thing_name("A1").unwrap(),
            "gg-A1-x"
        );
    }

    #[test]
    fn thing_name_length_is_checked_after_substitution() {
        let long = "a".repeat(125);
        assert!(pattern("gg-{serial}").thing_name(&long).is_ok());
        assert!(pattern("ggg-{serial}").thing_name(&long).is_err());
    }

    #[test]
    fn csv_with_extra_columns_and_whitespace() {
        let csv = b"mac,serial\n00:11, SN1 \n00:12,SN2\n";
        let devices = parse_serials_csv(csv, &pattern("gg-{serial}")).unwrap();
        assert_eq!(
            devices,
            vec![
                Device {
                    serial: "SN1".into(),
                    thing_name: "gg-SN1".into()
                },
                Device {
                    serial: "SN2".into(),
                    thing_name: "gg-SN2".into()
                },
            ]
        );
    }

    #[test]
    fn duplicate_names_both_lines() {
        let err = parse_serials_csv(b"serial\nA\nB\nA\n", &pattern("{serial}")).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.problem.contains("line 2"), "{}", err.problem);
    }

    #[test]
    fn bad_serial_names_its_line() {
        let err = parse_serials_csv(b"serial\nA\nB C\n", &pattern("{serial}")).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.problem.contains("\"B C\""), "{}", err.problem);
    }

    #[test]
    fn missing_header_or_rows() {
        let err = parse_serials_csv(b"sn\nA\n", &pattern("{serial}")).unwrap_err();
        assert_eq!(err.line, 1);
        assert!(err.problem.contains("`serial`"));
        let err = parse_serials_csv(b"serial\n", &pattern("{serial}")).unwrap_err();
        assert!(err.problem.contains("no serials"));
        let err = parse_serials_csv(b"serial\n\"\"\n", &pattern("{serial}")).unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn ragged_row_is_reported() {
        let err = parse_serials_csv(b"serial,mac\nA,1\nB\n", &pattern("{serial}")).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.problem.contains("fields"), "{}", err.problem);
    }

    #[test]
    fn counted_serials_keep_width() {
        assert_eq!(
            counted_serials("SN0098", 3).unwrap(),
            ["SN0098", "SN0099", "SN0100"]
        );
        assert_eq!(counted_serials("7", 3).unwrap(), ["7", "8", "9"]);
        assert!(counted_serials("SN98", 3)
            .unwrap_err()
            .contains("room for only 2"));
        assert!(counted_serials("SN", 1).is_err());
    }
}
