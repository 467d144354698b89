//! The station config: one TOML file per production line or flashing station, naming the AWS
//! resources, the on-device Greengrass layout, the key algorithm and the API rate limits.
//! Parsing and validation are pure (text in, typed config or one-line error out) so every
//! value is checked before the first AWS call.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::core::devices::ThingNamePattern;
use crate::core::floor_records::check_station_id;
use crate::core::names;
use crate::error::UserError;

/// AWS IoT's default quota for CreateCertificateFromCsr, requests per second.
pub const DEFAULT_CREATE_CERTIFICATE_RATE: u32 = 15;
/// AWS IoT's default quota for AttachPolicy, requests per second.
pub const DEFAULT_ATTACH_POLICY_RATE: u32 = 15;
/// AWS IoT's default quota for UpdateCertificate, requests per second.
pub const DEFAULT_UPDATE_CERTIFICATE_RATE: u32 = 10;
/// AWS IoT's default quota for DescribeCertificate, requests per second.
pub const DEFAULT_DESCRIBE_CERTIFICATE_RATE: u32 = 10;

/// A validated station config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    #[serde(default)]
    pub aws: AwsSection,
    #[serde(default)]
    pub provisioning: ProvisioningSection,
    #[serde(default)]
    pub greengrass: GreengrassSection,
    #[serde(default)]
    pub keys: KeysSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub setup: SetupSection,
    #[serde(default)]
    pub signing: SigningSection,
    /// Absent in the files of stations that only make batches.
    pub station: Option<StationSection>,
}

/// `[signing]`: on the machine that makes batches, the batch-signing key that signs what
/// stations rely on (see `claimfab batch-key`). Never on the shared drive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSection {
    /// The batch-signing key file (PKCS#8 PEM, mode 0600).
    pub key_file: Option<std::path::PathBuf>,
}

/// `[station]`: the flashing station this file belongs to, for `claimfab take` and
/// `claimfab flashed` (`--station-config FILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationSection {
    /// The station's id: 1 to 32 of `[A-Za-z0-9_-]`; its log and pending take in a batch
    /// directory are under `stations/ID/`.
    pub id: String,
    /// The command that flashes a bundle onto a board, for the station's own scripts;
    /// `take` and `flashed` do not run it.
    pub flash_command: Option<String>,
    /// The batch-signing public keys (`claimfab-ed25519:...`) this station trusts: with
    /// any, it takes only bundles of batches one of them signed.
    #[serde(default)]
    pub batch_keys: Vec<String>,
}

/// Which IoT policy Greengrass core devices get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorePolicyVariant {
    /// The guide's policy: all topics and `greengrass:*`.
    #[default]
    Guide,
    /// Each device limited to its own topics and the Greengrass data-plane calls it needs.
    LeastPrivilege,
}

/// `[setup]`: the names and options `claimfab setup` uses (defaults as in AWS's guide).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SetupSection {
    pub token_exchange_role: String,
    pub token_exchange_access_policy: String,
    pub credential_duration_seconds: u32,
    pub artifact_bucket: Option<String>,
    pub core_policy: String,
    pub core_policy_variant: CorePolicyVariant,
    pub fleet_provisioning_role: String,
    pub template_description: String,
    pub pre_provisioning_hook_arn: Option<String>,
    /// The template attaches each device certificate to its thing exclusively
    /// (`ThingPrincipalType: EXCLUSIVE_THING`), as AWS recommends.
    pub exclusive_thing_association: bool,
    /// Deploy claimfab's claim-binding hook as the template's pre-provisioning hook.
    pub claim_binding: bool,
    /// Its Lambda function and execution role (the role's policy is `<role>Access`).
    pub claim_binding_function: String,
    pub claim_binding_role: String,
}

impl Default for SetupSection {
    fn default() -> Self {
        Self {
            token_exchange_role: "GreengrassV2TokenExchangeRole".into(),
            token_exchange_access_policy: "GreengrassV2TokenExchangeRoleAccess".into(),
            credential_duration_seconds: 3600,
            artifact_bucket: None,
            core_policy: "GreengrassV2IoTThingPolicy".into(),
            core_policy_variant: CorePolicyVariant::Guide,
            fleet_provisioning_role: "GreengrassFleetProvisioningRole".into(),
            template_description: "A provisioning template for Greengrass core devices.".into(),
            pre_provisioning_hook_arn: None,
            exclusive_thing_association: true,
            claim_binding: false,
            claim_binding_function: "ClaimfabClaimBinding".into(),
            claim_binding_role: "ClaimfabClaimBindingRole".into(),
        }
    }
}

/// `[aws]`: where the account is and how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSection {
    /// Region; when absent, the SDK's chain (AWS_REGION, the profile) decides.
    pub region: Option<String>,
    /// Named profile; when absent, AWS_PROFILE or the default chain decides.
    pub profile: Option<String>,
    /// Pinned `iot:Data-ATS` endpoint; when absent, DescribeEndpoint is asked once per batch.
    pub iot_data_endpoint: Option<String>,
    /// Pinned `iot:CredentialProvider` endpoint; likewise.
    pub iot_credential_endpoint: Option<String>,
}

/// `[provisioning]`: the AWS IoT resources a claim certificate is tied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningSection {
    pub claim_policy: String,
    pub template: String,
    pub thing_name_pattern: String,
    pub thing_group: Option<String>,
    pub role_alias: String,
}

impl Default for ProvisioningSection {
    fn default() -> Self {
        Self {
            claim_policy: "GreengrassProvisioningClaimPolicy".into(),
            template: "GreengrassFleetProvisioningTemplate".into(),
            thing_name_pattern: "{serial}".into(),
            thing_group: None,
            role_alias: "GreengrassCoreTokenExchangeRoleAlias".into(),
        }
    }
}

/// Which Greengrass runtime the devices run; decides the config schema in the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nucleus {
    /// The Java nucleus with the `aws.greengrass.FleetProvisioningByClaim` plugin.
    Java,
    /// Greengrass nucleus lite with its `aws.greengrass.fleet_provisioning` component.
    Lite,
}

/// `[greengrass]`: the on-device layout the bundle mirrors. Path defaults follow the chosen
/// nucleus: `/greengrass/v2/...` for Java (AWS's guide), `/var/lib/greengrass` and
/// `/etc/greengrass/config.yaml` for nucleus lite (its own defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawGreengrassSection")]
pub struct GreengrassSection {
    pub nucleus: Nucleus,
    /// Java: written into the config only when the station sets it (see `greengrass.rs`).
    /// Lite: the version the image runs, checked against [`FIRST_LITE_SERVED`].
    pub nucleus_version: Option<String>,
    pub root_path: String,
    pub config_path: String,
    pub claim_certificate_path: String,
    pub claim_private_key_path: String,
    pub root_ca_path: String,
    /// Nucleus lite only: `runWithDefault.posixUser`, the user:group components run as.
    pub posix_user: String,
}

/// Nucleus lite's config daemon reads this file, then every regular file directly in
/// [`LITE_CONFIG_DIR`] (in directory order, later files winning), and nothing else.
pub const LITE_CONFIG_FILE: &str = "/etc/greengrass/config.yaml";
/// Nucleus lite's directory of config fragments.
pub const LITE_CONFIG_DIR: &str = "/etc/greengrass/config.d";
/// Where claimfab puts a lite device's config by default: a fragment of its own, so the
/// image's base config is not overwritten.
pub const LITE_CONFIG_FRAGMENT: &str = "/etc/greengrass/config.d/claimfab.yaml";

/// Whether nucleus lite reads a config file at `path`.
pub fn lite_reads_config_at(path: &str) -> bool {
    path == LITE_CONFIG_FILE
        || path
            .strip_prefix(LITE_CONFIG_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// `[greengrass]` as written, before nucleus-dependent defaults are filled in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGreengrassSection {
    nucleus: Option<Nucleus>,
    nucleus_version: Option<String>,
    root_path: Option<String>,
    config_path: Option<String>,
    claim_certificate_path: Option<String>,
    claim_private_key_path: Option<String>,
    root_ca_path: Option<String>,
    posix_user: Option<String>,
}

impl From<RawGreengrassSection> for GreengrassSection {
    fn from(raw: RawGreengrassSection) -> Self {
        let nucleus = raw.nucleus.unwrap_or(Nucleus::Java);
        let (root, config) = match nucleus {
            Nucleus::Java => ("/greengrass/v2", "/greengrass/v2/init-config/config.yaml"),
            Nucleus::Lite => ("/var/lib/greengrass", LITE_CONFIG_FRAGMENT),
        };
        let root_path = raw.root_path.unwrap_or_else(|| root.into());
        let under_root = |file: &str| format!("{}/{file}", root_path.trim_end_matches('/'));
        Self {
            nucleus,
            nucleus_version: raw.nucleus_version,
            config_path: raw.config_path.unwrap_or_else(|| config.into()),
            claim_certificate_path: raw
                .claim_certificate_path
                .unwrap_or_else(|| under_root("claim-certs/claim.pem.crt")),
            claim_private_key_path: raw
                .claim_private_key_path
                .unwrap_or_else(|| under_root("claim-certs/claim.private.pem.key")),
            root_ca_path: raw
                .root_ca_path
                .unwrap_or_else(|| under_root("AmazonRootCA1.pem")),
            root_path,
            // What lite's Debian package and fleet-provisioning guide set.
            posix_user: raw.posix_user.unwrap_or_else(|| "ggcore:ggcore".into()),
        }
    }
}

impl GreengrassSection {
    /// The defaults a station gets for `nucleus`.
    pub fn defaults_for(nucleus: Nucleus) -> Self {
        RawGreengrassSection {
            nucleus: Some(nucleus),
            ..RawGreengrassSection::default()
        }
        .into()
    }
}

impl Default for GreengrassSection {
    fn default() -> Self {
        RawGreengrassSection::default().into()
    }
}

/// The claim key's curve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// NIST P-256 with ECDSA-SHA256 (the default; what AWS's samples use).
    #[default]
    P256,
    /// NIST P-384 with ECDSA-SHA384.
    P384,
}

/// `[keys]`: how claim keys are made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysSection {
    #[serde(default)]
    pub algorithm: KeyAlgorithm,
}

/// `[limits]`: client-side rate limits per AWS API and in-flight device concurrency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub create_certificate_from_csr_per_second: u32,
    pub attach_policy_per_second: u32,
    pub update_certificate_per_second: u32,
    pub describe_certificate_per_second: u32,
    pub detach_policy_per_second: u32,
    pub concurrency: u32,
    pub max_attempts: u32,
    /// How long after an unanswered CreateCertificateFromCsr to wait before concluding from
    /// ListCertificates whether it made a certificate (AWS may still be executing it, and
    /// listings lag behind writes).
    pub reconcile_after_seconds: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            create_certificate_from_csr_per_second: DEFAULT_CREATE_CERTIFICATE_RATE,
            attach_policy_per_second: DEFAULT_ATTACH_POLICY_RATE,
            update_certificate_per_second: DEFAULT_UPDATE_CERTIFICATE_RATE,
            describe_certificate_per_second: DEFAULT_DESCRIBE_CERTIFICATE_RATE,
            detach_policy_per_second: 15,
            concurrency: 16,
            max_attempts: 10,
            reconcile_after_seconds: 60,
        }
    }
}

/// The dotted key (`section.key`) whose `key = value` line holds byte `offset` of `text`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return None;
    }
    let section = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    Some(match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_string(),
    })
}

impl StationConfig {
    /// Parses and validates a station file's text; `file` only labels errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, UserError> {
        let config: StationConfig = toml::from_str(text).map_err(|e| {
            let before = e.span().and_then(|span| text.get(..span.start));
            let line = before.map(|b| b.matches('\n').count() + 1);
            // toml's message can span lines; keep the first for a one-line error.
            let message = e.message().lines().next().unwrap_or("invalid TOML").trim();
            let key = before
                .and_then(|b| key_at(text, b.len()))
                .map(|k| format!("key `{k}`: "))
                .unwrap_or_default();
            let location = line.map(|l| format!("line {l}: {key}")).unwrap_or_default();
            UserError::station(
                file,
                format!("{location}{message}; see station-config/example.toml for every key"),
            )
        })?;
        config.validate().map_err(|p| UserError::station(file, p))?;
        Ok(config)
    }

    /// Checks every value against AWS's naming rules and sane bounds.
    fn validate(&self) -> Result<(), String> {
        self.validate_aws()?;
        self.validate_provisioning()?;
        self.greengrass.validate()?;
        self.limits.validate()?;
        self.setup.validate()?;
        self.station
            .as_ref()
            .map_or(Ok(()), StationSection::validate)
    }

    fn validate_aws(&self) -> Result<(), String> {
        let a = &self.aws;
        if let Some(region) = &a.region {
            check("aws.region", region, names::check_region(region))?;
        }
        for (key, value) in [
            ("aws.iot_data_endpoint", &a.iot_data_endpoint),
            ("aws.iot_credential_endpoint", &a.iot_credential_endpoint),
        ] {
            if let Some(host) = value {
                check(key, host, names::check_hostname(host))?;
            }
        }
        Ok(())
    }

    fn validate_provisioning(&self) -> Result<(), String> {
        let p = &self.provisioning;
        check(
            "provisioning.claim_policy",
            &p.claim_policy,
            names::check_policy_name(&p.claim_policy),
        )?;
        check(
            "provisioning.template",
            &p.template,
            names::check_template_name(&p.template),
        )?;
        check(
            "provisioning.thing_name_pattern",
            &p.thing_name_pattern,
            ThingNamePattern::parse(&p.thing_name_pattern).map(drop),
        )?;
        if let Some(group) = &p.thing_group {
            check(
                "provisioning.thing_group",
                group,
                names::check_thing_name(group),
            )?;
        }
        check(
            "provisioning.role_alias",
            &p.role_alias,
            names::check_role_alias(&p.role_alias),
        )
    }

    /// The thing-name pattern, already validated.
    pub fn thing_name_pattern(&self) -> ThingNamePattern {
        ThingNamePattern::parse(&self.provisioning.thing_name_pattern)
            .expect("validated at parse time")
    }
}

/// The first nucleus lite the bundles serve: it reads `templateParams` as the map claimfab
/// writes (`ggl_load_template_params`, lite's config_operations.c). Earlier releases read a
/// JSON string and stop at a map; up to 2.2.0 they also connect with the template's name as
/// every device's client id and send a CSR for `CN=amazon.com`, which claim binding refuses.
pub const FIRST_LITE_SERVED: (u32, u32, u32) = (2, 3, 0);

/// Whether bundles work on nucleus lite `version` (a checked `X.Y.Z`).
fn lite_version_served(version: &str) -> Result<(), String> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let triple = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    if triple >= FIRST_LITE_SERVED {
        return Ok(());
    }
    Err(
        "nucleus lite before 2.3.0 reads `templateParams` as a JSON string and refuses the map \
         claimfab writes (and up to 2.2.0 gives every device the template's name as its MQTT \
         client id); build the image with nucleus lite 2.3.0 or later"
            .into(),
    )
}

/// `Err("key `KEY` = VALUE: RULE")` when `result` holds a broken rule.
fn check(key: &str, value: &dyn std::fmt::Debug, result: Result<(), String>) -> Result<(), String> {
    result.map_err(|rule| format!("key `{key}` = {value:?}: {rule}"))
}

/// `Err` naming `key` and `value` unless `ok`.
fn require(key: &str, value: &dyn std::fmt::Debug, ok: bool, rule: &str) -> Result<(), String> {
    check(key, value, if ok { Ok(()) } else { Err(rule.to_string()) })
}

impl GreengrassSection {
    /// Every device path is absolute and distinct, and the config is where the nucleus
    /// reads it.
    fn validate(&self) -> Result<(), String> {
        if let Some(version) = &self.nucleus_version {
            check(
                "greengrass.nucleus_version",
                version,
                names::check_version(version),
            )?;
            if self.nucleus == Nucleus::Lite {
                check(
                    "greengrass.nucleus_version",
                    version,
                    lite_version_served(version),
                )?;
            }
        }
        let paths = [
            ("greengrass.root_path", &self.root_path),
            ("greengrass.config_path", &self.config_path),
            (
                "greengrass.claim_certificate_path",
                &self.claim_certificate_path,
            ),
            (
                "greengrass.claim_private_key_path",
                &self.claim_private_key_path,
            ),
            ("greengrass.root_ca_path", &self.root_ca_path),
        ];
        for (key, path) in paths {
            check(key, path, names::check_device_path(path))?;
        }
        let user_part = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        require(
            "greengrass.posix_user",
            &self.posix_user,
            self.posix_user.split(':').count() <= 2 && self.posix_user.split(':').all(user_part),
            "give `user` or `user:group` (letters, digits, '.', '_', '-')",
        )?;
        self.validate_config_path()?;
        // Files in a bundle must not land on top of each other on the device.
        for (i, (key_a, a)) in paths.iter().enumerate().skip(1) {
            if let Some((key_b, _)) = paths.iter().skip(i + 1).find(|(_, b)| b == a) {
                return Err(format!(
                    "keys `{key_a}` and `{key_b}` are both {a:?}: each file needs its own path"
                ));
            }
        }
        Ok(())
    }

    fn validate_config_path(&self) -> Result<(), String> {
        let path = &self.config_path;
        match self.nucleus {
            Nucleus::Java => require(
                "greengrass.config_path",
                path,
                path.ends_with(".yaml") || path.ends_with(".yml"),
                "the Java nucleus reads an --init-config as YAML only when its name ends in .yaml or .yml",
            ),
            Nucleus::Lite => require(
                "greengrass.config_path",
                path,
                lite_reads_config_at(path),
                &format!("nucleus lite reads its config only from {LITE_CONFIG_FILE} and files directly in {LITE_CONFIG_DIR}/; use one of those (default {LITE_CONFIG_FRAGMENT})"),
            ),
        }
    }
}

impl LimitsSection {
    fn validate(&self) -> Result<(), String> {
        for (key, rate) in [
            (
                "limits.create_certificate_from_csr_per_second",
                self.create_certificate_from_csr_per_second,
            ),
            (
                "limits.attach_policy_per_second",
                self.attach_policy_per_second,
            ),
            (
                "limits.update_certificate_per_second",
                self.update_certificate_per_second,
            ),
            (
                "limits.describe_certificate_per_second",
                self.describe_certificate_per_second,
            ),
            (
                "limits.detach_policy_per_second",
                self.detach_policy_per_second,
            ),
        ] {
            require(
                key,
                &rate,
                (1..=10_000).contains(&rate),
                "must be 1 to 10000 requests per second (your account's quota; AWS's default is 10-15)",
            )?;
        }
        require(
            "limits.concurrency",
            &self.concurrency,
            (1..=512).contains(&self.concurrency),
            "must be 1 to 512",
        )?;
        require(
            "limits.reconcile_after_seconds",
            &self.reconcile_after_seconds,
            self.reconcile_after_seconds <= 3600,
            "must be 0 to 3600 seconds",
        )?;
        require(
            "limits.max_attempts",
            &self.max_attempts,
            (1..=50).contains(&self.max_attempts),
            "must be 1 to 50",
        )
    }
}

impl StationSection {
    fn validate(&self) -> Result<(), String> {
        check("station.id", &self.id, check_station_id(&self.id))?;
        for key in &self.batch_keys {
            let parsed = key.parse::<crate::core::signing::BatchKey>().map(drop);
            check("station.batch_keys", key, parsed)?;
        }
        if let Some(command) = &self.flash_command {
            require(
                "station.flash_command",
                command,
                !command.trim().is_empty() && !command.contains('\n'),
                "must be one non-empty line (the command and its arguments)",
            )?;
        }
        Ok(())
    }
}

impl SetupSection {
    fn validate(&self) -> Result<(), String> {
        for (key, value, max) in [
            ("setup.token_exchange_role", &self.token_exchange_role, 64),
            (
                "setup.fleet_provisioning_role",
                &self.fleet_provisioning_role,
                64,
            ),
            ("setup.claim_binding_role", &self.claim_binding_role, 57),
            (
                "setup.token_exchange_access_policy",
                &self.token_exchange_access_policy,
                128,
            ),
        ] {
            check(key, value, names::check_iam_name(value, max))?;
        }
        check(
            "setup.claim_binding_function",
            &self.claim_binding_function,
            names::check_function_name(&self.claim_binding_function),
        )?;
        if self.claim_binding && self.pre_provisioning_hook_arn.is_some() {
            return Err("keys `setup.claim_binding` and `setup.pre_provisioning_hook_arn` both name a pre-provisioning hook: a template has one; keep one of them".into());
        }
        check(
            "setup.core_policy",
            &self.core_policy,
            names::check_policy_name(&self.core_policy),
        )?;
        require(
            "setup.credential_duration_seconds",
            &self.credential_duration_seconds,
            (900..=43_200).contains(&self.credential_duration_seconds),
            "must be 900 to 43200 seconds (AWS IoT role alias limits)",
        )?;
        if let Some(bucket) = &self.artifact_bucket {
            check(
                "setup.artifact_bucket",
                bucket,
                names::check_bucket_name(bucket),
            )?;
        }
        if let Some(arn) = &self.pre_provisioning_hook_arn {
            require(
                "setup.pre_provisioning_hook_arn",
                arn,
                arn.starts_with("arn:") && arn.contains(":lambda:") && arn.contains(":function:"),
                "must be a Lambda function ARN like arn:aws:lambda:REGION:ACCOUNT:function:NAME",
            )?;
        }
        let description = self.template_description.chars().count();
        require(
            "setup.template_description",
            &description,
            description <= 500,
            "must be at most 500 characters",
        )
    }
}

#[cfg(test)]
mod tests;
