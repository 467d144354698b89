//! The one call path of every AWS request, claims and setup alike: [`Api`], the table of the
//! operations claimfab sends (each with its own token bucket and attempt count), and
//! [`Calls`], which paces each attempt, counts it, and tries a failed one again (backoff with
//! jitter) while the failure allows it. The SDK's own retries are off everywhere, so every
//! attempt AWS sees passes here.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::cloud::AwsError;
use crate::core::station_config::LimitsSection;

/// Sends one SDK request through [`Calls::call`] as `api`, a new request each attempt.
macro_rules! call {
    ($calls:expr, $api:ident, $request:expr) => {
        $calls
            .call($crate::aws::calls::Api::$api, || async { sdk!($request) })
            .await
    };
}

/// The AWS service an [`Api`] belongs to, for its default pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Service {
    Iot,
    Iam,
    Lambda,
    Sts,
}

impl Service {
    /// Requests per second when nothing more specific is known: AWS IoT's lowest default
    /// control-plane quota (10); Lambda's control plane allows 15 a second for all its APIs
    /// together; IAM publishes no rate but throttles an account's bursts as a whole, so it is
    /// called gently; STS GetCallerIdentity is called once a run.
    fn per_second(self) -> u32 {
        match self {
            Service::Iot | Service::Lambda | Service::Sts => 10,
            Service::Iam => 5,
        }
    }
}

/// Declares [`Api`] with its table of every variant (`Api::ALL`, in declaration order, so
/// `api as usize` indexes it), each variant's service and AWS operation name (the variant's
/// own unless given, for names two services share), from one list: the table cannot go out
/// of step with the enum.
macro_rules! apis {
    ($($service:ident: [$($api:ident $(= $name:literal)?),+ $(,)?]),+ $(,)?) => {
        /// The operations claimfab calls, each paced by its own token bucket and counted per
        /// attempt.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(super) enum Api {
            $($($api),+),+
        }

        impl Api {
            const ALL: &'static [Api] = &[$($(Api::$api),+),+];

            /// The AWS operation name.
            pub(super) fn name(self) -> &'static str {
                match self {
                    $($(Api::$api => apis!(@name $api $($name)?)),+),+
                }
            }

            fn service(self) -> Service {
                match self {
                    $($(Api::$api => Service::$service),+),+
                }
            }
        }
    };
    (@name $api:ident) => { stringify!($api) };
    (@name $api:ident $name:literal) => { $name };
}

apis![
    Iot: [
        // Claims and inventory.
        CreateCertificateFromCsr, AttachPolicy, UpdateCertificate, DescribeCertificate,
        DetachPolicy, DeleteCertificate, ListCertificates, ListTargetsForPolicy, ListThings,
        ListThingPrincipals, ListPrincipalThings, GetPolicy, DescribeEndpoint,
        DescribeProvisioningTemplate,
        // Account setup.
        DescribeRoleAlias, CreateRoleAlias, UpdateRoleAlias, CreatePolicy, ListPolicyVersions,
        DeletePolicyVersion, CreatePolicyVersion, DescribeThingGroup, CreateThingGroup,
        CreateProvisioningTemplate, ListProvisioningTemplateVersions,
        DeleteProvisioningTemplateVersion, CreateProvisioningTemplateVersion,
        UpdateProvisioningTemplate,
    ],
    Iam: [
        GetRole, CreateRole, UpdateAssumeRolePolicy, IamGetPolicy = "GetPolicy",
        GetPolicyVersion, IamCreatePolicy = "CreatePolicy",
        IamListPolicyVersions = "ListPolicyVersions",
        IamDeletePolicyVersion = "DeletePolicyVersion",
        IamCreatePolicyVersion = "CreatePolicyVersion", ListAttachedRolePolicies,
        AttachRolePolicy,
    ],
    Lambda: [
        GetFunction, CreateFunction, UpdateFunctionCode, UpdateFunctionConfiguration,
        LambdaGetPolicy = "GetPolicy", AddPermission, RemovePermission,
    ],
    Sts: [GetCallerIdentity],
];

impl Api {
    /// The station's rate for the per-device APIs; the service's default for the rest.
    fn per_second(self, limits: &LimitsSection) -> u32 {
        match self {
            Api::CreateCertificateFromCsr => limits.create_certificate_from_csr_per_second,
            Api::AttachPolicy => limits.attach_policy_per_second,
            Api::UpdateCertificate => limits.update_certificate_per_second,
            Api::DescribeCertificate => limits.describe_certificate_per_second,
            Api::DetachPolicy => limits.detach_policy_per_second,
            _ => self.service().per_second(),
        }
    }

    /// Whether a failed attempt is tried again: throttling (AWS did not execute it) always;
    /// no answer only where a repeat cannot make a second certificate (a repeated create of
    /// a named resource is answered "already exists", which setup reads as there).
    fn retries(self, error: &AwsError) -> bool {
        match error {
            AwsError::Throttled(_) => true,
            AwsError::Uncertain(_) => self != Api::CreateCertificateFromCsr,
            _ => false,
        }
    }

    /// Preflight reads and the caller check fail fast: a wrong endpoint or an outage should
    /// be reported in seconds, not after the retry budget meant for a running batch.
    fn max_attempts(self, configured: u32) -> u32 {
        match self {
            Api::GetPolicy
            | Api::DescribeEndpoint
            | Api::DescribeProvisioningTemplate
            | Api::GetCallerIdentity => configured.min(3),
            _ => configured,
        }
    }
}

fn limiter(per_second: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(per_second.max(1)).expect("max(1) is non-zero");
    // A burst of one keeps the pace even, so AWS's own bucket never sees more than the quota.
    RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN))
}

/// The one place every request passes: a token bucket per API, a count of attempts, and the
/// retries.
pub(super) struct Calls {
    limiters: Vec<DefaultDirectRateLimiter>,
    attempts: Vec<AtomicU64>,
    max_attempts: u32,
}

impl Calls {
    pub(super) fn new(limits: &LimitsSection) -> Self {
        Self {
            limiters: Api::ALL
                .iter()
                .map(|api| limiter(api.per_second(limits)))
                .collect(),
            attempts: Api::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            max_attempts: limits.max_attempts,
        }
    }

    /// Waits for `api`'s next slot and counts the attempt about to be sent.
    async fn admit(&self, api: Api) {
        let index = api as usize;
        self.limiters[index].until_ready().await;
        self.attempts[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests sent so far per API, every attempt counted.
    pub(super) fn counts(&self) -> Vec<(&'static str, u64)> {
        Api::ALL
            .iter()
            .map(|api| {
                let count = self.attempts[*api as usize].load(Ordering::Relaxed);
                (api.name(), count)
            })
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// Sends one request through pacing and counting, and tries it again (backoff with
    /// jitter) while the failure allows it and attempts are left.
    pub(super) async fn call<T, Fut>(&self, api: Api, send: impl Fn() -> Fut) -> Result<T, AwsError>
    where
        Fut: Future<Output = Result<T, AwsError>>,
    {
        use backon::{ExponentialBuilder, Retryable};
        let attempt = || async {
            self.admit(api).await;
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

    /// Reads a paged listing, each page one [`Calls::call`], until the last page or until
    /// `more` says the page just read is the last one needed.
    pub(super) async fn pages<T, Fut>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn the_api_table_is_indexed_by_the_enum() {
        for (index, api) in Api::ALL.iter().enumerate() {
            assert_eq!(*api as usize, index, "{api:?}");
        }
        assert_eq!(Api::AttachPolicy.name(), "AttachPolicy");
        assert_eq!(Api::IamGetPolicy.name(), "GetPolicy");
        assert_eq!(Api::IamGetPolicy.service(), Service::Iam);
        assert_eq!(Api::GetCallerIdentity.service(), Service::Sts);
    }

    /// A transport that answers each attempt with the next of `answers`, then Ok.
    fn transport(answers: Vec<AwsError>) -> impl Fn() -> std::future::Ready<Result<u8, AwsError>> {
        let answers = Mutex::new(answers.into_iter());
        move || std::future::ready(answers.lock().unwrap().next().map_or(Ok(7), Err))
    }

    fn calls(max_attempts: u32) -> Calls {
        let limits = LimitsSection {
            max_attempts,
            ..LimitsSection::default()
        };
        Calls::new(&limits)
    }

    #[tokio::test]
    async fn throttling_is_tried_again_and_every_attempt_is_counted() {
        let calls = calls(5);
        let throttled = || AwsError::from_code("Throttling", Some(400), "Rate exceeded".into());
        let send = transport(vec![throttled(), throttled()]);
        assert_eq!(calls.call(Api::CreateRole, send).await.unwrap(), 7);
        assert_eq!(calls.counts(), vec![("CreateRole", 3)]);
    }

    #[tokio::test]
    async fn attempts_run_out_and_definite_refusals_are_not_repeated() {
        let calls = calls(2);
        let throttled = |_| AwsError::Throttled("ThrottlingException".into());
        let send = transport((0..5).map(throttled).collect());
        let error = calls.call(Api::GetRole, send).await.unwrap_err();
        assert!(matches!(error, AwsError::Throttled(_)), "{error}");
        let denied = AwsError::from_code("AccessDenied", Some(403), "no".into());
        let send = transport(vec![denied]);
        assert!(calls.call(Api::AttachRolePolicy, send).await.is_err());
        let lost = AwsError::Uncertain("timeout".into());
        let send = transport(vec![lost]);
        let error = calls.call(Api::CreateCertificateFromCsr, send).await;
        assert!(
            error.is_err(),
            "a create that may have run is never sent again"
        );
        let mut counts = calls.counts();
        counts.sort();
        let expected = [
            ("AttachRolePolicy", 1),
            ("CreateCertificateFromCsr", 1),
            ("GetRole", 2),
        ];
        assert_eq!(counts, expected);
    }
}
