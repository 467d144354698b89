//! What a new batch is made from, resolved the same way by `batch` and `prepare`: its
//! devices (`--count`/`--first-serial` or `--devices`), the name overrides checked, and its
//! spec from the station, the flags and the account's endpoints.

use crate::batch_dir::spec::{devices_fingerprint, BatchSpec};
use crate::cli::DeviceArgs;
use crate::core::devices::{self, ClaimScope, DeviceList};
use crate::core::greengrass::ProvisioningTarget;
use crate::core::names;
use crate::core::station_config::StationConfig;
use crate::error::UserError;

/// The device list from `--count`/`--first-serial` or `--devices`.
pub fn resolve_devices(
    args: &DeviceArgs,
    station: &StationConfig,
) -> Result<DeviceList, UserError> {
    let pattern = station.thing_name_pattern();
    if let Some(file) = &args.csv {
        let bytes = std::fs::read(file).map_err(|e| UserError::Devices {
            file: file.clone(),
            line: 0,
            problem: format!("cannot read: {e}; check the path passed to --devices"),
        })?;
        return devices::parse_serials_csv(&bytes, &pattern).map_err(|p| UserError::Devices {
            file: file.clone(),
            line: p.line,
            problem: p.problem,
        });
    }
    let count = args.count.expect("clap requires --count or --devices");
    if !(1..=1_000_000).contains(&count) {
        return Err(UserError::Flag {
            flag: "--count",
            value: count.to_string(),
            problem: "must be 1 to 1000000 devices per batch".into(),
        });
    }
    let flag_error = |problem: String| UserError::Flag {
        flag: "--first-serial",
        value: args.first_serial.clone(),
        problem,
    };
    DeviceList::counted(&args.first_serial, count, &pattern).map_err(|p| flag_error(p.problem))
}

/// The `--claim-policy` and `--template` overrides of the station's names.
pub struct NameOverrides<'a> {
    pub claim_policy: &'a Option<String>,
    pub template: &'a Option<String>,
}

impl NameOverrides<'_> {
    /// Checks each override is a valid AWS IoT name.
    pub fn check(&self) -> Result<(), UserError> {
        check_override(
            "--claim-policy",
            self.claim_policy,
            names::check_policy_name,
        )?;
        check_override("--template", self.template, names::check_template_name)
    }
}

fn check_override(
    flag: &'static str,
    value: &Option<String>,
    check: fn(&str) -> Result<(), String>,
) -> Result<(), UserError> {
    match value {
        Some(v) => check(v).map_err(|problem| UserError::Flag {
            flag,
            value: v.clone(),
            problem,
        }),
        None => Ok(()),
    }
}

/// What the batch is, from the station and the flags (unencrypted, unsigned).
pub fn batch_spec(
    station: &StationConfig,
    devices: &DeviceList,
    names: &NameOverrides,
    claim_scope: ClaimScope,
    region: &str,
    (iot_data_endpoint, iot_credential_endpoint): (String, String),
) -> BatchSpec {
    let provisioning = &station.provisioning;
    BatchSpec {
        format: 1,
        device_count: devices.len(),
        devices_sha256: devices_fingerprint(devices),
        claim_policy: (names.claim_policy.clone())
            .unwrap_or_else(|| provisioning.claim_policy.clone()),
        key_algorithm: station.keys.algorithm,
        target: ProvisioningTarget {
            region: region.to_string(),
            iot_data_endpoint,
            iot_credential_endpoint,
            role_alias: provisioning.role_alias.clone(),
            template: (names.template.clone()).unwrap_or_else(|| provisioning.template.clone()),
            thing_group: provisioning.thing_group.clone(),
            greengrass: station.greengrass.clone(),
        },
        claim_scope,
        encrypt_to: Vec::new(),
        signed_by: None,
        batch_id: None,
    }
}
