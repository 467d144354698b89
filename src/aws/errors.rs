//! SDK errors into [`AwsError`]: the one place that reads an SDK error. A service error's
//! code (`ProvideErrorMetadata::code`) and HTTP status go to [`AwsError::from_code`], which
//! decides the kind; the text kept is AWS's code and message, for people.

use aws_sdk_iot::config::http::HttpResponse;
use aws_sdk_iot::error::{ProvideErrorMetadata, SdkError};

use crate::cloud::AwsError;

/// Sends one SDK request and classifies its failure: the tail every call shares.
macro_rules! sdk {
    ($request:expr) => {
        $request.send().await.map_err($crate::aws::errors::classify)
    };
}

/// Classifies a failed SDK call by AWS's error code.
pub(super) fn classify<E>(error: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("Unknown");
            let detail = match err.message().unwrap_or_default() {
                "" => code.to_string(),
                message => format!("{code}: {message}"),
            };
            let status = service.raw().status().as_u16();
            AwsError::from_code(code, Some(status), detail)
        }
        SdkError::ConstructionFailure(_) => AwsError::Rejected(error_chain(&error)),
        _ => AwsError::Uncertain(error_chain(&error)),
    }
}

/// An error and its sources, on one line.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Turns NotFound into `None`.
pub(super) fn found<T>(result: Result<T, AwsError>) -> Result<Option<T>, AwsError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(AwsError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
