//! The one call path of every AWS request, claims and setup alike: [`Api`], the table of the
//! operations claimfab sends (each with its own adaptive pace and attempt count), and
//! [`Calls`], which paces each attempt, counts it, tells the pace how AWS answered, and tries
//! a failed one again (backoff with jitter) while the failure allows it. A throttled attempt
//! (AWS did not execute it) is always tried again, on a budget of its own, at the pace it
//! slowed. The SDK's own retries are off everywhere, so every attempt AWS sees passes here.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::pace::Pace;
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

    /// Whether a failure other than throttling is tried again: no answer, only where a
    /// repeat cannot make a second certificate (a repeated create of a named resource is
    /// answered "already exists", which setup reads as there).
    fn retries(self, error: &AwsError) -> bool {
        matches!(error, AwsError::Uncertain(_)) && self != Api::CreateCertificateFromCsr
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

/// Throttled attempts a call may meet before it gives up: AWS did not execute them, and the
/// pace slows at each excess, so only an account whose quota is far below the pace's floor
/// (or taken by others) runs out; with the backoff below, that is about six minutes.
const THROTTLE_RETRIES: usize = 60;

/// The backoff (exponential, with jitter) before attempt n+1 of a call: after a failure
/// without an answer, and, on its own budget, after a throttle (shorter: the pace itself has
/// slowed, and the wait only spreads the retries of the requests throttled together).
fn backoff(throttled: bool, retries: usize) -> impl Iterator<Item = Duration> {
    let (min, max) = match throttled {
        true => (Duration::from_millis(50), Duration::from_secs(5)),
        false => (Duration::from_millis(100), Duration::from_secs(20)),
    };
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_max_times(retries)
        .with_jitter()
        .build()
}

/// The one place every request passes: a pace per API, a count of attempts, and the
/// retries.
pub(super) struct Calls {
    paces: Vec<Pace>,
    attempts: Vec<AtomicU64>,
    max_attempts: u32,
    throttle_retries: usize,
}

impl Calls {
    pub(super) fn new(limits: &LimitsSection) -> Self {
        Self {
            paces: Api::ALL
                .iter()
                .map(|api| Pace::new(api.per_second(limits)))
                .collect(),
            attempts: Api::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            max_attempts: limits.max_attempts,
            throttle_retries: THROTTLE_RETRIES,
        }
    }

    /// Waits for `api`'s next slot and counts the attempt about to be sent; returns the
    /// epoch of its pace it is sent in.
    async fn admit(&self, api: Api) -> u64 {
        let index = api as usize;
        let epoch = self.paces[index].admit().await;
        self.attempts[index].fetch_add(1, Ordering::Relaxed);
        epoch
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

    /// Sends one request through pacing and counting, tells the pace how AWS answered, and
    /// tries it again (backoff with jitter) while the failure allows it and attempts are
    /// left: a throttle on its own budget, any other failure within `max_attempts`.
    pub(super) async fn call<T, Fut>(&self, api: Api, send: impl Fn() -> Fut) -> Result<T, AwsError>
    where
        Fut: Future<Output = Result<T, AwsError>>,
    {
        let pace = &self.paces[api as usize];
        let retries = api.max_attempts(self.max_attempts).saturating_sub(1);
        let mut after_failure = backoff(false, retries as usize);
        let mut after_throttle = backoff(true, self.throttle_retries);
        loop {
            let epoch = self.admit(api).await;
            let error = match send().await {
                Ok(value) => {
                    pace.succeeded();
                    return Ok(value);
                }
                Err(error) => error,
            };
            let wait = match &error {
                AwsError::Throttled(_) => {
                    pace.throttled(epoch);
                    after_throttle.next()
                }
                error if api.retries(error) => after_failure.next(),
                _ => None,
            };
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(error),
            }
        }
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
    async fn throttling_is_tried_again_at_a_slower_pace_and_every_attempt_is_counted() {
        let calls = calls(5);
        let throttled = || AwsError::from_code("Throttling", Some(400), "Rate exceeded".into());
        let send = transport(vec![throttled(), throttled()]);
        assert_eq!(calls.call(Api::CreateRole, send).await.unwrap(), 7);
        assert_eq!(calls.counts(), vec![("CreateRole", 3)]);
        // IAM's 5/s, slowed by each throttle of an attempt sent at the current pace (both
        // were: the second was sent after the first slowed it), then one success.
        let rate = calls.paces[Api::CreateRole as usize].rate();
        assert!(rate > 5.0 * 0.7 * 0.7 && rate < 5.0 * 0.7, "{rate}");
        assert_eq!(calls.paces[Api::GetRole as usize].rate(), 5.0, "per API");
    }

    #[tokio::test]
    async fn throttles_have_their_own_budget_and_a_throttled_create_is_sent_again() {
        // No retry after a failure, yet three throttles in a row are outlasted: AWS executed
        // none of them, not even the create.
        let calls = calls(1);
        let throttled = |_| AwsError::Throttled("ThrottlingException".into());
        let send = transport((0..3).map(throttled).collect());
        assert_eq!(
            calls
                .call(Api::CreateCertificateFromCsr, send)
                .await
                .unwrap(),
            7
        );
        assert_eq!(calls.counts(), vec![("CreateCertificateFromCsr", 4)]);
        // That budget runs out too.
        let mut calls = self::calls(1);
        calls.throttle_retries = 2;
        let send = transport((0..5).map(throttled).collect());
        let error = calls.call(Api::ListThings, send).await.unwrap_err();
        assert!(matches!(error, AwsError::Throttled(_)), "{error}");
        assert_eq!(calls.counts(), vec![("ListThings", 3)]);
    }

    #[tokio::test]
    async fn attempts_run_out_and_definite_refusals_are_not_repeated() {
        let calls = calls(2);
        let lost = |_| AwsError::Uncertain("timeout".into());
        let send = transport((0..5).map(lost).collect());
        let error = calls.call(Api::GetRole, send).await.unwrap_err();
        assert!(matches!(error, AwsError::Uncertain(_)), "{error}");
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
        assert_eq!(
            calls.paces[Api::GetRole as usize].rate(),
            5.0,
            "only throttling slows the pace"
        );
    }
}
