//! What the commands need of AWS, as narrow traits with no SDK types in them: [`Claims`]
//! (making, attaching and retiring claim certificates, and finding those an interrupted run
//! left), [`Inventory`] (the reads of preflight and audit), and [`AccountApi`] (the reads
//! and writes of the one-time account setup, in `cloud::account`). `aws::Iot` implements the
//! first two and `aws::AccountClient` the third against AWS, every call paced, counted and
//! retried by the same call path; tests implement them in memory to drive crash recovery at
//! every journal point and setup through every scenario. The vocabulary shared by both
//! sides lives here too, with [`AwsError::from_code`], the one reading of AWS's error codes.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use time::OffsetDateTime;

pub use crate::core::ledger::CertificateStatus;

mod account;

pub use account::{
    AccountApi, FunctionInfo, FunctionSpec, PolicyInfo, RoleAliasInfo, RoleInfo, TemplateSpec,
};

/// A failed AWS call, classified by what the caller can conclude: [`AwsError::from_code`]
/// reads AWS's error code (and HTTP status) into the kind, so that no caller reads the
/// message. The text is AWS's code and message, for people.
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
    /// A create found a resource of that name already there (EntityAlreadyExists,
    /// ResourceAlreadyExistsException): it was not executed.
    #[error("already exists ({0})")]
    AlreadyExists(String),
    /// The resource is in a state that refuses the request now, such as an update still in
    /// progress or (Lambda) a name or statement already taken (ResourceConflictException):
    /// it was not executed.
    #[error("conflicts with the resource's state ({0})")]
    Conflict(String),
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

    /// The error AWS answered with `code` (its error type, as in the error metadata) and
    /// `status` (HTTP), `detail` the text shown. The code decides; the status only where the
    /// code is one this table does not know.
    pub fn from_code(code: &str, status: Option<u16>, detail: String) -> Self {
        match (code, status) {
            (
                "ThrottlingException"
                | "Throttling"
                | "TooManyRequestsException"
                | "RequestLimitExceeded",
                _,
            )
            | (_, Some(429)) => AwsError::Throttled(detail),
            ("ResourceNotFoundException" | "NoSuchEntity", _) | (_, Some(404)) => {
                AwsError::NotFound(detail)
            }
            (
                "AccessDenied"
                | "AccessDeniedException"
                | "UnauthorizedException"
                | "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "ExpiredTokenException",
                _,
            )
            | (_, Some(401 | 403)) => AwsError::AccessDenied(detail),
            ("EntityAlreadyExists" | "ResourceAlreadyExistsException", _) => {
                AwsError::AlreadyExists(detail)
            }
            (
                "ResourceConflictException"
                | "ConcurrentModification"
                | "ConflictingResourceUpdateException",
                _,
            ) => AwsError::Conflict(detail),
            (_, Some(s)) if s >= 500 => AwsError::Uncertain(detail),
            _ => AwsError::Rejected(detail),
        }
    }
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

/// The status a claim certificate is taken out of service with (UpdateCertificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfService {
    /// Can be set ACTIVE again.
    Inactive,
    /// Final: AWS refuses any later status change.
    Revoked,
}

impl From<OutOfService> for CertificateStatus {
    fn from(status: OutOfService) -> Self {
        match status {
            OutOfService::Inactive => CertificateStatus::Inactive,
            OutOfService::Revoked => CertificateStatus::Revoked,
        }
    }
}

/// What DescribeCertificate says of a certificate.
#[derive(Debug, Clone)]
pub struct CertificateDescription {
    pub pem: String,
    pub status: CertificateStatus,
}

/// Which account endpoint DescribeEndpoint should return.
#[derive(Debug, Clone, Copy)]
pub enum EndpointKind {
    DataAts,
    CredentialProvider,
}

impl EndpointKind {
    /// DescribeEndpoint's name for it.
    pub fn endpoint_type(self) -> &'static str {
        match self {
            EndpointKind::DataAts => "iot:Data-ATS",
            EndpointKind::CredentialProvider => "iot:CredentialProvider",
        }
    }
}

/// A fleet-provisioning template.
#[derive(Debug, Clone)]
pub struct TemplateInfo {
    pub arn: String,
    pub body: String,
    pub enabled: bool,
    pub role_arn: String,
    pub hook_arn: Option<String>,
    pub description: String,
}

/// The claim-certificate operations of `batch`, `revoke` and `rotate`. Every call may fail
/// with an [`AwsError`] that says whether it may still have taken effect.
pub trait Claims: Send + Sync + 'static {
    /// CreateCertificateFromCsr, the certificate ACTIVE. Never retried blindly: a retry
    /// after a lost answer would make a second certificate.
    fn create_certificate_from_csr(
        &self,
        csr_pem: &str,
    ) -> impl Future<Output = Result<NewCertificate, AwsError>> + Send;

    /// AttachPolicy (idempotent).
    fn attach_policy(
        &self,
        policy: &str,
        certificate_arn: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// UpdateCertificate to INACTIVE or REVOKED (idempotent).
    fn set_certificate_status(
        &self,
        certificate_id: &str,
        status: OutOfService,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// DetachPolicy.
    fn detach_policy(
        &self,
        policy: &str,
        certificate_arn: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// DeleteCertificate (the certificate must be INACTIVE or REVOKED, with no policy).
    fn delete_certificate(
        &self,
        certificate_id: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// DescribeCertificate: its PEM and status.
    fn describe_certificate(
        &self,
        certificate_id: &str,
    ) -> impl Future<Output = Result<CertificateDescription, AwsError>> + Send;

    /// ListCertificates, newest first, down to certificates created at `since`.
    fn certificates_created_since(
        &self,
        since: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<CertificateSummary>, AwsError>> + Send;

    /// Requests sent so far per API, every attempt counted (what AWS's quotas saw).
    fn call_counts(&self) -> Vec<(&'static str, u64)>;
}

/// The reads of batch preflight and `audit`.
pub trait Inventory: Send + Sync {
    /// The region calls go to.
    fn region(&self) -> &str;

    /// DescribeEndpoint.
    fn describe_endpoint(
        &self,
        kind: EndpointKind,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;

    /// GetPolicy: the default version's document, `None` when no policy has that name.
    fn policy_document(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;

    /// DescribeProvisioningTemplate, `None` when no template has that name.
    fn provisioning_template(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<TemplateInfo>, AwsError>> + Send;

    /// Every certificate of the account and region: id -> status.
    fn certificate_statuses(
        &self,
    ) -> impl Future<Output = Result<HashMap<String, CertificateStatus>, AwsError>> + Send;

    /// Every certificate of the account and region: ARN -> when it was created.
    fn certificate_creation_times(
        &self,
    ) -> impl Future<Output = Result<HashMap<String, OffsetDateTime>, AwsError>> + Send;

    /// The ARNs a policy is attached to.
    fn policy_targets(
        &self,
        policy: &str,
    ) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;

    /// Every thing name of the account and region.
    fn thing_names(&self) -> impl Future<Output = Result<HashSet<String>, AwsError>> + Send;

    /// The principals (certificate ARNs) attached to a thing; empty when there is no thing.
    fn thing_principals(
        &self,
        thing: &str,
    ) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;

    /// The things a principal (certificate ARN) is attached to; empty when there is none.
    fn principal_things(
        &self,
        principal: &str,
    ) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::AwsError;

    fn kind(code: &str, status: u16) -> String {
        let error = AwsError::from_code(code, Some(status), code.into());
        format!("{error:?}").split('(').next().unwrap().to_string()
    }

    #[test]
    fn the_code_decides_the_kind_and_the_status_only_for_codes_not_known() {
        let cases = [
            ("Throttling", 400, "Throttled"),
            ("ThrottlingException", 400, "Throttled"),
            ("NoSuchEntity", 404, "NotFound"),
            ("ResourceNotFoundException", 404, "NotFound"),
            ("AccessDenied", 403, "AccessDenied"),
            ("AccessDeniedException", 403, "AccessDenied"),
            ("EntityAlreadyExists", 409, "AlreadyExists"),
            ("ResourceAlreadyExistsException", 409, "AlreadyExists"),
            ("ResourceConflictException", 409, "Conflict"),
            ("InvalidParameterValueException", 400, "Rejected"),
            ("CertificateStateException", 406, "Rejected"),
            ("LimitExceeded", 409, "Rejected"),
            ("InternalFailureException", 500, "Uncertain"),
            ("SomethingNew", 429, "Throttled"),
            ("SomethingNew", 403, "AccessDenied"),
            ("SomethingNew", 503, "Uncertain"),
        ];
        for (code, status, expected) in cases {
            assert_eq!(kind(code, status), expected, "{code} {status}");
        }
        let error = AwsError::from_code("NoSuchEntity", Some(404), "NoSuchEntity: role R".into());
        assert_eq!(error.to_string(), "not found (NoSuchEntity: role R)");
    }
}
