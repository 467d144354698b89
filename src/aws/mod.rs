//! The AWS seam: the only module that names `aws_sdk_*`, behind the `cloud` traits. By
//! concern: `config` loads the SDK config the standard way (credential chain, `AWS_PROFILE`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL` or `--endpoint-url`); `errors` maps SDK errors once into
//! [`AwsError`] by AWS's error code; `calls` is the one call path (per-API pace,
//! attempt counts, retries) that every request of both clients takes, `pace` the adaptive
//! rate of each API (slower on throttling, back up on success); `iot` is [`Iot`]
//! (claims and inventory); `account` is [`AccountClient`] (account setup); `versions` makes
//! room for a new policy or template version.

#[macro_use]
mod errors;
#[macro_use]
mod calls;
mod account;
mod config;
mod iot;
mod pace;
mod versions;

pub use crate::cloud::{
    AwsError, CertificateDescription, CertificateSummary, Claims, EndpointKind, Inventory,
    NewCertificate, OutOfService, TemplateInfo,
};
pub use account::AccountClient;
pub use config::AwsSettings;
pub use iot::Iot;
