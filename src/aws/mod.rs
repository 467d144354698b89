//! The AWS seam: the only module that names `aws_sdk_*`. It loads the SDK config the standard
//! way (credential chain, `AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL` or
//! `--endpoint-url`), paces every call through a per-API token bucket, and maps SDK errors
//! once into [`AwsError`], whose kinds say whether a failed call may still have taken effect.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
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

pub use crate::cloud::{
    AwsError, CertificateDescription, CertificateSummary, Claims, EndpointKind, Inventory,
    NewCertificate, OutOfService, TemplateInfo,
};
use crate::core::station_config::LimitsSection;

/// How to reach AWS; unset fields fall back to the SDK's standard chain.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
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

/// Sends one SDK request and classifies its failure: the tail every call shares.
macro_rules! sdk {
    ($request:expr) => {
        $request.send().await.map_err(classify)
    };
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

/// Declares [`Api`] with its table of every variant (`Api::ALL`, in declaration order, so
/// `api as usize` indexes it) and each variant's AWS operation name, from one list: the
/// table cannot go out of step with the enum.
macro_rules! apis {
    ($($api:ident),+ $(,)?) => {
        /// The APIs [`Iot`] calls, each paced by its own token bucket and counted per attempt.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Api {
            $($api),+
        }

        impl Api {
            const ALL: &'static [Api] = &[$(Api::$api),+];

            /// The AWS operation name.
            fn name(self) -> &'static str {
                match self {
                    $(Api::$api => stringify!($api)),+
                }
            }
        }
    };
}

apis![
    CreateCertificateFromCsr,
    AttachPolicy,
    UpdateCertificate,
    DescribeCertificate,
    DetachPolicy,
    DeleteCertificate,
    ListCertificates,
    ListTargetsForPolicy,
    ListThings,
    ListThingPrincipals,
    ListPrincipalThings,
    GetPolicy,
    DescribeEndpoint,
    DescribeProvisioningTemplate,
];

impl Api {
    /// The station's rate for the per-device APIs; AWS's lowest default quota for the rest.
    fn per_second(self, limits: &LimitsSection) -> u32 {
        match self {
            Api::CreateCertificateFromCsr => limits.create_certificate_from_csr_per_second,
            Api::AttachPolicy => limits.attach_policy_per_second,
            Api::UpdateCertificate => limits.update_certificate_per_second,
            Api::DescribeCertificate => limits.describe_certificate_per_second,
            Api::DetachPolicy => limits.detach_policy_per_second,
            _ => 10,
        }
    }

    /// Whether a failed attempt is tried again: throttling (AWS did not execute it) always;
    /// no answer only where a repeat cannot make a second certificate.
    fn retries(self, error: &AwsError) -> bool {
        match error {
            AwsError::Throttled(_) => true,
            AwsError::Uncertain(_) => self != Api::CreateCertificateFromCsr,
            _ => false,
        }
    }

    /// Preflight reads fail fast: a wrong endpoint or an outage should be reported in
    /// seconds, not after the retry budget meant for a running batch.
    fn max_attempts(self, configured: u32) -> u32 {
        match self {
            Api::GetPolicy | Api::DescribeEndpoint | Api::DescribeProvisioningTemplate => {
                configured.min(3)
            }
            _ => configured,
        }
    }
}

fn limiter(per_second: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(per_second.max(1)).expect("max(1) is non-zero");
    // A burst of one keeps the pace even, so AWS's own bucket never sees more than the quota.
    RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN))
}

/// The one place every request passes: a token bucket per API and a count of attempts.
struct Pacing {
    limiters: Vec<DefaultDirectRateLimiter>,
    attempts: Vec<AtomicU64>,
}

impl Pacing {
    fn new(limits: &LimitsSection) -> Self {
        Self {
            limiters: Api::ALL
                .iter()
                .map(|api| limiter(api.per_second(limits)))
                .collect(),
            attempts: Api::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Waits for `api`'s next slot and counts the attempt about to be sent.
    async fn admit(&self, api: Api) {
        let index = api as usize;
        self.limiters[index].until_ready().await;
        self.attempts[index].fetch_add(1, Ordering::Relaxed);
    }

    fn counts(&self) -> Vec<(&'static str, u64)> {
        Api::ALL
            .iter()
            .map(|api| {
                (
                    api.name(),
                    self.attempts[*api as usize].load(Ordering::Relaxed),
                )
            })
            .filter(|(_, count)| *count > 0)
            .collect()
    }
}

/// The AWS IoT operations of `batch`, `revoke`, `rotate` and `audit`. The SDK's own retries
/// are off: [`Iot::call`] retries, so that every attempt is paced and counted.
pub struct Iot {
    client: Client,
    region: String,
    pacing: Pacing,
    max_attempts: u32,
}

/// Loads the SDK config the standard way plus `settings`, and checks that a region and
/// credentials resolve. Errors are one line saying what to set.
async fn load_config(
    settings: &AwsSettings,
    max_attempts: u32,
) -> Result<(aws_config::SdkConfig, String), String> {
    // The SDK takes an empty endpoint URL for a URL and panics on the first call.
    if settings.endpoint_url.as_deref() == Some("") {
        return Err("--endpoint-url is empty; give a URL or leave the flag out".into());
    }
    if std::env::var_os("AWS_ENDPOINT_URL").is_some_and(|url| url.is_empty()) {
        return Err("AWS_ENDPOINT_URL is set but empty; unset it (for AWS's own endpoints) or set it to a URL".into());
    }
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
        let config = aws_sdk_iot::config::Builder::from(&config)
            .retry_config(RetryConfig::disabled())
            .build();
        Ok(Self {
            client: Client::from_conf(config),
            region,
            pacing: Pacing::new(limits),
            max_attempts: limits.max_attempts,
        })
    }

    /// Sends one request through pacing and counting, and tries it again (backoff with
    /// jitter) while the failure allows it and attempts are left.
    async fn call<T, Fut>(&self, api: Api, send: impl Fn() -> Fut) -> Result<T, AwsError>
    where
        Fut: Future<Output = Result<T, AwsError>>,
    {
        use backon::{ExponentialBuilder, Retryable};
        let attempt = || async {
            self.pacing.admit(api).await;
            send().await
        };
        let retries = api.max_attempts(self.max_attempts).saturating_sub(1);
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(20))
                    .with_max_times(retries as usize)
                    .with_jitter(),
            )
            .when(|e: &AwsError| api.retries(e))
            .await
    }

    /// Reads a paged listing, each page one [`Iot::call`], until the last page or until
    /// `more` says the page just read is the last one needed.
    async fn pages<T, Fut>(
        &self,
        api: Api,
        fetch: impl Fn(Option<String>) -> Fut,
        more: impl Fn(&[T]) -> bool,
    ) -> Result<Vec<T>, AwsError>
    where
        Fut: Future<Output = Result<(Vec<T>, Option<String>), AwsError>>,
    {
        let mut items = Vec::new();
        let mut token = None;
        loop {
            let (page, next) = self.call(api, || fetch(token.clone())).await?;
            let go_on = more(&page);
            items.extend(page);
            match next.filter(|t| !t.is_empty()) {
                Some(next) if go_on => token = Some(next),
                _ => return Ok(items),
            }
        }
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
        self.call(Api::UpdateCertificate, || async {
            sdk!(self
                .client
                .update_certificate()
                .certificate_id(certificate_id)
                .new_status(status.clone()))
            .map(drop)
        })
        .await
    }
}

impl Claims for Iot {
    async fn create_certificate_from_csr(&self, csr_pem: &str) -> Result<NewCertificate, AwsError> {
        let output = self
            .call(Api::CreateCertificateFromCsr, || async {
                sdk!(self
                    .client
                    .create_certificate_from_csr()
                    .certificate_signing_request(csr_pem)
                    .set_as_active(true))
            })
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

    async fn attach_policy(&self, policy: &str, certificate_arn: &str) -> Result<(), AwsError> {
        self.call(Api::AttachPolicy, || async {
            sdk!(self
                .client
                .attach_policy()
                .policy_name(policy)
                .target(certificate_arn))
            .map(drop)
        })
        .await
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
        self.call(Api::DetachPolicy, || async {
            sdk!(self
                .client
                .detach_policy()
                .policy_name(policy)
                .target(certificate_arn))
            .map(drop)
        })
        .await
    }

    async fn delete_certificate(&self, certificate_id: &str) -> Result<(), AwsError> {
        self.call(Api::DeleteCertificate, || async {
            sdk!(self
                .client
                .delete_certificate()
                .certificate_id(certificate_id))
            .map(drop)
        })
        .await
    }

    async fn describe_certificate(
        &self,
        certificate_id: &str,
    ) -> Result<CertificateDescription, AwsError> {
        let output = self
            .call(Api::DescribeCertificate, || async {
                sdk!(self
                    .client
                    .describe_certificate()
                    .certificate_id(certificate_id))
            })
            .await?;
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
        self.pacing.counts()
    }
}

impl Inventory for Iot {
    fn region(&self) -> &str {
        &self.region
    }

    async fn describe_endpoint(&self, kind: EndpointKind) -> Result<String, AwsError> {
        let endpoint_type = match kind {
            EndpointKind::DataAts => "iot:Data-ATS",
            EndpointKind::CredentialProvider => "iot:CredentialProvider",
        };
        let output = self
            .call(Api::DescribeEndpoint, || async {
                sdk!(self.client.describe_endpoint().endpoint_type(endpoint_type))
            })
            .await?;
        output.endpoint_address.ok_or_else(|| {
            AwsError::Uncertain(format!(
                "DescribeEndpoint({endpoint_type}) returned no address"
            ))
        })
    }

    async fn policy_document(&self, name: &str) -> Result<Option<String>, AwsError> {
        let output = found(
            self.call(Api::GetPolicy, || async {
                sdk!(self.client.get_policy().policy_name(name))
            })
            .await,
        )?;
        Ok(output.map(|o| o.policy_document.unwrap_or_default()))
    }

    async fn provisioning_template(&self, name: &str) -> Result<Option<TemplateInfo>, AwsError> {
        self.call(Api::DescribeProvisioningTemplate, || {
            describe_template(&self.client, name)
        })
        .await
    }

    async fn certificate_statuses(
        &self,
    ) -> Result<HashMap<String, crate::cloud::CertificateStatus>, AwsError> {
        let listed = self
            .pages(
                Api::ListCertificates,
                |token| self.certificates_page(token, false),
                |_: &[Listed]| true,
            )
            .await?;
        Ok(listed
            .into_iter()
            .map(|c| (c.summary.certificate_id, c.status))
            .collect())
    }

    async fn policy_targets(&self, policy: &str) -> Result<Vec<String>, AwsError> {
        self.pages(
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

/// An IAM role as setup sees it.
#[derive(Debug, Clone)]
pub struct RoleInfo {
    pub arn: String,
    /// The trust policy, as IAM returns it (URL-encoded JSON).
    pub trust_policy: String,
}

/// A policy (IAM managed or IoT) and its default version's document.
#[derive(Debug, Clone)]
pub struct PolicyInfo {
    pub arn: String,
    pub document: String,
}

/// An IoT role alias.
#[derive(Debug, Clone)]
pub struct RoleAliasInfo {
    pub arn: String,
    pub role_arn: String,
    pub credential_duration_seconds: i32,
}

/// The desired settings of a provisioning template.
#[derive(Debug, Clone)]
pub struct TemplateSpec<'a> {
    pub name: &'a str,
    pub body: &'a str,
    pub role_arn: &'a str,
    pub hook_arn: Option<&'a str>,
    pub description: &'a str,
}

/// A Lambda function as setup compares it.
#[derive(Debug, Clone)]
pub struct FunctionInfo {
    pub arn: String,
    pub code_sha256: String,
    pub role: String,
    pub handler: String,
    pub runtime: String,
    pub timeout: i32,
    pub memory_mb: i32,
    pub environment: BTreeMap<String, String>,
}

/// The desired Lambda function.
pub struct FunctionSpec<'a> {
    pub name: &'a str,
    pub package: &'a [u8],
    pub role_arn: &'a str,
    pub handler: &'a str,
    pub runtime: &'a str,
    pub timeout: i32,
    pub memory_mb: i32,
    pub environment: &'a BTreeMap<String, String>,
}

/// A Lambda function's environment variables.
fn lambda_environment(variables: &BTreeMap<String, String>) -> aws_sdk_lambda::types::Environment {
    aws_sdk_lambda::types::Environment::builder()
        .set_variables(Some(variables.clone().into_iter().collect()))
        .build()
}

/// Versions a policy or template may keep; the oldest non-default goes to make room.
const MAX_VERSIONS: usize = 5;

/// The version to delete before a new one can be added: the oldest non-default one, when
/// the policy or template already keeps the maximum. `versions` are (is default, created
/// at, version id).
fn version_to_drop<Id>(
    versions: impl ExactSizeIterator<Item = (bool, Option<i64>, Option<Id>)>,
) -> Option<Id> {
    if versions.len() < MAX_VERSIONS {
        return None;
    }
    versions
        .filter(|(is_default, _, _)| !is_default)
        .min_by_key(|(_, created, _)| *created)
        .and_then(|(_, _, id)| id)
}

/// A version of a policy (IAM or IoT) or of a provisioning template, as
/// [`version_to_drop`] reads it: (is default, created at, version id).
trait Version {
    type Id;
    fn parts(self) -> (bool, Option<i64>, Option<Self::Id>);
}

impl Version for aws_sdk_iam::types::PolicyVersion {
    type Id = String;
    fn parts(self) -> (bool, Option<i64>, Option<String>) {
        let created = self.create_date.map(|d| d.secs());
        (self.is_default_version, created, self.version_id)
    }
}

impl Version for aws_sdk_iot::types::PolicyVersion {
    type Id = String;
    fn parts(self) -> (bool, Option<i64>, Option<String>) {
        (
            self.is_default_version,
            self.create_date.map(|d| d.secs()),
            self.version_id,
        )
    }
}

impl Version for aws_sdk_iot::types::ProvisioningTemplateVersionSummary {
    type Id = i32;
    fn parts(self) -> (bool, Option<i64>, Option<i32>) {
        let created = self.creation_date.map(|d| d.secs());
        (self.is_default_version, created, self.version_id)
    }
}

/// Turns NotFound into `None`.
fn found<T>(result: Result<T, AwsError>) -> Result<Option<T>, AwsError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(AwsError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// DescribeProvisioningTemplate, or `None` when there is no template of that name.
async fn describe_template(client: &Client, name: &str) -> Result<Option<TemplateInfo>, AwsError> {
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

/// The IAM, STS and IoT operations of the one-time account setup.
pub struct AccountApi {
    iot: Client,
    iam: aws_sdk_iam::Client,
    lambda: aws_sdk_lambda::Client,
    sts: aws_sdk_sts::Client,
    region: String,
}

impl AccountApi {
    /// Connects like [`Iot::connect`].
    pub async fn connect(settings: &AwsSettings, max_attempts: u32) -> Result<Self, String> {
        let (config, region) = load_config(settings, max_attempts).await?;
        Ok(Self {
            iot: Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            lambda: aws_sdk_lambda::Client::new(&config),
            sts: aws_sdk_sts::Client::new(&config),
            region,
        })
    }

    /// The resolved region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The caller's identity ARN (STS GetCallerIdentity), which names partition and account.
    pub async fn caller_arn(&self) -> Result<String, AwsError> {
        let output = sdk!(self.sts.get_caller_identity())?;
        output
            .arn
            .ok_or_else(|| AwsError::Uncertain("GetCallerIdentity returned no ARN".into()))
    }

    /// DescribeEndpoint.
    pub async fn describe_endpoint(&self, kind: EndpointKind) -> Result<String, AwsError> {
        let endpoint_type = match kind {
            EndpointKind::DataAts => "iot:Data-ATS",
            EndpointKind::CredentialProvider => "iot:CredentialProvider",
        };
        let output = sdk!(self.iot.describe_endpoint().endpoint_type(endpoint_type))?;
        output.endpoint_address.ok_or_else(|| {
            AwsError::Uncertain(format!(
                "DescribeEndpoint({endpoint_type}) returned no address"
            ))
        })
    }

    // ---- IAM ----

    /// GetRole.
    pub async fn get_role(&self, name: &str) -> Result<Option<RoleInfo>, AwsError> {
        let output = found(sdk!(self.iam.get_role().role_name(name)))?;
        Ok(output.and_then(|o| o.role).map(|role| RoleInfo {
            arn: role.arn,
            trust_policy: role.assume_role_policy_document.unwrap_or_default(),
        }))
    }

    /// CreateRole; returns the ARN.
    pub async fn create_role(&self, name: &str, trust_policy: &str) -> Result<String, AwsError> {
        let output = sdk!(self
            .iam
            .create_role()
            .role_name(name)
            .assume_role_policy_document(trust_policy))?;
        output
            .role
            .map(|r| r.arn)
            .ok_or_else(|| AwsError::Uncertain("CreateRole returned no role".into()))
    }

    /// UpdateAssumeRolePolicy.
    pub async fn update_trust_policy(
        &self,
        role: &str,
        trust_policy: &str,
    ) -> Result<(), AwsError> {
        sdk!(self
            .iam
            .update_assume_role_policy()
            .role_name(role)
            .policy_document(trust_policy))
        .map(drop)
    }

    /// GetPolicy + GetPolicyVersion (default) of an IAM managed policy.
    pub async fn get_iam_policy(&self, arn: &str) -> Result<Option<PolicyInfo>, AwsError> {
        let Some(policy) =
            found(sdk!(self.iam.get_policy().policy_arn(arn)))?.and_then(|o| o.policy)
        else {
            return Ok(None);
        };
        let version = policy.default_version_id.unwrap_or_else(|| "v1".into());
        let output = sdk!(self
            .iam
            .get_policy_version()
            .policy_arn(arn)
            .version_id(version))?;
        Ok(Some(PolicyInfo {
            arn: arn.to_string(),
            document: output
                .policy_version
                .and_then(|v| v.document)
                .unwrap_or_default(),
        }))
    }

    /// CreatePolicy (IAM); returns the ARN.
    pub async fn create_iam_policy(&self, name: &str, document: &str) -> Result<String, AwsError> {
        let output = sdk!(self
            .iam
            .create_policy()
            .policy_name(name)
            .policy_document(document))?;
        output
            .policy
            .and_then(|p| p.arn)
            .ok_or_else(|| AwsError::Uncertain("CreatePolicy returned no ARN".into()))
    }

    /// CreatePolicyVersion (IAM) as the default, deleting the oldest non-default version
    /// first when the policy already has the maximum.
    pub async fn update_iam_policy(&self, arn: &str, document: &str) -> Result<(), AwsError> {
        let versions = sdk!(self.iam.list_policy_versions().policy_arn(arn))?
            .versions
            .unwrap_or_default();
        if let Some(oldest) = version_to_drop(versions.into_iter().map(Version::parts)) {
            sdk!(self
                .iam
                .delete_policy_version()
                .policy_arn(arn)
                .version_id(oldest))?;
        }
        sdk!(self
            .iam
            .create_policy_version()
            .policy_arn(arn)
            .policy_document(document)
            .set_as_default(true))
        .map(drop)
    }

    /// ListAttachedRolePolicies, as ARNs.
    pub async fn attached_role_policies(&self, role: &str) -> Result<Vec<String>, AwsError> {
        let output = sdk!(self.iam.list_attached_role_policies().role_name(role))?;
        Ok(output
            .attached_policies
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.policy_arn)
            .collect())
    }

    /// AttachRolePolicy.
    pub async fn attach_role_policy(&self, role: &str, policy_arn: &str) -> Result<(), AwsError> {
        sdk!(self
            .iam
            .attach_role_policy()
            .role_name(role)
            .policy_arn(policy_arn))
        .map(drop)
    }

    // ---- IoT ----

    /// DescribeRoleAlias.
    pub async fn describe_role_alias(
        &self,
        alias: &str,
    ) -> Result<Option<RoleAliasInfo>, AwsError> {
        let output = found(sdk!(self.iot.describe_role_alias().role_alias(alias)))?;
        Ok(output
            .and_then(|o| o.role_alias_description)
            .map(|d| RoleAliasInfo {
                arn: d.role_alias_arn.unwrap_or_default(),
                role_arn: d.role_arn.unwrap_or_default(),
                credential_duration_seconds: d.credential_duration_seconds.unwrap_or(3600),
            }))
    }

    /// CreateRoleAlias; returns the ARN.
    pub async fn create_role_alias(
        &self,
        alias: &str,
        role_arn: &str,
        seconds: i32,
    ) -> Result<String, AwsError> {
        let output = sdk!(self
            .iot
            .create_role_alias()
            .role_alias(alias)
            .role_arn(role_arn)
            .credential_duration_seconds(seconds))?;
        output
            .role_alias_arn
            .ok_or_else(|| AwsError::Uncertain("CreateRoleAlias returned no ARN".into()))
    }

    /// UpdateRoleAlias.
    pub async fn update_role_alias(
        &self,
        alias: &str,
        role_arn: &str,
        seconds: i32,
    ) -> Result<(), AwsError> {
        sdk!(self
            .iot
            .update_role_alias()
            .role_alias(alias)
            .role_arn(role_arn)
            .credential_duration_seconds(seconds))
        .map(drop)
    }

    /// GetPolicy (IoT): ARN and default version's document.
    pub async fn get_iot_policy(&self, name: &str) -> Result<Option<PolicyInfo>, AwsError> {
        let output = found(sdk!(self.iot.get_policy().policy_name(name)))?;
        Ok(output.map(|o| PolicyInfo {
            arn: o.policy_arn.unwrap_or_default(),
            document: o.policy_document.unwrap_or_default(),
        }))
    }

    /// CreatePolicy (IoT); returns the ARN.
    pub async fn create_iot_policy(&self, name: &str, document: &str) -> Result<String, AwsError> {
        let output = sdk!(self
            .iot
            .create_policy()
            .policy_name(name)
            .policy_document(document))?;
        output
            .policy_arn
            .ok_or_else(|| AwsError::Uncertain("CreatePolicy returned no ARN".into()))
    }

    /// CreatePolicyVersion (IoT) as the default, making room first when needed.
    pub async fn update_iot_policy(&self, name: &str, document: &str) -> Result<(), AwsError> {
        let versions = sdk!(self.iot.list_policy_versions().policy_name(name))?
            .policy_versions
            .unwrap_or_default();
        if let Some(oldest) = version_to_drop(versions.into_iter().map(Version::parts)) {
            sdk!(self
                .iot
                .delete_policy_version()
                .policy_name(name)
                .policy_version_id(oldest))?;
        }
        sdk!(self
            .iot
            .create_policy_version()
            .policy_name(name)
            .policy_document(document)
            .set_as_default(true))
        .map(drop)
    }

    /// DescribeThingGroup, as its ARN.
    pub async fn thing_group_arn(&self, name: &str) -> Result<Option<String>, AwsError> {
        let output = found(sdk!(self.iot.describe_thing_group().thing_group_name(name)))?;
        Ok(output.and_then(|o| o.thing_group_arn))
    }

    /// CreateThingGroup; returns the ARN.
    pub async fn create_thing_group(&self, name: &str) -> Result<String, AwsError> {
        let output = sdk!(self.iot.create_thing_group().thing_group_name(name))?;
        output
            .thing_group_arn
            .ok_or_else(|| AwsError::Uncertain("CreateThingGroup returned no ARN".into()))
    }

    /// Lambda GetFunction, or `None` when there is no function of that name.
    pub async fn get_function(&self, name: &str) -> Result<Option<FunctionInfo>, AwsError> {
        let output = found(sdk!(self.lambda.get_function().function_name(name)))?;
        Ok(output.and_then(|o| o.configuration).map(|c| FunctionInfo {
            arn: c.function_arn.unwrap_or_default(),
            code_sha256: c.code_sha256.unwrap_or_default(),
            role: c.role.unwrap_or_default(),
            handler: c.handler.unwrap_or_default(),
            runtime: c
                .runtime
                .map(|r| r.as_str().to_string())
                .unwrap_or_default(),
            timeout: c.timeout.unwrap_or_default(),
            memory_mb: c.memory_size.unwrap_or_default(),
            environment: c
                .environment
                .and_then(|e| e.variables)
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }))
    }

    /// Lambda CreateFunction; returns the function's ARN.
    pub async fn create_function(&self, spec: &FunctionSpec<'_>) -> Result<String, AwsError> {
        let code = aws_sdk_lambda::types::FunctionCode::builder()
            .zip_file(aws_sdk_lambda::primitives::Blob::new(spec.package))
            .build();
        let output = sdk!(self
            .lambda
            .create_function()
            .function_name(spec.name)
            .runtime(aws_sdk_lambda::types::Runtime::from(spec.runtime))
            .role(spec.role_arn)
            .handler(spec.handler)
            .timeout(spec.timeout)
            .memory_size(spec.memory_mb)
            .environment(lambda_environment(spec.environment))
            .code(code))?;
        Ok(output.function_arn.unwrap_or_default())
    }

    /// Lambda UpdateFunctionCode, then UpdateFunctionConfiguration (role, handler, runtime,
    /// timeout, memory, environment).
    pub async fn update_function(&self, spec: &FunctionSpec<'_>) -> Result<(), AwsError> {
        sdk!(self
            .lambda
            .update_function_code()
            .function_name(spec.name)
            .zip_file(aws_sdk_lambda::primitives::Blob::new(spec.package)))?;
        use backon::{ConstantBuilder, Retryable};
        // Lambda refuses a configuration update while the code update is still in progress.
        (|| async {
            sdk!(self
                .lambda
                .update_function_configuration()
                .function_name(spec.name)
                .runtime(aws_sdk_lambda::types::Runtime::from(spec.runtime))
                .role(spec.role_arn)
                .handler(spec.handler)
                .timeout(spec.timeout)
                .memory_size(spec.memory_mb)
                .environment(lambda_environment(spec.environment)))
        })
        .retry(
            ConstantBuilder::default()
                .with_delay(Duration::from_secs(2))
                .with_max_times(30),
        )
        .when(|e| matches!(e, AwsError::Rejected(m) if m.contains("ResourceConflictException")))
        .await?;
        Ok(())
    }

    /// Lambda GetPolicy: the function's resource policy, or `None` when it has none.
    pub async fn function_policy(&self, function_arn: &str) -> Result<Option<String>, AwsError> {
        let output = found(sdk!(self.lambda.get_policy().function_name(function_arn)))?;
        Ok(output.and_then(|o| o.policy))
    }

    /// Lambda AddPermission: lets AWS IoT invoke the function on behalf of one account only
    /// (against the confused-deputy problem; see `core::account_documents::HookPermission`).
    pub async fn allow_iot_invoke(
        &self,
        function_arn: &str,
        statement_id: &str,
        account_id: &str,
    ) -> Result<(), AwsError> {
        sdk!(self
            .lambda
            .add_permission()
            .function_name(function_arn)
            .statement_id(statement_id)
            .action("lambda:InvokeFunction")
            .principal("iot.amazonaws.com")
            .source_account(account_id))?;
        Ok(())
    }

    /// Lambda RemovePermission (to replace a statement that differs).
    pub async fn remove_permission(
        &self,
        function_arn: &str,
        statement_id: &str,
    ) -> Result<(), AwsError> {
        sdk!(self
            .lambda
            .remove_permission()
            .function_name(function_arn)
            .statement_id(statement_id))?;
        Ok(())
    }

    /// DescribeProvisioningTemplate.
    pub async fn describe_template(&self, name: &str) -> Result<Option<TemplateInfo>, AwsError> {
        describe_template(&self.iot, name).await
    }

    fn hook(arn: Option<&str>) -> Option<aws_sdk_iot::types::ProvisioningHook> {
        arn.and_then(|arn| {
            aws_sdk_iot::types::ProvisioningHook::builder()
                .target_arn(arn)
                .build()
                .ok()
        })
    }

    /// CreateProvisioningTemplate, enabled; returns the ARN.
    pub async fn create_template(&self, spec: &TemplateSpec<'_>) -> Result<String, AwsError> {
        let output = sdk!(self
            .iot
            .create_provisioning_template()
            .template_name(spec.name)
            .description(spec.description)
            .template_body(spec.body)
            .enabled(true)
            .provisioning_role_arn(spec.role_arn)
            .set_pre_provisioning_hook(Self::hook(spec.hook_arn)))?;
        output
            .template_arn
            .ok_or_else(|| AwsError::Uncertain("CreateProvisioningTemplate returned no ARN".into()))
    }

    /// Brings an existing template to `spec`: a new default version for the body (making
    /// room first when needed), then description, role, hook and enabled.
    pub async fn update_template(
        &self,
        spec: &TemplateSpec<'_>,
        body_changed: bool,
    ) -> Result<(), AwsError> {
        if body_changed {
            let versions = sdk!(self
                .iot
                .list_provisioning_template_versions()
                .template_name(spec.name))?
            .versions
            .unwrap_or_default();
            if let Some(oldest) = version_to_drop(versions.into_iter().map(Version::parts)) {
                sdk!(self
                    .iot
                    .delete_provisioning_template_version()
                    .template_name(spec.name)
                    .version_id(oldest))?;
            }
            sdk!(self
                .iot
                .create_provisioning_template_version()
                .template_name(spec.name)
                .template_body(spec.body)
                .set_as_default(true))?;
        }
        let hook = Self::hook(spec.hook_arn);
        sdk!(self
            .iot
            .update_provisioning_template()
            .template_name(spec.name)
            .description(spec.description)
            .enabled(true)
            .provisioning_role_arn(spec.role_arn)
            .set_remove_pre_provisioning_hook(hook.is_none().then_some(true))
            .set_pre_provisioning_hook(hook))
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_table_is_indexed_by_the_enum() {
        for (index, api) in Api::ALL.iter().enumerate() {
            assert_eq!(*api as usize, index, "{api:?}");
        }
        assert_eq!(Api::AttachPolicy.name(), "AttachPolicy");
    }

    #[test]
    fn the_oldest_non_default_version_makes_room() {
        let v = |default, created, id: &str| (default, Some(created), Some(id.to_string()));
        let full = vec![
            v(false, 3, "c"),
            v(true, 1, "a"),
            v(false, 2, "b"),
            v(false, 4, "d"),
            v(false, 5, "e"),
        ];
        assert_eq!(
            version_to_drop(full.clone().into_iter()).as_deref(),
            Some("b")
        );
        assert_eq!(
            version_to_drop(full[..4].iter().cloned()),
            None,
            "room left"
        );
    }
}
