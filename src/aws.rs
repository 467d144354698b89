//! The AWS seam: the only module that names `aws_sdk_*`. It loads the SDK config the standard
//! way (credential chain, `AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL` or
//! `--endpoint-url`), paces every call through a per-API token bucket, and maps SDK errors
//! once into [`AwsError`], whose kinds say whether a failed call may still have taken effect.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_iot::config::http::HttpResponse;
use aws_sdk_iot::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iot::types::CertificateStatus;
use aws_sdk_iot::Client;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use time::OffsetDateTime;

use crate::core::station::LimitsSection;

/// How to reach AWS; unset fields fall back to the SDK's standard chain.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

/// A failed AWS call, classified by what the caller can conclude.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    /// HTTP 429 / ThrottlingException: the request was not executed.
    #[error("throttled by AWS ({0})")]
    Throttled(String),
    /// The named resource does not exist.
    #[error("not found ({0})")]
    NotFound(String),
    /// The caller lacks permission or credentials.
    #[error("access denied ({0}); check the IAM permissions of the AWS identity in use")]
    AccessDenied(String),
    /// AWS rejected the request (4xx): it was not executed.
    #[error("rejected by AWS ({0})")]
    Rejected(String),
    /// No answer or a server error: the request may or may not have been executed.
    #[error("no definite answer from AWS ({0})")]
    Uncertain(String),
}

impl AwsError {
    /// Whether the request may have been executed despite the error.
    pub fn may_have_executed(&self) -> bool {
        matches!(self, AwsError::Uncertain(_))
    }
}

fn classify<E>(error: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("Unknown").to_string();
            let message = err.message().unwrap_or_default();
            let detail = if message.is_empty() {
                code.clone()
            } else {
                format!("{code}: {message}")
            };
            let status = Some(service.raw().status().as_u16());
            match (code.as_str(), status) {
                ("ThrottlingException" | "TooManyRequestsException", _) | (_, Some(429)) => {
                    AwsError::Throttled(detail)
                }
                ("ResourceNotFoundException" | "NoSuchEntity", _) | (_, Some(404)) => {
                    AwsError::NotFound(detail)
                }
                (
                    "AccessDeniedException"
                    | "UnauthorizedException"
                    | "UnrecognizedClientException"
                    | "InvalidClientTokenId"
                    | "ExpiredTokenException",
                    _,
                )
                | (_, Some(401 | 403)) => AwsError::AccessDenied(detail),
                (_, Some(s)) if s >= 500 => AwsError::Uncertain(detail),
                _ => AwsError::Rejected(detail),
            }
        }
        SdkError::ConstructionFailure(_) => AwsError::Rejected(error_chain(&error)),
        _ => AwsError::Uncertain(error_chain(&error)),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Preflight checks fail fast: a wrong endpoint or a network outage should be reported in
/// seconds, not after the full retry budget meant for a running batch.
fn preflight_retries() -> aws_sdk_iot::config::Builder {
    aws_sdk_iot::config::Builder::default()
        .retry_config(RetryConfig::standard().with_max_attempts(3))
}

/// A certificate issued by CreateCertificateFromCsr.
#[derive(Debug, Clone)]
pub struct NewCertificate {
    pub certificate_id: String,
    pub certificate_arn: String,
    pub certificate_pem: String,
}

/// A row of ListCertificates.
#[derive(Debug, Clone)]
pub struct CertificateSummary {
    pub certificate_id: String,
    pub certificate_arn: String,
    pub active: bool,
}

/// Which account endpoint DescribeEndpoint should return.
#[derive(Debug, Clone, Copy)]
pub enum EndpointKind {
    DataAts,
    CredentialProvider,
}

/// Client-side token buckets, one per API, at the station's rates. A burst of one keeps the
/// pace even, so AWS's own bucket never sees more than the quota.
struct Limiters {
    create_certificate: DefaultDirectRateLimiter,
    attach_policy: DefaultDirectRateLimiter,
    update_certificate: DefaultDirectRateLimiter,
    describe_certificate: DefaultDirectRateLimiter,
    other: DefaultDirectRateLimiter,
}

fn limiter(per_second: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(per_second.max(1)).expect("max(1) is non-zero");
    RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN))
}

/// Calls made per API (each attempt counts: this is what AWS's quota sees).
#[derive(Default)]
struct CallCounts {
    create_certificate_from_csr: AtomicU64,
    attach_policy: AtomicU64,
    update_certificate: AtomicU64,
    describe_certificate: AtomicU64,
    list_certificates: AtomicU64,
    get_policy: AtomicU64,
    describe_endpoint: AtomicU64,
}

/// The AWS IoT operations claimfab uses.
pub struct Iot {
    client: Client,
    region: String,
    limiters: Limiters,
    calls: CallCounts,
    max_attempts: u32,
}

/// Loads the SDK config the standard way plus `settings`, and checks that a region and
/// credentials resolve. Errors are one line saying what to set.
async fn load_config(
    settings: &AwsSettings,
    max_attempts: u32,
) -> Result<(aws_config::SdkConfig, String), String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(max_attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let config = loader.load().await;
    let region = config.region().map(|r| r.to_string()).ok_or_else(|| {
        "no AWS region: set `region` in the station's [aws] section, pass --region, or set AWS_REGION".to_string()
    })?;
    let credentials = config.credentials_provider().ok_or_else(|| {
        "no AWS credentials provider: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            .to_string()
    })?;
    use aws_credential_types::provider::ProvideCredentials;
    credentials.provide_credentials().await.map_err(|e| {
        format!(
            "no AWS credentials ({}); set AWS_PROFILE, run `aws sso login`, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            error_chain(&e)
        )
    })?;
    Ok((config, region))
}

impl Iot {
    /// Loads the SDK config (standard chain plus `settings`) and checks that a region and
    /// credentials resolve. Errors are one line saying what to set.
    pub async fn connect(settings: &AwsSettings, limits: &LimitsSection) -> Result<Self, String> {
        let (config, region) = load_config(settings, limits.max_attempts).await?;
        Ok(Self {
            client: Client::new(&config),
            region,
            limiters: Limiters {
                create_certificate: limiter(limits.create_certificate_from_csr_per_second),
                attach_policy: limiter(limits.attach_policy_per_second),
                update_certificate: limiter(limits.update_certificate_per_second),
                describe_certificate: limiter(limits.describe_certificate_per_second),
                other: limiter(10),
            },
            calls: CallCounts::default(),
            max_attempts: limits.max_attempts,
        })
    }

    /// Calls made so far, per API, for the run summary.
    pub fn call_counts(&self) -> Vec<(&'static str, u64)> {
        let c = &self.calls;
        [
            ("CreateCertificateFromCsr", &c.create_certificate_from_csr),
            ("AttachPolicy", &c.attach_policy),
            ("UpdateCertificate", &c.update_certificate),
            ("DescribeCertificate", &c.describe_certificate),
            ("ListCertificates", &c.list_certificates),
            ("GetPolicy", &c.get_policy),
            ("DescribeEndpoint", &c.describe_endpoint),
        ]
        .into_iter()
        .map(|(name, count)| (name, count.load(Ordering::Relaxed)))
        .filter(|(_, count)| *count > 0)
        .collect()
    }

    /// The resolved region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// DescribeEndpoint.
    pub async fn describe_endpoint(&self, kind: EndpointKind) -> Result<String, AwsError> {
        self.limiters.other.until_ready().await;
        self.calls.describe_endpoint.fetch_add(1, Ordering::Relaxed);
        let endpoint_type = match kind {
            EndpointKind::DataAts => "iot:Data-ATS",
            EndpointKind::CredentialProvider => "iot:CredentialProvider",
        };
        let output = self
            .client
            .describe_endpoint()
            .endpoint_type(endpoint_type)
            .customize()
            .config_override(preflight_retries())
            .send()
            .await
            .map_err(classify)?;
        output.endpoint_address.ok_or_else(|| {
            AwsError::Uncertain(format!(
                "DescribeEndpoint({endpoint_type}) returned no address"
            ))
        })
    }

    /// GetPolicy, reduced to whether the policy exists.
    pub async fn policy_exists(&self, name: &str) -> Result<bool, AwsError> {
        self.limiters.other.until_ready().await;
        self.calls.get_policy.fetch_add(1, Ordering::Relaxed);
        match self
            .client
            .get_policy()
            .policy_name(name)
            .customize()
            .config_override(preflight_retries())
            .send()
            .await
            .map_err(classify)
        {
            Ok(_) => Ok(true),
            Err(AwsError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// CreateCertificateFromCsr with the certificate active at once. The SDK does not retry
    /// this call: a retry after a lost response would create a second certificate. Throttling
    /// (which AWS guarantees did not execute) is retried here with backoff and jitter; any
    /// other failure is returned for the caller to reconcile.
    pub async fn create_certificate_from_csr(
        &self,
        csr_pem: &str,
    ) -> Result<NewCertificate, AwsError> {
        use backon::{ExponentialBuilder, Retryable};
        let attempt = || async {
            self.limiters.create_certificate.until_ready().await;
            self.calls
                .create_certificate_from_csr
                .fetch_add(1, Ordering::Relaxed);
            self.client
                .create_certificate_from_csr()
                .certificate_signing_request(csr_pem)
                .set_as_active(true)
                .customize()
                .config_override(
                    aws_sdk_iot::config::Builder::default().retry_config(RetryConfig::disabled()),
                )
                .send()
                .await
                .map_err(classify)
        };
        let output = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(20))
                    .with_max_times(self.max_attempts.saturating_sub(1) as usize)
                    .with_jitter(),
            )
            .when(|e: &AwsError| matches!(e, AwsError::Throttled(_)))
            .await?;
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

    /// AttachPolicy (idempotent, so the SDK's standard retries apply).
    pub async fn attach_policy(&self, policy: &str, certificate_arn: &str) -> Result<(), AwsError> {
        self.limiters.attach_policy.until_ready().await;
        self.calls.attach_policy.fetch_add(1, Ordering::Relaxed);
        self.client
            .attach_policy()
            .policy_name(policy)
            .target(certificate_arn)
            .send()
            .await
            .map(drop)
            .map_err(classify)
    }

    /// UpdateCertificate to INACTIVE (idempotent).
    pub async fn deactivate_certificate(&self, certificate_id: &str) -> Result<(), AwsError> {
        self.limiters.update_certificate.until_ready().await;
        self.calls
            .update_certificate
            .fetch_add(1, Ordering::Relaxed);
        self.client
            .update_certificate()
            .certificate_id(certificate_id)
            .new_status(CertificateStatus::Inactive)
            .send()
            .await
            .map(drop)
            .map_err(classify)
    }

    /// DescribeCertificate, reduced to its PEM.
    pub async fn certificate_pem(&self, certificate_id: &str) -> Result<String, AwsError> {
        self.limiters.describe_certificate.until_ready().await;
        self.calls
            .describe_certificate
            .fetch_add(1, Ordering::Relaxed);
        let output = self
            .client
            .describe_certificate()
            .certificate_id(certificate_id)
            .send()
            .await
            .map_err(classify)?;
        output
            .certificate_description
            .and_then(|d| d.certificate_pem)
            .ok_or_else(|| {
                AwsError::Uncertain(format!(
                    "DescribeCertificate({certificate_id}) returned no PEM"
                ))
            })
    }

    /// ListCertificates, newest first, until certificates older than `since`.
    pub async fn certificates_created_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<CertificateSummary>, AwsError> {
        let mut found = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            self.limiters.other.until_ready().await;
            self.calls.list_certificates.fetch_add(1, Ordering::Relaxed);
            let page = self
                .client
                .list_certificates()
                .page_size(250)
                .ascending_order(false)
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(classify)?;
            let mut reached_older = false;
            for cert in page.certificates() {
                let created_at = cert
                    .creation_date()
                    .and_then(|d| OffsetDateTime::from_unix_timestamp(d.secs()).ok())
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                if created_at < since {
                    reached_older = true;
                    continue;
                }
                if let (Some(id), Some(arn)) = (cert.certificate_id(), cert.certificate_arn()) {
                    found.push(CertificateSummary {
                        certificate_id: id.to_string(),
                        certificate_arn: arn.to_string(),
                        active: cert.status() == Some(&CertificateStatus::Active),
                    });
                }
            }
            marker = page.next_marker().map(String::from);
            if reached_older || marker.is_none() {
                return Ok(found);
            }
        }
    }
}
