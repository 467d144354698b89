//! One resolution of what the commands share, so each reads them the same way: the station
//! file (read and validated once), the record `setup` leaves beside it, and the AWS
//! settings, taken from the flag, then the station file, then the batch's own record; the
//! SDK's standard chain (`AWS_REGION`, `AWS_PROFILE`, config files, `AWS_ENDPOINT_URL`) comes
//! after all of them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::aws::AwsSettings;
use crate::cli::{AwsArgs, LimitsArgs};
use crate::core::names;
use crate::core::station_config::{LimitsSection, StationConfig};
use crate::error::UserError;

/// Reads and validates the station file at `path` (the `--station` flag).
pub fn read_station(path: &Path) -> Result<StationConfig, UserError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UserError::station(
            path,
            format!("cannot read: {e}; check the path passed to --station"),
        )
    })?;
    StationConfig::parse(&text, path)
}

/// The AWS settings for a command: each from its flag, else the station's `[aws]` section,
/// else (region only) the region the batch was made in.
pub fn aws_settings(
    flags: &AwsArgs,
    station: Option<&StationConfig>,
    batch_region: Option<&str>,
) -> Result<AwsSettings, UserError> {
    if let Some(region) = &flags.region {
        names::check_region(region).map_err(|problem| UserError::Flag {
            flag: "--region",
            value: region.clone(),
            problem,
        })?;
    }
    let aws = station.map(|s| &s.aws);
    Ok(AwsSettings {
        region: flags
            .region
            .clone()
            .or_else(|| aws.and_then(|a| a.region.clone()))
            .or_else(|| batch_region.map(str::to_string)),
        profile: flags
            .profile
            .clone()
            .or_else(|| aws.and_then(|a| a.profile.clone())),
        endpoint_url: flags.endpoint_url.clone(),
    })
}

/// What `setup` records beside the station file (`NAME.setup.json` for `NAME.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupRecord {
    /// The endpoint URL override in force (`--endpoint-url` or AWS_ENDPOINT_URL); none for
    /// AWS itself. `batch` uses a record only under the same endpoint and region.
    pub endpoint_url: Option<String>,
    pub region: String,
    pub account_id: String,
    pub iot_data_endpoint: String,
    pub iot_credential_endpoint: String,
    pub token_exchange_role_arn: String,
    pub token_exchange_access_policy_arn: String,
    pub role_alias_arn: String,
    /// The fleet-wide core devices' policy; none with `core_policy_variant = "least-privilege"`
    /// (each device's policy is made by the template).
    pub core_policy_arn: Option<String>,
    pub fleet_provisioning_role_arn: String,
    pub thing_group_arn: Option<String>,
    pub template_arn: String,
    pub claim_policy_arn: String,
}

/// The endpoint URL override in force: the flag, else AWS_ENDPOINT_URL.
pub fn endpoint_override(flag: Option<&str>) -> Option<String> {
    flag.map(String::from)
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|url| !url.is_empty())
}

/// Where the record of a station's setup lives.
pub fn record_path(station: &Path) -> PathBuf {
    station.with_extension("setup.json")
}

/// Reads the setup record beside a station file, if there is one.
pub fn load_record(station: &Path) -> Result<Option<SetupRecord>, UserError> {
    let path = record_path(station);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            UserError::station(
                &path,
                format!("unreadable ({e}); delete it and run `claimfab setup` again"),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(UserError::station(
            &path,
            format!("cannot read: {e}; fix its permissions"),
        )),
    }
}

/// The station's id from `--station ID`, or from the `[station]` section of
/// `--station-config FILE`, and the batch keys that section pins.
pub fn station_id(args: &crate::cli::StationArgs) -> Result<(String, Vec<String>), UserError> {
    if let Some(id) = &args.station {
        crate::core::floor_records::check_station_id(id).map_err(|rule| {
            let hint = if id.contains('/') || id.ends_with(".toml") {
                "; --station takes a station id here: pass a station file as --station-config FILE"
            } else {
                ""
            };
            UserError::Flag {
                flag: "--station",
                value: id.clone(),
                problem: format!("{rule}{hint}"),
            }
        })?;
        return Ok((id.clone(), Vec::new()));
    }
    let file = args
        .station_config
        .as_deref()
        .expect("clap requires --station or --station-config");
    let config = crate::settings::read_station(file)?;
    config.station.map(|s| (s.id, s.batch_keys)).ok_or_else(|| {
        UserError::station(
            file,
            "has no [station] section naming the station; add one with its id (see station-config/example.toml) or pass --station ID",
        )
    })
}

/// The rate limits and concurrency of a command that works on a batch after it was made:
/// the `[limits]` of its `--station FILE`, else the defaults (AWS's default quotas).
pub fn station_limits(flags: &LimitsArgs) -> Result<LimitsSection, UserError> {
    match &flags.station {
        Some(path) => Ok(read_station(path)?.limits),
        None => Ok(LimitsSection::default()),
    }
}

/// Connects to AWS IoT in a batch's region, unless a flag or the environment says
/// otherwise, at `limits`: the connection of the commands that work on a batch after it
/// was made.
pub async fn connect_with_limits(
    aws: &AwsArgs,
    region: &str,
    limits: &LimitsSection,
) -> anyhow::Result<crate::aws::Iot> {
    let settings = aws_settings(aws, None, Some(region))?;
    Ok(crate::aws::Iot::connect(&settings, limits)
        .await
        .map_err(UserError::Aws)?)
}

/// `--provision-within`: how long after flashing a board should have provisioned.
pub fn provision_within(text: &str) -> Result<std::time::Duration, UserError> {
    const TEN_YEARS: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86_400);
    let fail = |problem: String| UserError::Flag {
        flag: "--provision-within",
        value: text.to_string(),
        problem,
    };
    let within = humantime::parse_duration(text)
        .map_err(|e| fail(format!("{e}; use a duration like 24h or 3d")))?;
    if within > TEN_YEARS {
        return Err(fail(
            "is over ten years; use a duration like 24h or 3d".into(),
        ));
    }
    Ok(within)
}

/// The one region batches were made in (or `--region`), for commands that read AWS about
/// several batches at once.
pub fn batches_region(
    flag: Option<&String>,
    regions: std::collections::HashSet<String>,
) -> Result<String, UserError> {
    match (flag, regions.len()) {
        (Some(region), _) => Ok(region.clone()),
        (None, 1) => Ok(regions.into_iter().next().expect("one region")),
        (None, _) => Err(UserError::Aws(
            "the batches are in different regions; read one region at a time or pass --region"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn station(text: &str) -> StationConfig {
        StationConfig::parse(text, Path::new("s.toml")).unwrap()
    }

    #[test]
    fn flag_then_station_then_batch() {
        let flags = AwsArgs {
            region: Some("eu-west-1".into()),
            profile: None,
            endpoint_url: Some("http://127.0.0.1:1".into()),
        };
        let s = station("[aws]\nregion = \"us-west-2\"\nprofile = \"line1\"\n");
        let got = aws_settings(&flags, Some(&s), Some("ap-south-1")).unwrap();
        assert_eq!(got.region.as_deref(), Some("eu-west-1"));
        assert_eq!(got.profile.as_deref(), Some("line1"));
        assert_eq!(got.endpoint_url.as_deref(), Some("http://127.0.0.1:1"));
        let none = AwsArgs::default();
        let got = aws_settings(&none, Some(&s), Some("ap-south-1")).unwrap();
        assert_eq!(got.region.as_deref(), Some("us-west-2"));
        let got = aws_settings(&none, None, Some("ap-south-1")).unwrap();
        assert_eq!(got.region.as_deref(), Some("ap-south-1"));
        assert_eq!(aws_settings(&none, None, None).unwrap().region, None);
    }

    #[test]
    fn a_bad_region_flag_is_a_user_error() {
        let flags = AwsArgs {
            region: Some("moon-1".into()),
            ..AwsArgs::default()
        };
        let err = aws_settings(&flags, None, None).unwrap_err().to_string();
        assert!(err.contains("--region"), "{err}");
    }

    #[test]
    fn provision_within_reads_durations_and_refuses_what_no_clock_can_subtract() {
        assert_eq!(provision_within("24h").unwrap().as_secs(), 86_400);
        for bad in ["soon", "20000y"] {
            let err = provision_within(bad).unwrap_err().to_string();
            assert!(
                err.contains("--provision-within") && err.contains(bad),
                "{err}"
            );
        }
    }
}
