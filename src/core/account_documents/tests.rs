//! Unit tests of `account_documents`.
use super::*;

fn account() -> Account {
    Account::from_arn("arn:aws:iam::123456789012:role/R", "us-west-2").unwrap()
}

#[test]
fn account_from_arn() {
    let a = account();
    assert_eq!(
        (a.partition.as_str(), a.account_id.as_str()),
        ("aws", "123456789012")
    );
    assert!(Account::from_arn("arn:aws:iot:us-east-1:1:x", "r").is_none());
    let cn = Account::from_arn("arn:aws-cn:iam::123456789012:role/R", "cn-north-1").unwrap();
    assert_eq!(
        cn.role_alias_arn("A"),
        "arn:aws-cn:iot:cn-north-1:123456789012:rolealias/A"
    );
}

#[test]
fn claim_policy_covers_create_from_csr_and_uses_topicfilter_for_subscribe() {
    let doc = claim_policy(&account(), "T");
    let statements = doc["Statement"].as_array().unwrap();
    let publish = &statements[1]["Resource"];
    let subscribe = &statements[2]["Resource"];
    assert!(publish.as_array().unwrap().contains(&json!(
        "arn:aws:iot:us-west-2:123456789012:topic/$aws/certificates/create-from-csr/*"
    )));
    assert!(publish.as_array().unwrap().contains(&json!(
        "arn:aws:iot:us-west-2:123456789012:topic/$aws/provisioning-templates/T/provision/*"
    )));
    for r in subscribe.as_array().unwrap() {
        assert!(r.as_str().unwrap().contains(":topicfilter/$aws/"), "{r}");
    }
    assert_eq!(statements[2]["Action"], "iot:Subscribe");
}

fn shape(core_policy: CorePolicy<'_>, thing_group: Option<&'static str>) -> Value {
    provisioning_template_body(&TemplateShape {
        core_policy,
        thing_group,
        exclusive_thing: true,
    })
}

#[test]
fn template_pins_the_group_and_binds_the_certificate_to_one_thing() {
    let body = shape(CorePolicy::Named("CorePolicy"), Some("LineOne"));
    let parameters: Vec<&String> = body["Parameters"].as_object().unwrap().keys().collect();
    assert_eq!(
        parameters,
        ["AWS::IoT::Certificate::Id", "ThingName"],
        "the device chooses nothing but its thing name"
    );
    assert_eq!(
        body["Resources"]["MyPolicy"]["Properties"]["PolicyName"],
        "CorePolicy"
    );
    assert_eq!(
        body["Resources"]["MyThing"]["Properties"]["ThingGroups"],
        json!(["LineOne"])
    );
    let certificate = &body["Resources"]["MyCertificate"]["Properties"];
    assert_eq!(certificate["Status"], "Active");
    assert_eq!(certificate["ThingPrincipalType"], "EXCLUSIVE_THING");
    let no_group = shape(CorePolicy::Named("CorePolicy"), None);
    assert!(no_group["Resources"]["MyThing"]["Properties"]
        .get("ThingGroups")
        .is_none());
    let shared = provisioning_template_body(&TemplateShape {
        core_policy: CorePolicy::Named("CorePolicy"),
        thing_group: None,
        exclusive_thing: false,
    });
    assert!(shared["Resources"]["MyCertificate"]["Properties"]
        .get("ThingPrincipalType")
        .is_none());
}

#[test]
fn core_policies_deny_the_provisioning_api() {
    use crate::core::iot_policy::{Decision, PolicyDocument};
    let arn = |r: &str| format!("arn:aws:iot:us-west-2:123456789012:{r}");
    for variant in [CorePolicyVariant::Guide, CorePolicyVariant::LeastPrivilege] {
        let text = core_device_policy(&account(), variant, "Alias")
            .to_string()
            .replace(THING_NAME, "gg-7");
        let doc = PolicyDocument::parse(&text).unwrap();
        let none = Default::default();
        for (action, resource) in [
            (
                "iot:Publish",
                "topic/$aws/certificates/create-from-csr/json",
            ),
            ("iot:Publish", "topic/$aws/certificates/create/json"),
            (
                "iot:Subscribe",
                "topicfilter/$aws/certificates/create/json/+",
            ),
            (
                "iot:Receive",
                "topic/$aws/certificates/create/json/accepted",
            ),
            (
                "iot:Publish",
                "topic/$aws/provisioning-templates/T/provision/json",
            ),
            (
                "iot:Subscribe",
                "topicfilter/$aws/provisioning-templates/T/provision/json/accepted",
            ),
        ] {
            assert_eq!(
                doc.decide(action, &arn(resource), &none),
                Decision::Denied,
                "{variant:?}: {action} {resource}"
            );
        }
        // The device's own shadow stays allowed.
        let shadow = arn("topic/$aws/things/gg-7/shadow/update");
        assert_eq!(
            doc.decide("iot:Publish", &shadow, &none),
            Decision::Allowed,
            "{variant:?}"
        );
    }
}

#[test]
fn core_policy_variants_allow_the_role_alias() {
    for variant in [CorePolicyVariant::Guide, CorePolicyVariant::LeastPrivilege] {
        let doc = core_device_policy(&account(), variant, "Alias");
        let text = doc.to_string();
        assert!(text.contains("iot:AssumeRoleWithCertificate"));
        assert!(text.contains("arn:aws:iot:us-west-2:123456789012:rolealias/Alias"));
    }
}

#[test]
fn least_privilege_is_a_per_device_policy_in_the_template() {
    let doc = core_device_policy(&account(), CorePolicyVariant::LeastPrivilege, "A");
    let body = shape(CorePolicy::PerDevice(doc), Some("LineOne"));
    let join = &body["Resources"]["MyPolicy"]["Properties"]["PolicyDocument"]["Fn::Join"];
    // Resolve the template function the way AWS IoT would for thing "gg-7".
    let text: String = join[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            if p.is_string() {
                p.as_str().unwrap().to_string()
            } else {
                assert_eq!(p["Ref"], "ThingName");
                "gg-7".to_string()
            }
        })
        .collect();
    let policy: Value = serde_json::from_str(&text).unwrap();
    assert!(
        !text.contains("${iot:"),
        "no thing policy variables: {text}"
    );
    let statements = policy["Statement"].as_array().unwrap();
    // The device's own client ids and thing only: gg-7 must not admit gg-70.
    let doc = crate::core::iot_policy::PolicyDocument::parse(&text).unwrap();
    let none = Default::default();
    let arn = |r: &str| format!("arn:aws:iot:us-west-2:123456789012:{r}");
    for (action, resource, allowed) in [
        ("iot:Connect", "client/gg-7", true),
        ("iot:Connect", "client/gg-7#2", true),
        ("iot:Connect", "client/gg-70", false),
        ("iot:GetThingShadow", "thing/gg-7", true),
        ("iot:GetThingShadow", "thing/gg-70", false),
        ("iot:Publish", "topic/$aws/things/gg-7/shadow/update", true),
        (
            "iot:Publish",
            "topic/$aws/things/gg-70/shadow/update",
            false,
        ),
    ] {
        let decision = doc.decide(action, &arn(resource), &none);
        assert_eq!(
            decision == crate::core::iot_policy::Decision::Allowed,
            allowed,
            "{action} {resource}"
        );
    }
    let wildcard: Vec<&Value> = statements.iter().filter(|s| s["Resource"] == "*").collect();
    assert_eq!(
        wildcard.len(),
        1,
        "only the Greengrass data-plane calls are on *"
    );
    assert!(wildcard[0]["Action"][0]
        .as_str()
        .unwrap()
        .starts_with("greengrass:"));
    assert!(!wildcard[0]["Action"].to_string().contains("greengrass:*"));
}

#[test]
fn hook_permission_is_read_from_the_function_policy() {
    let sid = hook_permission_id("T");
    assert_eq!(sid, "claimfab-iot-provisioning-T");
    assert_eq!(
        hook_permission_id("a.b").len(),
        "claimfab-iot-provisioning-a-b".len()
    );
    let policy = |condition: Value| {
        json!({"Version": "2012-10-17", "Statement": [{
            "Sid": sid, "Effect": "Allow", "Action": "lambda:InvokeFunction",
            "Principal": {"Service": "iot.amazonaws.com"},
            "Resource": "arn:aws:lambda:us-west-2:123456789012:function:hook",
            "Condition": condition}]})
        .to_string()
    };
    let account = "123456789012";
    let same = policy(hook_permission_condition(account));
    assert_eq!(
        hook_permission(Some(&same), &sid, account),
        HookPermission::Same
    );
    let other = policy(hook_permission_condition("999999999999"));
    assert_eq!(
        hook_permission(Some(&other), &sid, account),
        HookPermission::Differs
    );
    // claimfab's earlier statement also required the template as source ARN, which AWS
    // IoT is not documented to send: it must be replaced.
    let with_source_arn = policy(json!({
        "ArnLike": {"AWS:SourceArn": "arn:aws:iot:us-west-2:123456789012:provisioningtemplate/T"},
        "StringEquals": {"AWS:SourceAccount": account}
    }));
    assert_eq!(
        hook_permission(Some(&with_source_arn), &sid, account),
        HookPermission::Differs
    );
    assert_eq!(
        hook_permission(None, &sid, account),
        HookPermission::Missing
    );
    assert_eq!(
        hook_permission(Some("not json"), &sid, account),
        HookPermission::Missing
    );
}

#[test]
fn claim_binding_package_is_stable_and_holds_the_handler() {
    let package = claim_binding_package();
    assert_eq!(package, claim_binding_package(), "same bytes every run");
    assert_eq!(lambda_code_sha256(&package).len(), 44);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(package)).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut archive.by_name("claim_binding.py").unwrap(), &mut text)
        .unwrap();
    assert!(text.contains("def handler("));
    let policy = claim_binding_access_policy(&account(), "Hook").to_string();
    assert!(
        policy.contains("arn:aws:iot:us-west-2:123456789012:cert/*"),
        "{policy}"
    );
    assert!(!policy.contains("\"iot:*\""), "{policy}");
}

#[test]
fn documents_compare_as_json_not_text() {
    let desired = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["b", "a"], "Resource": "*"}]});
    assert!(same_document(
        r#"{"Statement":[{"Resource":["*"],"Action":["a","b"],"Effect":"Allow"}],"Version":"2012-10-17"}"#,
        &desired
    ));
    let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%5B%22a%22%2C%22b%22%5D%2C%22Resource%22%3A%22%2A%22%7D%5D%7D";
    assert!(same_document(encoded, &desired), "IAM's URL-encoded form");
    assert!(!same_document(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"a","Resource":"*"}]}"#,
        &desired
    ));
    assert!(!same_document("not json", &desired));
}
