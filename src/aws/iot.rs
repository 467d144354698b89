//! [`Iot`]: the AWS IoT operations of `batch`, `revoke`, `rotate` and `audit`, as the
//! [`Claims`] and [`Inventory`] traits say them. Every request goes through
//! [`Calls::call`](super::calls::Calls::call): paced, counted, and retried there only.

use std::collections::{HashMap, HashSet};

use aws_config::retry::RetryConfig;
use aws_sdk_iot::types::CertificateStatus;
use aws_sdk_iot::Client;
use time::OffsetDateTime;

use super::calls::{Api, Calls};
use super::config::{load_config, AwsSettings};
use super::errors::found;
use crate::cloud::{
    AwsError, CertificateDescription, CertificateSummary, Claims, EndpointKind, Inventory,
    NewCertificate, OutOfService, TemplateInfo,
};
use crate::core::station_config::LimitsSection;

/// The AWS IoT operations of `batch`, `revoke`, `rotate` and `audit`. The SDK's own retries
/// are off: [`Calls::call`] retries, so that every attempt is paced and counted.
pub struct Iot {
    client: Client,
    region: String,
    calls: Calls,
}

impl Iot {
    /// ListCertificates, every page.
    async fn every_certificate(&self) -> Result<Vec<Listed>, AwsError> {
        self.calls
            .pages(
                Api::ListCertificates,
                |token| self.certificates_page(token, false),
                |_: &[Listed]| true,
            )
            .await
    }

    /// Loads the SDK config (standard chain plus `settings`) and checks that a region and
    /// credentials resolve. Errors are one line saying what to set.
    pub async fn connect(settings: &AwsSettings, limits: &LimitsSection) -> Result<Self, String> {
        let (config, region) = load_config(settings, limits.max_attempts).await?;
        let config = aws_sdk_iot::config::Builder::from(&config)
            .retry_config(RetryConfig::disabled())
            .build();
        Ok(Self {
            client: Client::from_conf(config),
            region,
            calls: Calls::new(limits),
        })
    }
}

/// A row of ListCertificates with its creation time.
struct Listed {
    summary: CertificateSummary,
    status: crate::cloud::CertificateStatus,
    created_at: OffsetDateTime,
}

impl Iot {
    /// ListCertificates, one page of 250, newest first or not.
    async fn certificates_page(
        &self,
        token: Option<String>,
        newest_first: bool,
    ) -> Result<(Vec<Listed>, Option<String>), AwsError> {
        let page = sdk!(self
            .client
            .list_certificates()
            .page_size(250)
            .ascending_order(!newest_first)
            .set_marker(token))?;
        let listed = page
            .certificates()
            .iter()
            .filter_map(|cert| {
                Some(Listed {
                    summary: CertificateSummary {
                        certificate_id: cert.certificate_id()?.to_string(),
                        certificate_arn: cert.certificate_arn()?.to_string(),
                        active: cert.status() == Some(&CertificateStatus::Active),
                    },
                    status: cert.status()?.as_str().into(),
                    created_at: cert
                        .creation_date()
                        .and_then(|d| OffsetDateTime::from_unix_timestamp(d.secs()).ok())
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                })
            })
            .collect();
        Ok((listed, page.next_marker))
    }

    /// UpdateCertificate.
    async fn update_certificate(
        &self,
        certificate_id: &str,
        status: CertificateStatus,
    ) -> Result<(), AwsError> {
        call!(
            self.calls,
            UpdateCertificate,
            self.client
                .update_certificate()
                .certificate_id(certificate_id)
                .new_status(status.clone())
        )
        .map(drop)
    }
}

impl Claims for Iot {
    async fn create_certificate_from_csr(&self, csr_pem: &str) -> Result<NewCertificate, AwsError> {
        let output = call!(
            self.calls,
            CreateCertificateFromCsr,
            self.client
                .create_certificate_from_csr()
                .certificate_signing_request(csr_pem)
                .set_as_active(true)
        )?;
        match (
            output.certificate_id,
            output.certificate_arn,
            output.certificate_pem,
        ) {
            (Some(certificate_id), Some(certificate_arn), Some(certificate_pem)) => {
                Ok(NewCertificate {
                    certificate_id,
                    certificate_arn,
                    certificate_pem,
                })
            }
            _ => Err(AwsError::Uncertain(
                "CreateCertificateFromCsr answered without id, ARN or PEM".into(),
            )),
        }
    }

    async fn attach_policy(&self, policy: &str, certificate_arn: &str) -> Result<(), AwsError> {
        call!(
            self.calls,
            AttachPolicy,
            self.client
                .attach_policy()
                .policy_name(policy)
                .target(certificate_arn)
        )
        .map(drop)
    }

    async fn set_certificate_status(
        &self,
        certificate_id: &str,
        status: OutOfService,
    ) -> Result<(), AwsError> {
        let status = match status {
            OutOfService::Inactive => CertificateStatus::Inactive,
            OutOfService::Revoked => CertificateStatus::Revoked,
        };
        self.update_certificate(certificate_id, status).await
    }

    async fn detach_policy(&self, policy: &str, certificate_arn: &str) -> Result<(), AwsError> {
        call!(
            self.calls,
            DetachPolicy,
            self.client
                .detach_policy()
                .policy_name(policy)
                .target(certificate_arn)
        )
        .map(drop)
    }

    async fn delete_certificate(&self, certificate_id: &str) -> Result<(), AwsError> {
        call!(
            self.calls,
            DeleteCertificate,
            self.client
                .delete_certificate()
                .certificate_id(certificate_id)
        )
        .map(drop)
    }

    async fn describe_certificate(
        &self,
        certificate_id: &str,
    ) -> Result<CertificateDescription, AwsError> {
        let output = call!(
            self.calls,
            DescribeCertificate,
            self.client
                .describe_certificate()
                .certificate_id(certificate_id)
        )?;
        let description = output.certificate_description;
        let (pem, status) = description.map_or((None, None), |d| (d.certificate_pem, d.status));
        match (pem, status) {
            (Some(pem), Some(status)) => Ok(CertificateDescription {
                pem,
                status: status.as_str().into(),
            }),
            _ => Err(AwsError::Uncertain(format!(
                "DescribeCertificate({certificate_id}) returned no PEM or status"
            ))),
        }
    }

    async fn certificates_created_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<CertificateSummary>, AwsError> {
        let listed = self
            .calls
            .pages(
                Api::ListCertificates,
                |token| self.certificates_page(token, true),
                // Newest first: a page reaching past `since` is the last one needed.
                |page: &[Listed]| page.iter().all(|c| c.created_at >= since),
            )
            .await?;
        Ok(listed
            .into_iter()
            .filter(|c| c.created_at >= since)
            .map(|c| c.summary)
            .collect())
    }

    fn call_counts(&self) -> Vec<(&'static str, u64)> {
        self.calls.counts()
    }
}

impl Inventory for Iot {
    fn region(&self) -> &str {
        &self.region
    }

    async fn describe_endpoint(&self, kind: EndpointKind) -> Result<String, AwsError> {
        describe_endpoint(&self.client, &self.calls, kind).await
    }

    async fn policy_document(&self, name: &str) -> Result<Option<String>, AwsError> {
        let output = found(call!(
            self.calls,
            GetPolicy,
            self.client.get_policy().policy_name(name)
        ))?;
        Ok(output.map(|o| o.policy_document.unwrap_or_default()))
    }

    async fn provisioning_template(&self, name: &str) -> Result<Option<TemplateInfo>, AwsError> {
        (self.calls)
            .call(Api::DescribeProvisioningTemplate, || {
                describe_template(&self.client, name)
            })
            .await
    }

    async fn certificate_statuses(
        &self,
    ) -> Result<HashMap<String, crate::cloud::CertificateStatus>, AwsError> {
        let listed = self.every_certificate().await?;
        Ok(listed
            .into_iter()
            .map(|c| (c.summary.certificate_id, c.status))
            .collect())
    }

    async fn certificate_creation_times(
        &self,
    ) -> Result<HashMap<String, OffsetDateTime>, AwsError> {
        let listed = self.every_certificate().await?;
        Ok(listed
            .into_iter()
            .map(|c| (c.summary.certificate_arn, c.created_at))
            .collect())
    }

    async fn policy_targets(&self, policy: &str) -> Result<Vec<String>, AwsError> {
        self.calls
            .pages(
                Api::ListTargetsForPolicy,
                |token| async move {
                    let page = sdk!(self
                        .client
                        .list_targets_for_policy()
                        .policy_name(policy)
                        .page_size(250)
                        .set_marker(token))?;
                    Ok((page.targets().to_vec(), page.next_marker))
                },
                |_: &[String]| true,
            )
            .await
    }

    async fn thing_names(&self) -> Result<HashSet<String>, AwsError> {
        let names = self
            .calls
            .pages(
                Api::ListThings,
                |token| async move {
                    let page = sdk!(self
                        .client
                        .list_things()
                        .max_results(250)
                        .set_next_token(token))?;
                    let names = page
                        .things()
                        .iter()
                        .filter_map(|t| t.thing_name().map(String::from))
                        .collect();
                    Ok((names, page.next_token))
                },
                |_: &[String]| true,
            )
            .await?;
        Ok(names.into_iter().collect())
    }

    async fn thing_principals(&self, thing: &str) -> Result<Vec<String>, AwsError> {
        let listed = self
            .calls
            .pages(
                Api::ListThingPrincipals,
                |token| async move {
                    let page = sdk!(self
                        .client
                        .list_thing_principals()
                        .thing_name(thing)
                        .max_results(25)
                        .set_next_token(token))?;
                    Ok((page.principals.unwrap_or_default(), page.next_token))
                },
                |_: &[String]| true,
            )
            .await;
        found(listed).map(Option::unwrap_or_default)
    }

    async fn principal_things(&self, principal: &str) -> Result<Vec<String>, AwsError> {
        let listed = self
            .calls
            .pages(
                Api::ListPrincipalThings,
                |token| async move {
                    let page = sdk!(self
                        .client
                        .list_principal_things()
                        .principal(principal)
                        .max_results(25)
                        .set_next_token(token))?;
                    Ok((page.things.unwrap_or_default(), page.next_token))
                },
                |_: &[String]| true,
            )
            .await;
        found(listed).map(Option::unwrap_or_default)
    }
}

/// DescribeProvisioningTemplate, or `None` when there is no template of that name.
pub(super) async fn describe_template(
    client: &Client,
    name: &str,
) -> Result<Option<TemplateInfo>, AwsError> {
    let output = found(sdk!(client
        .describe_provisioning_template()
        .template_name(name)))?;
    Ok(output.map(|o| TemplateInfo {
        arn: o.template_arn.unwrap_or_default(),
        body: o.template_body.unwrap_or_default(),
        enabled: o.enabled.unwrap_or(false),
        role_arn: o.provisioning_role_arn.unwrap_or_default(),
        hook_arn: o.pre_provisioning_hook.map(|h| h.target_arn),
        description: o.description.unwrap_or_default(),
    }))
}

/// DescribeEndpoint, through `calls`.
pub(super) async fn describe_endpoint(
    client: &Client,
    calls: &Calls,
    kind: EndpointKind,
) -> Result<String, AwsError> {
    let endpoint_type = kind.endpoint_type();
    let request = client.describe_endpoint().endpoint_type(endpoint_type);
    let output = call!(calls, DescribeEndpoint, request.clone())?;
    output.endpoint_address.ok_or_else(|| {
        AwsError::Uncertain(format!(
            "DescribeEndpoint({endpoint_type}) returned no address"
        ))
    })
}
