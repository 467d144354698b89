//! Unit tests of `station_config`.
use super::*;

fn parse(text: &str) -> Result<StationConfig, String> {
    StationConfig::parse(text, Path::new("line1.toml")).map_err(|e| e.to_string())
}

#[test]
fn empty_file_gives_the_guides_defaults() {
    let config = parse("").unwrap();
    assert_eq!(
        config.provisioning.claim_policy,
        "GreengrassProvisioningClaimPolicy"
    );
    assert_eq!(config.limits.create_certificate_from_csr_per_second, 15);
    assert_eq!(config.limits.attach_policy_per_second, 15);
    assert_eq!(config.keys.algorithm, KeyAlgorithm::P256);
    assert_eq!(config.greengrass.nucleus, Nucleus::Java);
}

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../../../station-config/example.toml");
    parse(text).unwrap();
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let err = parse("[limits]\nconcurrency = 4\nconcurency = 4\n").unwrap_err();
    assert!(err.starts_with("line1.toml: line 3: "), "{err}");
    assert!(err.contains("concurency"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn bad_algorithm_lists_the_allowed_values() {
    let err = parse("[keys]\nalgorithm = \"rsa\"\n").unwrap_err();
    assert!(err.contains("line 2: key `keys.algorithm`"), "{err}");
    assert!(err.contains("p256") && err.contains("p384"), "{err}");
}

#[test]
fn lite_gets_lite_default_paths() {
    let config = parse("[greengrass]\nnucleus = \"lite\"\n").unwrap();
    assert_eq!(
        config.greengrass.config_path,
        "/etc/greengrass/config.d/claimfab.yaml"
    );
    assert_eq!(
        config.greengrass.claim_certificate_path,
        "/var/lib/greengrass/claim-certs/claim.pem.crt"
    );
    let config = parse("[greengrass]\nroot_path = \"/gg\"\n").unwrap();
    assert_eq!(config.greengrass.root_ca_path, "/gg/AmazonRootCA1.pem");
}

#[test]
fn lite_config_must_be_where_lite_reads_it() {
    // A station copied from a Java one keeps the Java config path: lite never reads it.
    let err = parse(
        "[greengrass]\nnucleus = \"lite\"\nconfig_path = \"/greengrass/v2/init-config/config.yaml\"\n",
    )
    .unwrap_err();
    assert!(err.contains("greengrass.config_path"), "{err}");
    assert!(err.contains("/etc/greengrass/config.d"), "{err}");
    let err = parse("[greengrass]\nconfig_path = \"/greengrass/v2/config.YAML\"\n").unwrap_err();
    assert!(err.contains(".yaml or .yml"), "{err}");
    for ok in [
        "/etc/greengrass/config.yaml",
        "/etc/greengrass/config.d/line1.yaml",
    ] {
        let text = format!("[greengrass]\nnucleus = \"lite\"\nconfig_path = \"{ok}\"\n");
        parse(&text).unwrap();
    }
    for bad in [
        "/etc/greengrass/config.d/a/b.yaml",
        "/etc/greengrass/config.yml",
        "/etc/greengrass/config.d",
    ] {
        let text = format!("[greengrass]\nnucleus = \"lite\"\nconfig_path = \"{bad}\"\n");
        assert!(parse(&text).is_err(), "{bad}");
    }
}

#[test]
fn one_pre_provisioning_hook_at_most() {
    let err = parse("[setup]\nclaim_binding = true\npre_provisioning_hook_arn = \"arn:aws:lambda:us-east-1:123456789012:function:H\"\n").unwrap_err();
    assert!(
        err.contains("setup.claim_binding") && err.contains("keep one"),
        "{err}"
    );
    let err = parse("[setup]\nclaim_binding_function = \"a.b\"\n").unwrap_err();
    assert!(err.contains("setup.claim_binding_function"), "{err}");
}

#[test]
fn p384_is_accepted() {
    let config = parse("[keys]\nalgorithm = \"p384\"\n").unwrap();
    assert_eq!(config.keys.algorithm, KeyAlgorithm::P384);
}

#[test]
fn zero_rate_is_rejected_with_the_key() {
    let err = parse("[limits]\nattach_policy_per_second = 0\n").unwrap_err();
    assert!(err.contains("limits.attach_policy_per_second"), "{err}");
}

#[test]
fn bad_names_are_rejected() {
    for (text, key) in [
        (
            "[provisioning]\nclaim_policy = \"has space\"\n",
            "provisioning.claim_policy",
        ),
        (
            "[provisioning]\ntemplate = \"a/b\"\n",
            "provisioning.template",
        ),
        (
            "[provisioning]\nthing_name_pattern = \"dev\"\n",
            "provisioning.thing_name_pattern",
        ),
        (
            "[provisioning]\nthing_group = \"g g\"\n",
            "provisioning.thing_group",
        ),
        ("[aws]\nregion = \"moon-1\"\n", "aws.region"),
        (
            "[greengrass]\nroot_path = \"relative\"\n",
            "greengrass.root_path",
        ),
        (
            "[greengrass]\nnucleus_version = \"latest\"\n",
            "greengrass.nucleus_version",
        ),
        (
            "[greengrass]\nnucleus = \"lite\"\nnucleus_version = \"2.2.2\"\n",
            "nucleus lite before 2.3.0",
        ),
    ] {
        let err = parse(text).unwrap_err();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn colliding_device_paths_are_rejected() {
    let err = parse(
        "[greengrass]\nclaim_certificate_path = \"/x/a\"\nclaim_private_key_path = \"/x/a\"\n",
    )
    .unwrap_err();
    assert!(err.contains("each file needs its own path"), "{err}");
}

#[test]
fn the_station_section_names_the_station() {
    assert_eq!(parse("").unwrap().station, None);
    let config =
        parse("[station]\nid = \"line1-st2\"\nflash_command = \"flash.sh {bundle}\"\n").unwrap();
    let station = config.station.unwrap();
    assert_eq!(station.id, "line1-st2");
    assert_eq!(station.flash_command.as_deref(), Some("flash.sh {bundle}"));
    let err = parse("[station]\nid = \"st/1\"\n").unwrap_err();
    assert!(
        err.contains("key `station.id`") && err.contains("1 to 32"),
        "{err}"
    );
    let err = parse("[station]\nid = \"st1\"\nflash = \"x\"\n").unwrap_err();
    assert!(err.starts_with("line1.toml: line 3: "), "{err}");
    assert!(err.contains("flash"), "{err}");
    let err = parse("[station]\nflash_command = \"x\"\n").unwrap_err();
    assert!(err.contains("id"), "{err}");
    let err = parse("[station]\nid = \"st1\"\nflash_command = \" \"\n").unwrap_err();
    assert!(err.contains("station.flash_command"), "{err}");
}

#[test]
fn lite_from_2_3_0_is_served() {
    for version in ["2.3.0", "2.6.0", "3.0.0", "2.10.1"] {
        let text = format!("[greengrass]\nnucleus = \"lite\"\nnucleus_version = \"{version}\"\n");
        parse(&text).unwrap_or_else(|e| panic!("{version}: {e}"));
    }
    // A Java nucleus 2.2.2 is another product: no such rule.
    parse("[greengrass]\nnucleus_version = \"2.2.2\"\n").unwrap();
}
