//! The devices of a batch: serials from a CSV file or a counted range, mapped to thing names
//! through the station's pattern, with every name checked against AWS's rules and every
//! serial checked for duplicates before anything is created.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::core::interned::{Arena, Interner, TooLarge};
use crate::core::names;

/// One device of the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub serial: String,
    pub thing_name: String,
}

/// A batch's devices in batch order, compactly: a million devices listed in a file take
/// tens of megabytes, not hundreds (serials interned, so each is distinct and found by
/// serial; thing names in one string), and a counted range is kept as its rule, whatever
/// its size. A device is handed out as an owned [`Device`] when asked for.
#[derive(Debug, Clone, Default)]
pub struct DeviceList(Devices);

#[derive(Debug, Clone)]
enum Devices {
    Listed {
        serials: Interner,
        thing_names: Arena,
    },
    /// `--count`: every serial and thing name is computed (all were checked when made).
    Counted {
        serials: CountedSerials,
        pattern: ThingNamePattern,
    },
}

impl Default for Devices {
    fn default() -> Self {
        Devices::Listed {
            serials: Interner::default(),
            thing_names: Arena::default(),
        }
    }
}

/// A list made from devices already checked (by the caller): a repeated serial is kept
/// once, as its first; names past the list's 4 GiB limit are left out.
impl From<Vec<Device>> for DeviceList {
    fn from(devices: Vec<Device>) -> Self {
        let mut list = Self::default();
        for device in &devices {
            let _ = list.push(&device.serial, &device.thing_name);
        }
        list
    }
}

/// Why a device could not join a [`DeviceList`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("serial {serial:?} is already device {first} of the list")]
    Duplicate { serial: String, first: usize },
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}

impl DeviceList {
    /// `count` devices counting up from `first`, each serial and thing name checked as a
    /// listed one would be; kept as the rule, not the names.
    pub fn counted(
        first: &str,
        count: u64,
        pattern: &ThingNamePattern,
    ) -> Result<Self, DeviceProblem> {
        let serials = CountedSerials::new(first, count)
            .map_err(|problem| DeviceProblem { line: 1, problem })?;
        for (index, serial) in serials.iter().enumerate() {
            check_serial(index as SourceLine + 1, &serial, pattern)?;
        }
        Ok(Self(Devices::Counted {
            serials,
            pattern: pattern.clone(),
        }))
    }

    /// Adds a device at the end; refuses a serial already in the list.
    pub fn push(&mut self, serial: &str, thing_name: &str) -> Result<(), ListError> {
        if let Devices::Counted { .. } = self.0 {
            self.0 = self.listed()?;
        }
        let Devices::Listed {
            serials,
            thing_names,
        } = &mut self.0
        else {
            unreachable!("made listed above")
        };
        match serials.intern(serial)? {
            (_, true) => {
                thing_names.push(thing_name)?;
                Ok(())
            }
            (first, false) => Err(ListError::Duplicate {
                serial: serial.to_string(),
                first,
            }),
        }
    }

    /// The same devices, listed name by name.
    fn listed(&self) -> Result<Devices, ListError> {
        let mut serials = Interner::default();
        let mut thing_names = Arena::default();
        for (serial, thing_name) in self.pairs() {
            serials.intern(&serial)?;
            thing_names.push(&thing_name)?;
        }
        Ok(Devices::Listed {
            serials,
            thing_names,
        })
    }

    /// The list of these devices, in this order; refuses a repeated serial.
    pub fn try_from_devices<'a>(
        devices: impl IntoIterator<Item = &'a Device>,
    ) -> Result<Self, ListError> {
        let mut list = Self::default();
        for device in devices {
            list.push(&device.serial, &device.thing_name)?;
        }
        Ok(list)
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Devices::Listed { serials, .. } => serials.len(),
            Devices::Counted { serials, .. } => serials.count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The serial and thing name of the device at `index` (below `len()`).
    pub fn pair(&self, index: usize) -> (Cow<'_, str>, Cow<'_, str>) {
        match &self.0 {
            Devices::Listed {
                serials,
                thing_names,
            } => (
                Cow::Borrowed(serials.name(index)),
                Cow::Borrowed(thing_names.get(index)),
            ),
            Devices::Counted { serials, pattern } => {
                let serial = serials.nth(index);
                let thing_name = pattern.render(&serial);
                (Cow::Owned(serial), Cow::Owned(thing_name))
            }
        }
    }

    /// The device at `index` (below `len()`).
    pub fn get(&self, index: usize) -> Device {
        let (serial, thing_name) = self.pair(index);
        Device {
            serial: serial.into_owned(),
            thing_name: thing_name.into_owned(),
        }
    }

    pub fn contains(&self, serial: &str) -> bool {
        self.position(serial).is_some()
    }

    /// Where `serial` is in the list.
    pub fn position(&self, serial: &str) -> Option<usize> {
        match &self.0 {
            Devices::Listed { serials, .. } => serials.find(serial),
            Devices::Counted { serials, .. } => serials.index_of(serial),
        }
    }

    /// The devices in batch order, each as an owned [`Device`].
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Device> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The serials in batch order (not copied when listed).
    pub fn serials(&self) -> impl ExactSizeIterator<Item = Cow<'_, str>> + '_ {
        (0..self.len()).map(|i| self.pair(i).0)
    }

    /// The serials and thing names in batch order (not copied when listed).
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = (Cow<'_, str>, Cow<'_, str>)> + '_ {
        (0..self.len()).map(|i| self.pair(i))
    }
}

/// Serials counting up from a first one, keeping the width of its trailing number
/// (`SN0099` -> `SN0099`, `SN0100`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
struct CountedSerials {
    prefix: String,
    start: u64,
    digits: usize,
    count: usize,
}

impl CountedSerials {
    fn new(first: &str, count: u64) -> Result<Self, String> {
        let digits = first.len() - first.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err("must end in digits so serials can count up, e.g. SN000001".into());
        }
        if digits > 18 {
            return Err("has more than 18 trailing digits".into());
        }
        let (prefix, number) = first.split_at(first.len() - digits);
        let start: u64 = number
            .parse()
            .map_err(|_| "must end in digits".to_string())?;
        let last = start
            .checked_add(count.saturating_sub(1))
            .filter(|last| last.to_string().len() <= digits)
            .ok_or_else(|| {
                format!(
                    "leaves room for only {} serials of this width; add a digit",
                    10u64.pow(digits as u32) - start
                )
            })?;
        let count = match count {
            0 => 0,
            _ => usize::try_from(last - start + 1).map_err(|_| "too many serials".to_string())?,
        };
        Ok(Self {
            prefix: prefix.to_string(),
            start,
            digits,
            count,
        })
    }

    fn nth(&self, index: usize) -> String {
        let digits = self.digits;
        format!("{}{:0digits$}", self.prefix, self.start + index as u64)
    }

    fn iter(&self) -> impl ExactSizeIterator<Item = String> + '_ {
        (0..self.count).map(|i| self.nth(i))
    }

    /// Where `serial` is in the range, if it is one of its serials.
    fn index_of(&self, serial: &str) -> Option<usize> {
        let number = serial.strip_prefix(self.prefix.as_str())?;
        if number.len() != self.digits || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let index = number.parse::<u64>().ok()?.checked_sub(self.start)?;
        usize::try_from(index).ok().filter(|i| *i < self.count)
    }
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

    /// The thing name for `serial`, unchecked (for serials checked before).
    fn render(&self, serial: &str) -> String {
        format!("{}{serial}{}", self.prefix, self.suffix)
    }

    /// The thing name for `serial`, checked against AWS's thing-name rules.
    pub fn thing_name(&self, serial: &str) -> Result<String, String> {
        let name = self.render(serial);
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
) -> Result<DeviceList, DeviceProblem> {
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
    let mut devices = ListBuilder::new(pattern);
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_problem(&e, 0)),
        }
        let line = record.position().map_or(0, |p| p.line());
        devices.add(line, record.get(column).unwrap_or_default())?;
    }
    if devices.list.is_empty() {
        return Err(DeviceProblem {
            line: 1,
            problem: "no serials below the header; add one serial per row".into(),
        });
    }
    Ok(devices.list)
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
    CountedSerials::new(first, count).map(|serials| serials.iter().collect())
}

/// Maps serials to devices, rejecting empty or unusable serials and duplicates (naming both
/// lines).
pub fn devices_from_serials(
    serials: impl IntoIterator<Item = (SourceLine, String)>,
    pattern: &ThingNamePattern,
) -> Result<DeviceList, DeviceProblem> {
    let mut devices = ListBuilder::new(pattern);
    for (line, serial) in serials {
        devices.add(line, &serial)?;
    }
    Ok(devices.list)
}

/// Checks one serial and its thing name against AWS's rules; returns the thing name.
fn check_serial(
    line: SourceLine,
    serial: &str,
    pattern: &ThingNamePattern,
) -> Result<String, DeviceProblem> {
    let problem = |problem: String| DeviceProblem { line, problem };
    if serial.is_empty() {
        return Err(problem("empty serial; remove the row or fill it in".into()));
    }
    names::check_thing_name(serial).map_err(|rule| problem(format!("serial {serial:?} {rule}")))?;
    pattern.thing_name(serial).map_err(problem)
}

/// A device list being read, a serial at a time, with the line each came from (to name
/// both lines of a duplicate).
struct ListBuilder<'p> {
    pattern: &'p ThingNamePattern,
    list: DeviceList,
    lines: Vec<SourceLine>,
}

impl<'p> ListBuilder<'p> {
    fn new(pattern: &'p ThingNamePattern) -> Self {
        Self {
            pattern,
            list: DeviceList::default(),
            lines: Vec::new(),
        }
    }

    fn add(&mut self, line: SourceLine, serial: &str) -> Result<(), DeviceProblem> {
        let problem = |problem: String| DeviceProblem { line, problem };
        let thing_name = check_serial(line, serial, self.pattern)?;
        match self.list.push(serial, &thing_name) {
            Ok(()) => {
                self.lines.push(line);
                Ok(())
            }
            Err(ListError::Duplicate { first, .. }) => Err(problem(format!(
                "serial {serial:?} is a duplicate of line {}; each device needs its own serial",
                self.lines[first]
            ))),
            Err(ListError::TooLarge(e)) => Err(problem(e.to_string())),
        }
    }
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
        let names: Vec<_> = devices.pairs().map(|(_, thing)| thing).collect();
        assert!(devices.contains("SN2") && !devices.contains("SN3"));
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
            devices.iter().collect::<Vec<_>>(),
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
    fn a_counted_list_is_its_rule_and_reads_like_a_listed_one() {
        let gg = pattern("gg-{serial}");
        let counted = DeviceList::counted("SN0098", 5, &gg).unwrap();
        let serials = counted_serials("SN0098", 5).unwrap();
        let listed = devices_from_serials(
            serials.into_iter().enumerate().map(|(i, s)| (i as u64, s)),
            &gg,
        )
        .unwrap();
        assert_eq!(counted.len(), 5);
        assert_eq!(
            counted.iter().collect::<Vec<_>>(),
            listed.iter().collect::<Vec<_>>()
        );
        assert_eq!(counted.get(2).thing_name, "gg-SN0100");
        assert!(counted.contains("SN0102") && !counted.contains("SN0103"));
        assert!(!counted.contains("SN097") && !counted.contains("SN0097"));
        let mut grown = counted.clone();
        grown.push("X1", "gg-X1").unwrap();
        assert_eq!(grown.len(), 6);
        assert!(matches!(
            grown.push("SN0099", "gg-SN0099"),
            Err(ListError::Duplicate { first: 1, .. })
        ));
        let err = DeviceList::counted("SN98", 3, &gg).unwrap_err();
        assert!(err.problem.contains("room for only 2"), "{}", err.problem);
        let long = format!("{}1", "A".repeat(127));
        let err = DeviceList::counted(&long, 1, &pattern("gg-{serial}")).unwrap_err();
        assert!(err.problem.contains("thing name"), "{}", err.problem);
    }

    #[test]
    fn counted_serials_keep_width() {
        let counted = counted_serials;
        assert_eq!(
            counted("SN0098", 3).unwrap(),
            ["SN0098", "SN0099", "SN0100"]
        );
        assert_eq!(counted("7", 3).unwrap(), ["7", "8", "9"]);
        assert!(counted("SN98", 3).unwrap_err().contains("room for only 2"));
        assert!(counted_serials("SN", 1).is_err());
    }
}
