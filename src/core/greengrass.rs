//! Rendering of the Greengrass bootstrap config each device boots with: the Java nucleus's
//! `aws.greengrass.FleetProvisioningByClaim` plugin config, or nucleus lite's
//! `aws.greengrass.fleet_provisioning` component config. Key names follow what each runtime's
//! source reads (the Java plugin ignores the pre-2025 `certPath`/`keyPath` names, so they are
//! never written).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::station_config::{GreengrassSection, Nucleus};

/// Everything a device's config needs beyond its own thing name; fixed for a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningTarget {
    pub region: String,
    pub iot_data_endpoint: String,
    pub iot_credential_endpoint: String,
    pub role_alias: String,
    pub template: String,
    pub thing_group: Option<String>,
    pub greengrass: GreengrassSection,
}

impl ProvisioningTarget {
    /// A target for unit tests: account endpoints `abc...` in us-east-1, template
    /// `Template`, role alias `Alias`, no thing group.
    #[cfg(test)]
    pub(crate) fn example(greengrass: GreengrassSection) -> Self {
        Self {
            region: "us-east-1".into(),
            iot_data_endpoint: "abc-ats.iot.us-east-1.amazonaws.com".into(),
            iot_credential_endpoint: "abc.credentials.iot.us-east-1.amazonaws.com".into(),
            role_alias: "Alias".into(),
            template: "Template".into(),
            thing_group: None,
            greengrass,
        }
    }
}

#[derive(Serialize)]
struct JavaConfig<'a> {
    services: JavaServices<'a>,
}

#[derive(Serialize)]
struct JavaServices<'a> {
    /// Only when the station pins it: the nucleus records an init config's version as its
    /// own, so a pinned version that differs from the installed nucleus is reported wrongly.
    #[serde(
        rename = "aws.greengrass.Nucleus",
        skip_serializing_if = "Option::is_none"
    )]
    nucleus: Option<NucleusVersion<'a>>,
    #[serde(rename = "aws.greengrass.FleetProvisioningByClaim")]
    plugin: Configuration<JavaPluginConfig<'a>>,
}

#[derive(Serialize)]
struct NucleusVersion<'a> {
    version: &'a str,
}

#[derive(Serialize)]
struct Configuration<T> {
    configuration: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JavaPluginConfig<'a> {
    root_path: &'a str,
    aws_region: &'a str,
    iot_data_endpoint: &'a str,
    iot_credential_endpoint: &'a str,
    iot_role_alias: &'a str,
    provisioning_template: &'a str,
    claim_certificate_path: &'a str,
    claim_certificate_private_key_path: &'a str,
    root_ca_path: &'a str,
    template_parameters: BTreeMap<&'static str, &'a str>,
}

#[derive(Serialize)]
struct LiteConfig<'a> {
    system: LiteSystem<'a>,
    services: LiteServices<'a>,
}

/// Only `rootPath`: nucleus lite provisions only while `system.certificateFilePath` is unset,
/// and fills in the certificate, key, root CA and thing name itself once provisioned.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LiteSystem<'a> {
    root_path: &'a str,
}

#[derive(Serialize)]
struct LiteServices<'a> {
    #[serde(rename = "aws.greengrass.NucleusLite")]
    nucleus: LiteNucleusService<'a>,
    #[serde(rename = "aws.greengrass.fleet_provisioning")]
    fleet_provisioning: Configuration<LiteProvisioningConfig<'a>>,
}

/// What nucleus lite's fleet-provisioning guide sets for the nucleus. The endpoints are left
/// out: `fleet-provisioning` copies them from its own section when it succeeds (the guide
/// says to leave them blank here). It never writes region and role alias, so they must be here.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LiteNucleusConfig<'a> {
    aws_region: &'a str,
    iot_role_alias: &'a str,
    run_with_default: LiteRunWithDefault<'a>,
    /// Lite's config readers take strings only.
    greengrass_data_plane_port: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LiteRunWithDefault<'a> {
    posix_user: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LiteNucleusService<'a> {
    component_type: &'static str,
    configuration: LiteNucleusConfig<'a>,
}

/// The longest subject CN OpenSSL puts in a CSR (X.520 ub-common-name).
const MAX_CSR_COMMON_NAME: usize = 64;

/// The port of the Greengrass data plane on a lite device, as lite's guide and Debian
/// package set it.
const LITE_DATA_PLANE_PORT: &str = "8443";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LiteProvisioningConfig<'a> {
    iot_data_endpoint: &'a str,
    iot_cred_endpoint: &'a str,
    root_ca_path: &'a str,
    claim_key_path: &'a str,
    claim_cert_path: &'a str,
    /// Only for thing names OpenSSL takes as a CN (at most 64 characters); for longer ones
    /// lite's own default applies (lite would otherwise send a CSR with no subject).
    #[serde(skip_serializing_if = "Option::is_none")]
    csr_common_name: Option<&'a str>,
    template_name: &'a str,
    template_params: BTreeMap<&'static str, &'a str>,
}

impl ProvisioningTarget {
    /// The template parameters a device sends when it provisions: its thing name only. The
    /// thing group is written into the template by setup, so no device can ask for another.
    pub fn template_parameters<'a>(
        &'a self,
        thing_name: &'a str,
    ) -> BTreeMap<&'static str, &'a str> {
        BTreeMap::from([("ThingName", thing_name)])
    }

    /// The bootstrap config YAML for the device named `thing_name`.
    pub fn render_config(&self, thing_name: &str) -> String {
        let g = &self.greengrass;
        let yaml = match g.nucleus {
            Nucleus::Java => serde_yaml_ng::to_string(&JavaConfig {
                services: JavaServices {
                    nucleus: g
                        .nucleus_version
                        .as_deref()
                        .map(|version| NucleusVersion { version }),
                    plugin: Configuration {
                        configuration: JavaPluginConfig {
                            root_path: &g.root_path,
                            aws_region: &self.region,
                            iot_data_endpoint: &self.iot_data_endpoint,
                            iot_credential_endpoint: &self.iot_credential_endpoint,
                            iot_role_alias: &self.role_alias,
                            provisioning_template: &self.template,
                            claim_certificate_path: &g.claim_certificate_path,
                            claim_certificate_private_key_path: &g.claim_private_key_path,
                            root_ca_path: &g.root_ca_path,
                            template_parameters: self.template_parameters(thing_name),
                        },
                    },
                },
            }),
            Nucleus::Lite => serde_yaml_ng::to_string(&LiteConfig {
                system: LiteSystem {
                    root_path: &g.root_path,
                },
                services: LiteServices {
                    nucleus: LiteNucleusService {
                        component_type: "NUCLEUS",
                        configuration: LiteNucleusConfig {
                            aws_region: &self.region,
                            iot_role_alias: &self.role_alias,
                            run_with_default: LiteRunWithDefault {
                                posix_user: &g.posix_user,
                            },
                            greengrass_data_plane_port: LITE_DATA_PLANE_PORT,
                        },
                    },
                    fleet_provisioning: Configuration {
                        configuration: LiteProvisioningConfig {
                            iot_data_endpoint: &self.iot_data_endpoint,
                            iot_cred_endpoint: &self.iot_credential_endpoint,
                            root_ca_path: &g.root_ca_path,
                            claim_key_path: &g.claim_private_key_path,
                            claim_cert_path: &g.claim_certificate_path,
                            csr_common_name: Some(thing_name)
                                .filter(|name| name.len() <= MAX_CSR_COMMON_NAME),
                            template_name: &self.template,
                            template_params: self.template_parameters(thing_name),
                        },
                    },
                },
            }),
        };
        yaml.expect("plain string maps always serialize to YAML")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml_ng::Value;

    pub(crate) fn target(nucleus: Nucleus) -> ProvisioningTarget {
        ProvisioningTarget {
            region: "us-west-2".into(),
            iot_data_endpoint: "abc-ats.iot.us-west-2.amazonaws.com".into(),
            iot_credential_endpoint: "abc.credentials.iot.us-west-2.amazonaws.com".into(),
            role_alias: "GreengrassCoreTokenExchangeRoleAlias".into(),
            template: "GreengrassFleetProvisioningTemplate".into(),
            thing_group: Some("LineOne".into()),
            greengrass: GreengrassSection::defaults_for(nucleus),
        }
    }

    fn lookup<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
        path.iter().fold(value, |v, key| {
            v.get(*key)
                .unwrap_or_else(|| panic!("missing {key} in {path:?}"))
        })
    }

    #[test]
    fn java_config_has_every_plugin_key() {
        let yaml = target(Nucleus::Java).render_config("gg-SN1");
        let doc: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert!(
            doc["services"].get("aws.greengrass.Nucleus").is_none(),
            "no nucleus version unless the station pins one: {yaml}"
        );
        let plugin = lookup(
            &doc,
            &[
                "services",
                "aws.greengrass.FleetProvisioningByClaim",
                "configuration",
            ],
        );
        for (key, want) in [
            ("rootPath", "/greengrass/v2"),
            ("awsRegion", "us-west-2"),
            ("iotDataEndpoint", "abc-ats.iot.us-west-2.amazonaws.com"),
            (
                "iotCredentialEndpoint",
                "abc.credentials.iot.us-west-2.amazonaws.com",
            ),
            ("iotRoleAlias", "GreengrassCoreTokenExchangeRoleAlias"),
            (
                "provisioningTemplate",
                "GreengrassFleetProvisioningTemplate",
            ),
            (
                "claimCertificatePath",
                "/greengrass/v2/claim-certs/claim.pem.crt",
            ),
            (
                "claimCertificatePrivateKeyPath",
                "/greengrass/v2/claim-certs/claim.private.pem.key",
            ),
            ("rootCaPath", "/greengrass/v2/AmazonRootCA1.pem"),
        ] {
            assert_eq!(lookup(plugin, &[key]), want, "{key}");
        }
        assert_eq!(
            lookup(plugin, &["templateParameters", "ThingName"]),
            "gg-SN1"
        );
        assert!(!yaml.contains("certPath") && !yaml.contains("keyPath"));
    }

    #[test]
    fn a_pinned_nucleus_version_is_written() {
        let mut t = target(Nucleus::Java);
        t.greengrass.nucleus_version = Some("2.15.0".into());
        let doc: Value = serde_yaml_ng::from_str(&t.render_config("gg-SN1")).unwrap();
        assert_eq!(
            lookup(&doc, &["services", "aws.greengrass.Nucleus", "version"]),
            "2.15.0"
        );
    }

    #[test]
    fn the_group_is_never_the_devices_to_send() {
        for nucleus in [Nucleus::Java, Nucleus::Lite] {
            let t = target(nucleus);
            assert!(t.thing_group.is_some());
            let yaml = t.render_config("gg-SN1");
            assert!(!yaml.contains("ThingGroupName"), "{yaml}");
            assert!(!yaml.contains("LineOne"), "{yaml}");
        }
    }

    #[test]
    fn lite_config_uses_lite_key_names() {
        let yaml = target(Nucleus::Lite).render_config("gg-SN1");
        let doc: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        let fp = lookup(
            &doc,
            &[
                "services",
                "aws.greengrass.fleet_provisioning",
                "configuration",
            ],
        );
        for (key, want) in [
            ("iotDataEndpoint", "abc-ats.iot.us-west-2.amazonaws.com"),
            (
                "iotCredEndpoint",
                "abc.credentials.iot.us-west-2.amazonaws.com",
            ),
            ("rootCaPath", "/var/lib/greengrass/AmazonRootCA1.pem"),
            (
                "claimKeyPath",
                "/var/lib/greengrass/claim-certs/claim.private.pem.key",
            ),
            (
                "claimCertPath",
                "/var/lib/greengrass/claim-certs/claim.pem.crt",
            ),
            ("csrCommonName", "gg-SN1"),
            ("templateName", "GreengrassFleetProvisioningTemplate"),
        ] {
            assert_eq!(lookup(fp, &[key]), want, "{key}");
        }
        assert_eq!(lookup(fp, &["templateParams", "ThingName"]), "gg-SN1");
        let nucleus = lookup(&doc, &["services", "aws.greengrass.NucleusLite"]);
        assert_eq!(lookup(nucleus, &["componentType"]), "NUCLEUS");
        let conf = lookup(nucleus, &["configuration"]);
        assert_eq!(lookup(conf, &["awsRegion"]), "us-west-2");
        assert_eq!(
            lookup(conf, &["runWithDefault", "posixUser"]),
            "ggcore:ggcore"
        );
        // Lite's readers take strings only: the port must not be a YAML number.
        assert_eq!(
            lookup(conf, &["greengrassDataPlanePort"]).as_str(),
            Some("8443")
        );
        // The guide: endpoints only in the provisioning section until provisioning copies them.
        assert!(conf.get("iotDataEndpoint").is_none());
        assert_eq!(lookup(&doc, &["system", "rootPath"]), "/var/lib/greengrass");
        // Lite skips provisioning when a device certificate is already configured.
        assert!(doc["system"].get("certificateFilePath").is_none());
        // Lite reads each config file into an 8 KiB buffer.
        assert!(yaml.len() < 8192);
    }

    #[test]
    fn lite_csr_common_name_only_when_openssl_takes_it() {
        let fp = |name: &str| -> Value {
            let doc: Value =
                serde_yaml_ng::from_str(&target(Nucleus::Lite).render_config(name)).unwrap();
            doc["services"]["aws.greengrass.fleet_provisioning"]["configuration"].clone()
        };
        assert_eq!(
            fp(&"a".repeat(64))["csrCommonName"].as_str().map(str::len),
            Some(64)
        );
        assert!(fp(&"a".repeat(65)).get("csrCommonName").is_none());
    }

    #[test]
    fn odd_but_valid_values_stay_strings() {
        // A thing name that YAML would read as a number or boolean must stay a string.
        let yaml = target(Nucleus::Java).render_config("0123");
        let doc: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        let name = lookup(
            &doc,
            &[
                "services",
                "aws.greengrass.FleetProvisioningByClaim",
                "configuration",
                "templateParameters",
                "ThingName",
            ],
        );
        assert_eq!(name.as_str(), Some("0123"));
    }
}
