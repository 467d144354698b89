//! Batch preflight reasoning: what the devices of a batch will ask of AWS IoT when they
//! provision (the MQTT client id and topics their nucleus uses, the template parameters their
//! config sends), checked against the provisioning template and the claim policy as they are
//! in the account, before anything is created. Each problem is one line naming the template,
//! policy, parameter or key at fault and the fix.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::core::iot_policy::{
    policy_size, substitute, Decision, PolicyDocument, MAX_POLICY_CHARS,
};
use crate::core::station::Nucleus;

/// A provisioning template as DescribeProvisioningTemplate returns it.
pub struct TemplateView<'a> {
    pub name: &'a str,
    pub arn: &'a str,
    pub enabled: bool,
    pub body: &'a str,
}

/// Parameters AWS IoT itself supplies to a fleet-provisioning template from the certificate.
const SUPPLIED_BY_AWS: &str = "AWS::IoT::Certificate::";

/// A certificate id as long as AWS's (64 hex digits), for sizing per-device policies.
const SAMPLE_CERTIFICATE_ID: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// A client id like the ones devices provision with: the Java plugin's default `deviceId` and
/// nucleus lite's `fleet-provisioning` are both a random UUID per run.
const SAMPLE_CLIENT_ID: &str = "3f1c2a9e-5b7d-4e21-9a0c-8d6e4f2b1a37";

/// Checks that the template exists in a usable state and fits the batch: it is enabled, the
/// parameters the bundles send are exactly the ones it reads (none it needs is missing, none
/// sent is ignored), and each per-device policy it makes stays within AWS IoT's size limit for
/// the batch's longest thing name. `sent` are the parameters of the device with that name.
pub fn check_template(
    template: &TemplateView<'_>,
    sent: &BTreeMap<&str, &str>,
    thing_name: &str,
) -> Result<(), String> {
    let name = template.name;
    if !template.enabled {
        return Err(format!(
            "provisioning template {name:?} is disabled: devices would be refused; enable it (`claimfab setup --station FILE --update-drifted`, or UpdateProvisioningTemplate --enabled)"
        ));
    }
    let body: Value = serde_json::from_str(template.body).map_err(|e| {
        format!(
            "provisioning template {name:?} has a body that is not JSON ({e}); fix the template"
        )
    })?;
    let declared = declared_parameters(&body);
    for (param, has_default) in &declared {
        if !has_default && !param.starts_with(SUPPLIED_BY_AWS) && !sent.contains_key(param.as_str())
        {
            return Err(format!(
                "provisioning template {name:?} requires parameter {param:?} (it has no Default) but the bundles do not send it: every device would be refused; {}",
                fix_for_missing(param)
            ));
        }
    }
    for param in sent.keys() {
        if !declared.contains_key(*param) {
            return Err(format!(
                "provisioning template {name:?} has no parameter {param:?} that the bundles send: devices would be provisioned without it; update the template (`claimfab setup --station FILE --update-drifted`) or {}",
                fix_for_unused(param)
            ));
        }
    }
    check_policy_sizes(name, &body, sent, thing_name)
}

fn fix_for_missing(param: &str) -> String {
    match param {
        "ThingGroupName" => {
            "set provisioning.thing_group in the station file, or give the parameter a Default"
                .into()
        }
        _ => format!("give {param:?} a Default in the template, or remove it"),
    }
}

fn fix_for_unused(param: &str) -> String {
    match param {
        "ThingGroupName" => "remove provisioning.thing_group from the station file".into(),
        _ => format!("stop sending {param:?}"),
    }
}

/// Parameter name -> whether it has a Default.
fn declared_parameters(body: &Value) -> BTreeMap<String, bool> {
    body.get("Parameters")
        .and_then(Value::as_object)
        .map(|params| {
            params
                .iter()
                .map(|(k, v)| (k.clone(), v.get("Default").is_some()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every `AWS::IoT::Policy` resource with an inline `PolicyDocument` must fit AWS IoT's limit
/// for `thing_name`; the error says how long a thing name may be.
fn check_policy_sizes(
    template: &str,
    body: &Value,
    sent: &BTreeMap<&str, &str>,
    thing_name: &str,
) -> Result<(), String> {
    let Some(resources) = body.get("Resources").and_then(Value::as_object) else {
        return Ok(());
    };
    for resource in resources.values() {
        if resource.get("Type").and_then(Value::as_str) != Some("AWS::IoT::Policy") {
            continue;
        }
        let Some(document) = resource.pointer("/Properties/PolicyDocument") else {
            continue;
        };
        let size_for = |name: &str| {
            let mut params: BTreeMap<&str, &str> = sent.clone();
            params.insert("ThingName", name);
            params.insert("AWS::IoT::Certificate::Id", SAMPLE_CERTIFICATE_ID);
            evaluate(document, &params).map(|text| policy_size(&text))
        };
        // Only what this module can evaluate is sized; other intrinsic functions are left to
        // AWS (the device would report a failure, as before).
        let (Some(size), Some(base)) = (size_for(thing_name), size_for("")) else {
            continue;
        };
        if size > MAX_POLICY_CHARS {
            let per_char = (size - base) / thing_name.chars().count().max(1);
            let longest = match per_char {
                0 => 0,
                k => MAX_POLICY_CHARS.saturating_sub(base) / k,
            };
            return Err(format!(
                "provisioning template {template:?} makes a per-device policy of {size} characters for thing name {thing_name:?} ({} characters); AWS IoT allows {MAX_POLICY_CHARS} (whitespace excluded), so RegisterThing would fail: use thing names of at most {longest} characters, or setup.core_policy_variant = \"guide\"",
                thing_name.chars().count()
            ));
        }
    }
    Ok(())
}

/// Evaluates a template value made of strings, `Ref` and `Fn::Join`/`Fn::Sub` over
/// `params`; `None` for anything else.
fn evaluate(value: &Value, params: &BTreeMap<&str, &str>) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) if map.len() == 1 => {
            let (function, args) = map.iter().next()?;
            match function.as_str() {
                "Ref" => params.get(args.as_str()?).map(|v| v.to_string()),
                "Fn::Join" => {
                    let [sep, parts] = args.as_array()?.as_slice() else {
                        return None;
                    };
                    let parts = parts
                        .as_array()?
                        .iter()
                        .map(|p| evaluate(p, params))
                        .collect::<Option<Vec<_>>>()?;
                    Some(parts.join(sep.as_str()?))
                }
                "Fn::Sub" => substitute(args.as_str()?, params),
                _ => None,
            }
        }
        // A document given as a JSON object: AWS serializes it.
        Value::Object(_) => Some(value.to_string()),
        _ => None,
    }
}

/// What a device asks of the claim policy while it provisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequests {
    pub client_id: String,
    /// (action, resource suffix after `arn:...:`), e.g. ("iot:Publish", "topic/...").
    pub requests: Vec<(&'static str, String)>,
}

/// The certificate API a nucleus uses: the Java plugin without `csrPath` (claimfab never sets
/// it) asks AWS for keys (CreateKeysAndCertificate); nucleus lite always sends a CSR.
pub fn certificate_topic(nucleus: Nucleus) -> &'static str {
    match nucleus {
        Nucleus::Java => "$aws/certificates/create/json",
        Nucleus::Lite => "$aws/certificates/create-from-csr/json",
    }
}

/// The requests a device of `nucleus` makes with its claim.
pub fn device_requests(nucleus: Nucleus, template: &str) -> DeviceRequests {
    let client_id = SAMPLE_CLIENT_ID.to_string();
    let mut requests = vec![("iot:Connect", format!("client/{client_id}"))];
    for base in [
        certificate_topic(nucleus).to_string(),
        format!("$aws/provisioning-templates/{template}/provision/json"),
    ] {
        requests.push(("iot:Publish", format!("topic/{base}")));
        for reply in ["accepted", "rejected"] {
            requests.push(("iot:Subscribe", format!("topicfilter/{base}/{reply}")));
            requests.push(("iot:Receive", format!("topic/{base}/{reply}")));
        }
    }
    DeviceRequests {
        client_id,
        requests,
    }
}

/// `arn:PARTITION:iot:REGION:ACCOUNT` of a template ARN, the prefix of every resource the
/// claim policy names.
pub fn arn_prefix(template_arn: &str) -> Option<String> {
    let parts: Vec<&str> = template_arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "iot", region, account, _] => {
            Some(format!("arn:{partition}:iot:{region}:{account}"))
        }
        _ => None,
    }
}

/// Checks that the claim policy allows every request the batch's devices make.
pub fn check_claim_policy(
    policy: &str,
    document: &str,
    prefix: &str,
    nucleus: Nucleus,
    template: &str,
) -> Result<(), String> {
    let doc = PolicyDocument::parse(document).map_err(|e| {
        format!("claim policy {policy:?} {e}; fix it or re-create it with `claimfab setup`")
    })?;
    let wanted = device_requests(nucleus, template);
    let variables = BTreeMap::from([("iot:ClientId", wanted.client_id.as_str())]);
    let mut seen = BTreeSet::new();
    for (action, resource) in &wanted.requests {
        let arn = format!("{prefix}:{resource}");
        if !seen.insert(arn.clone() + action) {
            continue;
        }
        let verdict = doc.decide(action, &arn, &variables);
        if verdict != Decision::Allowed {
            let how = if verdict == Decision::Denied {
                "denies"
            } else {
                "does not allow"
            };
            return Err(format!(
                "claim policy {policy:?} {how} {action} on {arn}, which {} devices need to provision with template {template:?}: AWS IoT would drop them; run `claimfab setup --station FILE --update-drifted` or add it to the policy",
                nucleus_name(nucleus)
            ));
        }
    }
    Ok(())
}

fn nucleus_name(nucleus: Nucleus) -> &'static str {
    match nucleus {
        Nucleus::Java => "Java-nucleus",
        Nucleus::Lite => "nucleus-lite",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::setup::{
        claim_policy, core_device_policy, provisioning_template_body, Account, CorePolicy,
    };
    use crate::core::station::CorePolicyVariant;

    const TEMPLATE_ARN: &str =
        "arn:aws:iot:us-west-2:123456789012:provisioningtemplate/GreengrassFleetProvisioningTemplate";

    fn account() -> Account {
        Account::from_arn("arn:aws:iam::123456789012:root", "us-west-2").unwrap()
    }

    fn view(body: &str) -> TemplateView<'_> {
        TemplateView {
            name: "GreengrassFleetProvisioningTemplate",
            arn: TEMPLATE_ARN,
            enabled: true,
            body,
        }
    }

    fn least_privilege_body() -> String {
        let policy = core_device_policy(
            &account(),
            CorePolicyVariant::LeastPrivilege,
            "GreengrassCoreTokenExchangeRoleAlias",
        );
        provisioning_template_body(&CorePolicy::PerDevice(policy), false).to_string()
    }

    #[test]
    fn setup_template_fits_its_batch() {
        let body = provisioning_template_body(&CorePolicy::Named("P"), true).to_string();
        let sent = BTreeMap::from([("ThingName", "SN1"), ("ThingGroupName", "G")]);
        check_template(&view(&body), &sent, "SN1").unwrap();
    }

    #[test]
    fn group_parameter_without_group_is_refused_and_the_reverse_too() {
        let with_group = provisioning_template_body(&CorePolicy::Named("P"), true).to_string();
        let only_name = BTreeMap::from([("ThingName", "SN1")]);
        let e = check_template(&view(&with_group), &only_name, "SN1").unwrap_err();
        assert!(
            e.contains("\"ThingGroupName\"") && e.contains("provisioning.thing_group"),
            "{e}"
        );

        let without_group = provisioning_template_body(&CorePolicy::Named("P"), false).to_string();
        let both = BTreeMap::from([("ThingName", "SN1"), ("ThingGroupName", "G")]);
        let e = check_template(&view(&without_group), &both, "SN1").unwrap_err();
        assert!(e.contains("has no parameter \"ThingGroupName\""), "{e}");
    }

    #[test]
    fn disabled_and_broken_templates_are_refused() {
        let body = provisioning_template_body(&CorePolicy::Named("P"), false).to_string();
        let sent = BTreeMap::from([("ThingName", "SN1")]);
        let mut v = view(&body);
        v.enabled = false;
        assert!(check_template(&v, &sent, "SN1")
            .unwrap_err()
            .contains("disabled"));
        assert!(check_template(&view("{"), &sent, "SN1")
            .unwrap_err()
            .contains("not JSON"));
    }

    #[test]
    fn least_privilege_policy_size_names_the_limit_and_the_longest_name() {
        let body = least_privilege_body();
        let sent = BTreeMap::from([("ThingName", "x")]);
        check_template(&view(&body), &sent, "SN-0001").unwrap();
        let long = "a".repeat(128);
        let e = check_template(&view(&body), &sent, &long).unwrap_err();
        assert!(e.contains("2048") && e.contains("(128 characters)"), "{e}");
        // The longest name the error names really fits, and one more character does not.
        let n: usize = e
            .split("at most ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert!(n > 40 && n < 128, "{n}");
        check_template(&view(&body), &sent, &"a".repeat(n)).unwrap();
        assert!(check_template(&view(&body), &sent, &"a".repeat(n + 1)).is_err());
    }

    #[test]
    fn setup_claim_policy_allows_both_nuclei() {
        let prefix = arn_prefix(TEMPLATE_ARN).unwrap();
        let doc = claim_policy(&account(), "GreengrassFleetProvisioningTemplate").to_string();
        for nucleus in [Nucleus::Java, Nucleus::Lite] {
            check_claim_policy(
                "C",
                &doc,
                &prefix,
                nucleus,
                "GreengrassFleetProvisioningTemplate",
            )
            .unwrap();
        }
        // Another template is not covered by this claim policy.
        let e = check_claim_policy("C", &doc, &prefix, Nucleus::Java, "Other").unwrap_err();
        assert!(
            e.contains("provisioning-templates/Other/provision/json"),
            "{e}"
        );
    }

    #[test]
    fn guide_claim_policy_fails_lite() {
        // The guide's example allows only the create topics.
        let prefix = arn_prefix(TEMPLATE_ARN).unwrap();
        let t = "GreengrassFleetProvisioningTemplate";
        let topics = |kind: &str| {
            serde_json::json!([
                format!("{prefix}:{kind}/$aws/certificates/create/*"),
                format!("{prefix}:{kind}/$aws/provisioning-templates/{t}/provision/*")
            ])
        };
        let doc = serde_json::json!({"Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": topics("topic")},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": topics("topicfilter")}
        ]})
        .to_string();
        check_claim_policy("C", &doc, &prefix, Nucleus::Java, t).unwrap();
        let e = check_claim_policy("C", &doc, &prefix, Nucleus::Lite, t).unwrap_err();
        assert!(
            e.contains("create-from-csr") && e.contains("nucleus-lite"),
            "{e}"
        );
    }

    #[test]
    fn arn_prefix_reads_template_arns() {
        assert_eq!(
            arn_prefix(TEMPLATE_ARN).as_deref(),
            Some("arn:aws:iot:us-west-2:123456789012")
        );
        assert_eq!(arn_prefix("nonsense"), None);
    }
}
