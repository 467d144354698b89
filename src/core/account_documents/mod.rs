//! The AWS account setup from AWS's fleet-provisioning guide, as desired state: the IAM
//! and IoT policy documents, the provisioning template body, and how two documents are
//! compared (as JSON values, not text). Pure: names in, documents out.

use serde_json::{json, Value};

use crate::core::station_config::CorePolicyVariant;

/// The managed policy AWS provides for fleet-provisioning roles.
pub const THINGS_REGISTRATION_POLICY_ARN: &str =
    "arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration";

/// Where the resources live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub partition: String,
    pub account_id: String,
    pub region: String,
}

impl Account {
    /// Reads partition and account from a global ARN such as the caller identity's
    /// (`arn:PARTITION:iam::ACCOUNT:...` or `arn:PARTITION:sts::ACCOUNT:...`).
    pub fn from_arn(arn: &str, region: &str) -> Option<Self> {
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(partition), Some("iam" | "sts"), Some(""), Some(account)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        (account.len() == 12 && account.chars().all(|c| c.is_ascii_digit())).then(|| Self {
            partition: partition.into(),
            account_id: account.into(),
            region: region.into(),
        })
    }

    /// ARN of an IAM resource (`role/NAME`, `policy/NAME`).
    pub fn iam_arn(&self, resource: &str) -> String {
        format!("arn:{}:iam::{}:{resource}", self.partition, self.account_id)
    }

    /// ARN of an IoT resource in this region.
    pub fn iot_arn(&self, resource: &str) -> String {
        format!(
            "arn:{}:iot:{}:{}:{resource}",
            self.partition, self.region, self.account_id
        )
    }

    /// ARN of a Lambda function in this region.
    pub fn function_arn(&self, name: &str) -> String {
        format!(
            "arn:{}:lambda:{}:{}:function:{name}",
            self.partition, self.region, self.account_id
        )
    }

    /// ARN of a role alias.
    pub fn role_alias_arn(&self, alias: &str) -> String {
        self.iot_arn(&format!("rolealias/{alias}"))
    }
}

fn trust_policy(service: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole"
        }]
    })
}

/// Trust policy of the token exchange role: the AWS IoT credentials provider assumes it.
pub fn token_exchange_trust_policy() -> Value {
    trust_policy("credentials.iot.amazonaws.com")
}

/// Trust policy of the fleet-provisioning role: AWS IoT assumes it to create things.
pub fn fleet_provisioning_trust_policy() -> Value {
    trust_policy("iot.amazonaws.com")
}

/// Trust policy of the claim-binding hook's execution role: AWS Lambda assumes it.
pub fn lambda_trust_policy() -> Value {
    trust_policy("lambda.amazonaws.com")
}

/// The claim-binding hook's own permissions: read any certificate's description (to see the
/// claim's status and subject), list the policies attached to a certificate (to see that it
/// is a claim) and write its function's logs. Nothing else. ListAttachedPolicies is granted
/// on `*`: it only reads policy names, and a certificate-scoped grant would silently deny
/// every device if AWS does not authorize that call per certificate.
pub fn claim_binding_access_policy(account: &Account, function: &str) -> Value {
    let p = &account.partition;
    let (r, a) = (&account.region, &account.account_id);
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:DescribeCertificate", "Resource": account.iot_arn("cert/*")},
            {"Effect": "Allow", "Action": "iot:ListAttachedPolicies", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": format!("arn:{p}:logs:{r}:{a}:log-group:/aws/lambda/{function}*")
            }
        ]
    })
}

/// The claim-binding hook's code (Python, standard library and boto3), deployed by setup.
pub const CLAIM_BINDING_SOURCE: &str = include_str!("../../hooks/claim_binding.py");
/// Its handler and runtime.
pub const CLAIM_BINDING_HANDLER: &str = "claim_binding.handler";
pub const CLAIM_BINDING_RUNTIME: &str = "python3.12";
/// AWS IoT waits at most 5 seconds (wall clock, a cold start's init included) for a hook.
/// The hook makes its AWS client at import (Lambda's init phase, outside the timeout) and
/// answers by its own 3-second decision deadline; the 4-second timeout only ends an
/// invocation that is stuck past it, before AWS IoT has stopped waiting.
pub const CLAIM_BINDING_TIMEOUT_SECONDS: i32 = 4;
/// Lambda gives CPU in proportion to memory (one vCPU at 1,769 MB): 512 MB has four times
/// the CPU of the default 128 MB for the CPU-bound cold start (importing boto3, making the
/// client), for a function that runs a few hundred milliseconds per device.
pub const CLAIM_BINDING_MEMORY_MB: i32 = 512;
/// The hook's environment variable naming the claim policies: a certificate carrying one of
/// them is a claim (see `src/hooks/claim_binding.py`).
pub const CLAIM_POLICIES_VARIABLE: &str = "CLAIMFAB_CLAIM_POLICIES";

/// The hook's deployment package: a zip with the one module at its root, byte-for-byte the
/// same on every run (fixed timestamp), so its SHA-256 tells whether the deployed code is
/// this one.
pub fn claim_binding_package() -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    zip.start_file("claim_binding.py", options)
        .and_then(|()| {
            zip.write_all(CLAIM_BINDING_SOURCE.as_bytes())
                .map_err(Into::into)
        })
        .and_then(|()| zip.finish())
        .expect("an in-memory zip of one file always writes")
        .into_inner()
}

/// Lambda's `CodeSha256` of a package: base64 of its SHA-256.
pub fn lambda_code_sha256(package: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(package))
}

/// Access policy of the token exchange role (the guide's), plus read access to the
/// component-artifact bucket when one is named.
pub fn token_exchange_access_policy(partition: &str, artifact_bucket: Option<&str>) -> Value {
    let mut statements = vec![json!({
        "Effect": "Allow",
        "Action": [
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "logs:DescribeLogStreams",
            "s3:GetBucketLocation"
        ],
        "Resource": "*"
    })];
    if let Some(bucket) = artifact_bucket {
        statements.push(json!({
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": format!("arn:{partition}:s3:::{bucket}/*")
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The Greengrass core devices' IoT policy: the guide's (all topics, `greengrass:*`), or a
/// least-privilege variant scoped to each device's own thing name (after AWS's "Minimal AWS
/// IoT policy for AWS IoT Greengrass V2 core devices").
pub fn core_device_policy(
    account: &Account,
    variant: CorePolicyVariant,
    role_alias: &str,
) -> Value {
    let statements = match variant {
        CorePolicyVariant::Guide => vec![
            allow(
                json!([
                    "iot:Publish",
                    "iot:Subscribe",
                    "iot:Receive",
                    "iot:Connect",
                    "greengrass:*"
                ]),
                json!(["*"]),
            ),
            assume_role_statement(account, role_alias),
        ],
        CorePolicyVariant::LeastPrivilege => least_privilege_statements(account, role_alias),
    };
    let mut statements = statements;
    statements.push(deny_provisioning_api(account));
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The fleet-provisioning MQTT API, which only claims need: a provisioned core device that
/// could call it could mint certificates and register things with them. No Greengrass
/// nucleus (Java, lite) nor AWS-provided component uses these topics with the device's own
/// certificate; an explicit Deny wins over any Allow, also one added to the policy later.
pub const PROVISIONING_API_TOPICS: [&str; 2] =
    ["$aws/certificates/*", "$aws/provisioning-templates/*"];

/// `topic*/` names both the `topic/` resources of Publish and Receive and the
/// `topicfilter/` resources of Subscribe, in half the characters: the least-privilege policy
/// is made per device within AWS IoT's 2048-character limit.
fn deny_provisioning_api(account: &Account) -> Value {
    let resources: Vec<String> = PROVISIONING_API_TOPICS
        .iter()
        .map(|topic| account.iot_arn(&format!("topic*/{topic}")))
        .collect();
    json!({
        "Effect": "Deny",
        "Action": ["iot:Publish", "iot:Receive", "iot:Subscribe"],
        "Resource": resources
    })
}

/// Lets a core device get AWS credentials through the role alias.
fn assume_role_statement(account: &Account, role_alias: &str) -> Value {
    json!({
        "Effect": "Allow",
        "Action": "iot:AssumeRoleWithCertificate",
        "Resource": account.role_alias_arn(role_alias)
    })
}

/// The least-privilege core policy's statements. Core devices do not support thing policy
/// variables, so they name the thing itself: THING_NAME, which the template fills in per
/// device (see `per_device_policy`).
fn least_privilege_statements(account: &Account, role_alias: &str) -> Vec<Value> {
    let thing = THING_NAME;
    let arns = |resources: Vec<String>| -> Vec<String> {
        resources.iter().map(|r| account.iot_arn(r)).collect()
    };
    let topics = |kind: &str, families: &[&str]| -> Vec<String> {
        arns(
            families
                .iter()
                .map(|family| format!("{kind}/$aws/things/{thing}/{family}"))
                .collect(),
        )
    };
    let all = [
        "greengrass/health/json",
        "greengrassv2/health/json",
        "jobs/*",
        "shadow/*",
    ];
    vec![
        // The nucleus connects as the thing name, and as `NAME#N` for further connections;
        // a bare `NAME*` would also admit longer names (SN1 would match SN10).
        allow(
            "iot:Connect",
            arns(vec![format!("client/{thing}"), format!("client/{thing}#*")]),
        ),
        allow(json!(["iot:Receive", "iot:Publish"]), topics("topic", &all)),
        allow(
            "iot:Subscribe",
            topics("topicfilter", &["jobs/*", "shadow/*"]),
        ),
        allow(
            json!([
                "iot:GetThingShadow",
                "iot:UpdateThingShadow",
                "iot:DeleteThingShadow"
            ]),
            arns(vec![format!("thing/{thing}"), format!("thing/{thing}/*")]),
        ),
        assume_role_statement(account, role_alias),
        allow(
            json!([
                "greengrass:GetComponentVersionArtifact",
                "greengrass:ResolveComponentCandidates",
                "greengrass:GetDeploymentConfiguration",
                "greengrass:ListThingGroupsForCoreDevice"
            ]),
            "*",
        ),
    ]
}

/// An Allow statement.
fn allow(action: impl Into<Value>, resource: impl Into<Value>) -> Value {
    json!({"Effect": "Allow", "Action": action.into(), "Resource": resource.into()})
}

/// Stands for the device's own thing name in a per-device policy document.
const THING_NAME: &str = "__CLAIMFAB_THING_NAME__";

/// The core devices' policy as the template attaches it.
pub enum CorePolicy<'a> {
    /// One named policy for the whole fleet (the guide's way).
    Named(&'a str),
    /// A policy document per device, with the device's thing name filled in by the template.
    PerDevice(Value),
}

/// A template value that yields `document` as JSON text with every THING_NAME replaced by
/// the device's ThingName parameter (`Fn::Join` over `Ref: ThingName`).
fn per_device_policy(document: &Value) -> Value {
    let text = document.to_string();
    let mut parts = Vec::new();
    for (i, piece) in text.split(THING_NAME).enumerate() {
        if i > 0 {
            parts.push(json!({"Ref": "ThingName"}));
        }
        parts.push(json!(piece));
    }
    json!({"Fn::Join": ["", parts]})
}

/// What the template makes of each device besides its thing name.
pub struct TemplateShape<'a> {
    pub core_policy: CorePolicy<'a>,
    /// The station's thing group, written into the template: a device cannot choose it.
    pub thing_group: Option<&'a str>,
    /// Attach the device certificate to its thing exclusively (`EXCLUSIVE_THING`).
    pub exclusive_thing: bool,
}

/// The provisioning template body, shaped as in the guide, with nothing the device may choose
/// but its thing name: ThingName and the certificate id as parameters; a thing (in the
/// station's group, named in the template, unlike the guide's ThingGroupName parameter that
/// would let a device join any group), the core policy, and the certificate, active and
/// attached to its thing exclusively (as AWS recommends, and as nucleus lite's own template
/// does).
pub fn provisioning_template_body(shape: &TemplateShape<'_>) -> Value {
    let policy_properties = match &shape.core_policy {
        CorePolicy::Named(name) => json!({"PolicyName": name}),
        CorePolicy::PerDevice(document) => json!({"PolicyDocument": per_device_policy(document)}),
    };
    let parameters = json!({
        "ThingName": {"Type": "String"},
        "AWS::IoT::Certificate::Id": {"Type": "String"}
    });
    let mut thing_properties = json!({
        "AttributePayload": {},
        "ThingName": {"Ref": "ThingName"}
    });
    if let Some(group) = shape.thing_group {
        thing_properties["ThingGroups"] = json!([group]);
    }
    let mut certificate_properties = json!({
        "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
        "Status": "Active"
    });
    if shape.exclusive_thing {
        certificate_properties["ThingPrincipalType"] = json!("EXCLUSIVE_THING");
    }
    json!({
        "Parameters": parameters,
        "Resources": {
            "MyThing": {
                "OverrideSettings": {
                    "AttributePayload": "REPLACE",
                    "ThingGroups": "REPLACE",
                    "ThingTypeName": "REPLACE"
                },
                "Properties": thing_properties,
                "Type": "AWS::IoT::Thing"
            },
            "MyPolicy": {
                "Properties": policy_properties,
                "Type": "AWS::IoT::Policy"
            },
            "MyCertificate": {
                "Properties": certificate_properties,
                "Type": "AWS::IoT::Certificate"
            }
        }
    })
}

/// The claim policy, scoped to one template in one region and account. Unlike the guide's
/// example it also allows the create-from-csr topics (nucleus lite and CSR-based devices use
/// them), and Subscribe names `topicfilter/` resources.
pub fn claim_policy(account: &Account, template: &str) -> Value {
    let topics = |kind: &str| -> Vec<String> {
        [
            "$aws/certificates/create/*".to_string(),
            "$aws/certificates/create-from-csr/*".to_string(),
            format!("$aws/provisioning-templates/{template}/provision/*"),
        ]
        .iter()
        .map(|t| account.iot_arn(&format!("{kind}/{t}")))
        .collect()
    };
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": account.iot_arn("client/*")},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": topics("topic")},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": topics("topicfilter")}
        ]
    })
}

/// The statement id of the permission that lets AWS IoT invoke the pre-provisioning hook
/// for `template` (Lambda statement ids: letters, digits, '-' and '_', at most 100).
pub fn hook_permission_id(template: &str) -> String {
    let safe: String = template
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("claimfab-iot-provisioning-{safe}")
        .chars()
        .take(100)
        .collect()
}

/// How the hook function's resource policy stands against the permission setup wants: AWS
/// IoT may invoke it, on behalf of this account only. The condition is on `AWS:SourceAccount`
/// alone, as in AWS's own templates (nucleus lite's fleet-provisioning CloudFormation): AWS
/// documents no source ARN for pre-provisioning hook invocations, and a condition on one
/// that AWS IoT does not send would refuse every device.
#[derive(Debug, PartialEq, Eq)]
pub enum HookPermission {
    Missing,
    Same,
    /// claimfab's statement is there but says something else.
    Differs,
}

/// The condition of the hook's permission.
pub fn hook_permission_condition(account: &str) -> Value {
    json!({"StringEquals": {"AWS:SourceAccount": account}})
}

/// Reads the function policy (Lambda GetPolicy's JSON) for the statement named `sid`.
pub fn hook_permission(policy: Option<&str>, sid: &str, account: &str) -> HookPermission {
    let statement = policy
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .and_then(|doc| doc.get("Statement").cloned())
        .and_then(|list| match list {
            Value::Array(items) => items.into_iter().find(|s| s["Sid"] == sid),
            _ => None,
        });
    let Some(statement) = statement else {
        return HookPermission::Missing;
    };
    let same = statement["Effect"] == "Allow"
        && canonical(&statement["Action"]) == json!("lambda:InvokeFunction")
        && canonical(&statement["Principal"]["Service"]) == json!("iot.amazonaws.com")
        && canonical(&statement["Condition"]) == canonical(&hook_permission_condition(account));
    if same {
        HookPermission::Same
    } else {
        HookPermission::Differs
    }
}

/// Puts a policy-like document in a canonical form: a one-element list and its element are
/// the same, lists of strings are sets, and object key order does not matter.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
        }
        Value::Array(items) if items.len() == 1 && !items[0].is_object() => canonical(&items[0]),
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(canonical).collect();
            if items.iter().all(Value::is_string) {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                items.dedup();
            }
            Value::Array(items)
        }
        other => other.clone(),
    }
}

/// Whether a document read back from AWS (JSON text, possibly URL-encoded as IAM returns
/// it) says the same as the desired one.
pub fn same_document(actual: &str, desired: &Value) -> bool {
    let decoded = percent_encoding::percent_decode_str(actual).decode_utf8_lossy();
    let parsed: Option<Value> = serde_json::from_str(actual)
        .ok()
        .or_else(|| serde_json::from_str(&decoded).ok());
    parsed.is_some_and(|p| canonical(&p) == canonical(desired))
}

#[cfg(test)]
mod tests;
