//! Batch preflight against the account, before anything is created: the claim policy and
//! the provisioning template as they are in AWS IoT (the reasoning is `core::preflight`'s),
//! and the account's data and credential endpoints a batch's configs name.

use crate::batch_dir::spec::BatchSpec;
use crate::cloud::{AwsError, EndpointKind, Inventory};
use crate::core::devices::DeviceList;
use crate::core::greengrass::ProvisioningTarget;
use crate::core::preflight;
use crate::core::station_config::StationConfig;
use crate::error::UserError;
use crate::settings::SetupRecord;

/// Turns an AWS error met during preflight into a one-line user error.
fn preflight_error(what: &str, action: &str, error: AwsError) -> UserError {
    let fix = match &error {
        AwsError::AccessDenied(_) => format!("allow {action} for the AWS identity in use"),
        AwsError::Uncertain(_) => {
            "check the network, --endpoint-url / AWS_ENDPOINT_URL and the region".to_string()
        }
        _ => "check the region and account".to_string(),
    };
    UserError::Aws(format!("{what}: {error}; {fix}"))
}

/// Checks, before anything is created, that the batch's devices will be able to provision:
/// the claim policy exists and allows what their nucleus asks for, and the template exists,
/// is enabled, reads exactly the parameters the bundles send, puts devices in the station's
/// thing group only, and makes per-device policies that fit AWS IoT's size limit for the
/// longest thing name.
pub async fn preflight(
    iot: &impl Inventory,
    spec: &BatchSpec,
    devices: &DeviceList,
) -> Result<(), UserError> {
    let (policy, target) = (&spec.claim_policy, &spec.target);
    let region = iot.region();
    let document = iot
        .policy_document(policy)
        .await
        .map_err(|e| preflight_error(&format!("GetPolicy {policy}"), "iot:GetPolicy", e))?
        .ok_or_else(|| UserError::Aws(format!(
            "claim policy {policy:?} does not exist in {region}; create it with `claimfab setup --station FILE` or pass --claim-policy"
        )))?;
    let name = &target.template;
    let template = iot
        .provisioning_template(name)
        .await
        .map_err(|e| {
            preflight_error(
                &format!("DescribeProvisioningTemplate {name}"),
                "iot:DescribeProvisioningTemplate",
                e,
            )
        })?
        .ok_or_else(|| UserError::Aws(format!(
            "provisioning template {name:?} does not exist in {region}; create it with `claimfab setup --station FILE` or pass --template"
        )))?;
    let Some(longest) = devices
        .pairs()
        .map(|(_, thing_name)| thing_name)
        .max_by_key(|n| n.len())
    else {
        return Ok(());
    };
    let longest = longest.as_ref();
    let view = preflight::TemplateView {
        name,
        arn: &template.arn,
        enabled: template.enabled,
        body: &template.body,
    };
    let sent = target.template_parameters(longest);
    let group = target.thing_group.as_deref();
    preflight::check_template(&view, &sent, longest, group).map_err(UserError::Aws)?;
    let prefix = preflight::arn_prefix(&template.arn).ok_or_else(|| {
        UserError::Aws(format!(
            "DescribeProvisioningTemplate {name}: unexpected ARN {:?}",
            template.arn
        ))
    })?;
    preflight::check_claim_policy(policy, &document, &prefix, target.greengrass.nucleus, name)
        .map_err(UserError::Aws)
}

/// The data and credential endpoints: pinned by the station, else as the batch began, else
/// as `claimfab setup` recorded them for this region, else asked of DescribeEndpoint.
pub async fn resolve_endpoints(
    iot: &impl Inventory,
    station: &StationConfig,
    previous: Option<&ProvisioningTarget>,
    recorded: Option<&SetupRecord>,
) -> Result<(String, String), UserError> {
    let mut endpoints = Vec::new();
    for (pinned, previous, recorded, kind) in [
        (
            &station.aws.iot_data_endpoint,
            previous.map(|t| &t.iot_data_endpoint),
            recorded.map(|r| &r.iot_data_endpoint),
            EndpointKind::DataAts,
        ),
        (
            &station.aws.iot_credential_endpoint,
            previous.map(|t| &t.iot_credential_endpoint),
            recorded.map(|r| &r.iot_credential_endpoint),
            EndpointKind::CredentialProvider,
        ),
    ] {
        let endpoint = match pinned.clone().or_else(|| previous.or(recorded).cloned()) {
            Some(endpoint) => endpoint,
            None => iot
                .describe_endpoint(kind)
                .await
                .map_err(|e| preflight_error("DescribeEndpoint", "iot:DescribeEndpoint", e))?,
        };
        endpoints.push(endpoint);
    }
    let [data, credentials]: [String; 2] = endpoints.try_into().expect("two endpoints");
    Ok((data, credentials))
}
