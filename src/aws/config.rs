//! The SDK config, loaded the standard way (credential chain, `AWS_PROFILE`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`) plus the station's and the command line's settings, checked once so
//! that a missing region or credentials is one line saying what to set.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;

use super::errors::error_chain;

/// How to reach AWS; unset fields fall back to the SDK's standard chain.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

/// Loads the SDK config the standard way plus `settings`, and checks that a region and
/// credentials resolve. Errors are one line saying what to set. The clients built from it
/// turn the SDK's own retries off: `calls::Calls` retries, pacing and counting each attempt.
pub(super) async fn load_config(
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
    check_credentials(&config).await?;
    Ok((config, region))
}

/// Whether the config's credentials resolve.
async fn check_credentials(config: &aws_config::SdkConfig) -> Result<(), String> {
    use aws_credential_types::provider::ProvideCredentials;
    let credentials = config.credentials_provider().ok_or_else(|| {
        "no AWS credentials provider: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            .to_string()
    })?;
    credentials.provide_credentials().await.map_err(|e| {
        format!(
            "no AWS credentials ({}); set AWS_PROFILE, run `aws sso login`, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            error_chain(&e)
        )
    })?;
    Ok(())
}
