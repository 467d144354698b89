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
use crate::core::station_config::Nucleus;

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
/// sent is ignored), it puts every device in the station's thing group and nowhere a device
/// could choose, and each per-device policy it makes stays within AWS IoT's size limit for
/// the batch's longest thing name. `sent` are the parameters of the device with that name.
pub fn check_template(
    template: &TemplateView<'_>,
    sent: &BTreeMap<&str, &str>,
    thing_name: &str,
    thing_group: Option<&str>,
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
    check_thing_groups(name, &body, thing_group)?;
    check_policy_sizes(name, &body, sent, thing_name)
}

fn fix_for_missing(param: &str) -> String {
    match param {
        // The guide's template takes the group from the device; claimfab's names it.
        "ThingGroupName" => "the template lets each device name its own thing group; run `claimfab setup --station FILE --update-drifted`, which writes the station's group into the template".into(),
        _ => format!("give {param:?} a Default in the template, or remove it"),
    }
}

fn fix_for_unused(param: &str) -> String {
    format!("stop sending {param:?}")
}

/// The thing groups each `AWS::IoT::Thing` of the template joins must be written in the
/// template, and be exactly the station's group: a group taken from a parameter (`Ref`, or
/// any other function of the request) would let a device join any group, and receive that
/// group's deployments.
fn check_thing_groups(template: &str, body: &Value, expected: Option<&str>) -> Result<(), String> {
    let fix = "run `claimfab setup --station FILE --update-drifted`";
    let Some(resources) = body.get("Resources").and_then(Value::as_object) else {
        return Ok(());
    };
    let things = resources
        .values()
        .filter(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::IoT::Thing"));
    for thing in things {
        let groups = match thing.pointer("/Properties/ThingGroups") {
            None => Vec::new(),
            Some(Value::Array(items)) => items.iter().map(Value::as_str).collect::<Option<_>>().ok_or_else(|| {
                format!("provisioning template {template:?} takes its devices' thing groups from what each device sends: a device could join any group and get its deployments; {fix} (it writes the station's group into the template)")
            })?,
            Some(_) => return Err(format!("provisioning template {template:?} gives ThingGroups as something other than a list of names; {fix}")),
        };
        let wanted: Vec<&str> = expected.into_iter().collect();
        if groups != wanted {
            let station = expected.map_or("none".to_string(), |g| format!("{g:?}"));
            return Err(format!(
                "provisioning template {template:?} puts devices in thing groups {groups:?}, but the station's provisioning.thing_group is {station}; {fix}, or correct the station file"
            ));
        }
    }
    Ok(())
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

/// The topic filters a device of `nucleus` subscribes to for the answers to a request on
/// `base`, from the nuclei's sources:
/// - the Java plugin (aws-greengrass-fleet-provisioning-by-claim 1.2.2, through the device
///   SDK's IotIdentityClient): `base/accepted` and `base/rejected`, each SUBACKed before it
///   publishes;
/// - nucleus lite 2.3 and later: none. Its fleet provisioning registers `base/+` with iotcored
///   as a "virtual" subscription (`ggl_aws_iot_call(..., true, ...)` in cloud_request.c;
///   iotcored's `rpc_subscribe` sends no SUBSCRIBE then) and reads the answers AWS IoT returns
///   "through the same MQTT connection used to publish the API request". (iotcored would send
///   the filter after a reconnect in the middle of a call, but the request is not sent again
///   then, so the call times out whatever the policy says.)
fn answer_filters(nucleus: Nucleus, base: &str) -> Vec<String> {
    match nucleus {
        Nucleus::Java => vec![format!("{base}/accepted"), format!("{base}/rejected")],
        Nucleus::Lite => Vec::new(),
    }
}

/// The requests a device of `nucleus` makes with its claim. Its client id is a random UUID
/// (the Java plugin's default `deviceId`, lite's `fleet-provisioning` from 2.2.1 on).
pub fn device_requests(nucleus: Nucleus, template: &str) -> DeviceRequests {
    let client_id = SAMPLE_CLIENT_ID.to_string();
    let mut requests = vec![("iot:Connect", format!("client/{client_id}"))];
    for base in [
        certificate_topic(nucleus).to_string(),
        format!("$aws/provisioning-templates/{template}/provision/json"),
    ] {
        requests.push(("iot:Publish", format!("topic/{base}")));
        for filter in answer_filters(nucleus, &base) {
            requests.push(("iot:Subscribe", format!("topicfilter/{filter}")));
        }
        for reply in ["accepted", "rejected"] {
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
    use crate::core::account_documents::{
        claim_policy, core_device_policy, provisioning_template_body, Account, CorePolicy,
        TemplateShape,
    };
    use crate::core::station_config::CorePolicyVariant;

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

    fn body(core_policy: CorePolicy<'_>, thing_group: Option<&str>) -> String {
        provisioning_template_body(&TemplateShape {
            core_policy,
            thing_group,
            exclusive_thing: true,
        })
        .to_string()
    }

    fn least_privilege_body() -> String {
        let policy = core_device_policy(
            &account(),
            CorePolicyVariant::LeastPrivilege,
            "GreengrassCoreTokenExchangeRoleAlias",
        );
        body(CorePolicy::PerDevice(policy), None)
    }

    #[test]
    fn setup_template_fits_its_batch() {
        let body = body(CorePolicy::Named("P"), Some("G"));
        let sent = BTreeMap::from([("ThingName", "SN1")]);
        check_template(&view(&body), &sent, "SN1", Some("G")).unwrap();
    }

    /// The guide's template: the thing group is a parameter the device sends.
    fn guide_template_with_group_parameter() -> String {
        serde_json::json!({
            "Parameters": {"ThingName": {"Type": "String"}, "ThingGroupName": {"Type": "String"},
                           "AWS::IoT::Certificate::Id": {"Type": "String"}},
            "Resources": {"MyThing": {"Type": "AWS::IoT::Thing", "Properties": {
                "ThingName": {"Ref": "ThingName"}, "ThingGroups": [{"Ref": "ThingGroupName"}]}}}
        })
        .to_string()
    }

    #[test]
    fn a_group_the_device_chooses_is_refused() {
        let guide = guide_template_with_group_parameter();
        let only_name = BTreeMap::from([("ThingName", "SN1")]);
        let e = check_template(&view(&guide), &only_name, "SN1", Some("G")).unwrap_err();
        assert!(
            e.contains("\"ThingGroupName\"") && e.contains("--update-drifted"),
            "{e}"
        );
        // Even with a Default, the device could send another group.
        let defaulted = guide.replace(
            r#""ThingGroupName":{"Type":"String"}"#,
            r#""ThingGroupName":{"Type":"String","Default":"G"}"#,
        );
        assert_ne!(defaulted, guide);
        let e = check_template(&view(&defaulted), &only_name, "SN1", Some("G")).unwrap_err();
        assert!(e.contains("could join any group"), "{e}");
    }

    #[test]
    fn the_templates_group_must_be_the_stations() {
        let sent = BTreeMap::from([("ThingName", "SN1")]);
        let other = body(CorePolicy::Named("P"), Some("Other"));
        let e = check_template(&view(&other), &sent, "SN1", Some("G")).unwrap_err();
        assert!(e.contains("[\"Other\"]") && e.contains("\"G\""), "{e}");
        let none = body(CorePolicy::Named("P"), None);
        let e = check_template(&view(&none), &sent, "SN1", Some("G")).unwrap_err();
        assert!(e.contains("thing groups []"), "{e}");
        check_template(&view(&none), &sent, "SN1", None).unwrap();
        let e = check_template(&view(&other), &sent, "SN1", None).unwrap_err();
        assert!(e.contains("is none"), "{e}");
    }

    #[test]
    fn a_parameter_sent_but_unused_is_refused() {
        let without_group = body(CorePolicy::Named("P"), None);
        let both = BTreeMap::from([("ThingName", "SN1"), ("Extra", "G")]);
        let e = check_template(&view(&without_group), &both, "SN1", None).unwrap_err();
        assert!(e.contains("has no parameter \"Extra\""), "{e}");
    }

    #[test]
    fn disabled_and_broken_templates_are_refused() {
        let body = body(CorePolicy::Named("P"), None);
        let sent = BTreeMap::from([("ThingName", "SN1")]);
        let mut v = view(&body);
        v.enabled = false;
        assert!(check_template(&v, &sent, "SN1", None)
            .unwrap_err()
            .contains("disabled"));
        assert!(check_template(&view("{"), &sent, "SN1", None)
            .unwrap_err()
            .contains("not JSON"));
    }

    #[test]
    fn least_privilege_policy_size_names_the_limit_and_the_longest_name() {
        let body = least_privilege_body();
        let sent = BTreeMap::from([("ThingName", "x")]);
        check_template(&view(&body), &sent, "SN-0001", None).unwrap();
        let long = "a".repeat(128);
        let e = check_template(&view(&body), &sent, &long, None).unwrap_err();
        assert!(e.contains("2048") && e.contains("(128 characters)"), "{e}");
        // The longest name the error names really fits, and one more character does not.
        let n: usize = e
            .split("at most ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert!(n > 40 && n < 128, "{n}");
        check_template(&view(&body), &sent, &"a".repeat(n), None).unwrap();
        assert!(check_template(&view(&body), &sent, &"a".repeat(n + 1), None).is_err());
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

    /// A claim policy with Publish and Receive only on the exact topics and no Subscribe at
    /// all: enough for nucleus lite (2.3 and later never subscribes), not for the Java plugin.
    #[test]
    fn a_policy_without_subscribe_serves_lite_only() {
        let prefix = arn_prefix(TEMPLATE_ARN).unwrap();
        let t = "GreengrassFleetProvisioningTemplate";
        let bases = [
            "$aws/certificates/create/json".to_string(),
            "$aws/certificates/create-from-csr/json".to_string(),
            format!("$aws/provisioning-templates/{t}/provision/json"),
        ];
        let answers: Vec<String> = bases
            .iter()
            .flat_map(|b| ["accepted", "rejected"].map(|r| format!("{prefix}:topic/{b}/{r}")))
            .collect();
        let requests: Vec<String> = bases
            .iter()
            .map(|b| format!("{prefix}:topic/{b}"))
            .collect();
        let doc = serde_json::json!({"Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": requests},
            {"Effect": "Allow", "Action": "iot:Receive", "Resource": answers}
        ]})
        .to_string();
        check_claim_policy("C", &doc, &prefix, Nucleus::Lite, t).unwrap();
        let e = check_claim_policy("C", &doc, &prefix, Nucleus::Java, t).unwrap_err();
        assert!(
            e.contains("iot:Subscribe") && e.contains("create/json/accepted"),
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
