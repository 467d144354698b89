//! AWS's naming rules for the resources claimfab names (things, policies, templates, role
//! aliases, regions) and the shape of on-device paths. Each check returns the rule broken, in
//! words a user can act on.

fn check_chars(
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    allowed_text: &str,
) -> Result<(), String> {
    if value.is_empty() || value.chars().count() > max {
        return Err(format!("must be 1 to {max} characters of {allowed_text}"));
    }
    if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "character {c:?} is not allowed; use only {allowed_text} (1 to {max})"
        ));
    }
    Ok(())
}

/// AWS IoT thing and thing-group names: `[a-zA-Z0-9:_-]`, 1 to 128 characters.
pub fn check_thing_name(name: &str) -> Result<(), String> {
    check_chars(
        name,
        128,
        |c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'),
        "letters, digits, ':', '_' and '-'",
    )
}

/// AWS IoT policy names: `[\w+=,.@-]`, 1 to 128 characters.
pub fn check_policy_name(name: &str) -> Result<(), String> {
    check_chars(
        name,
        128,
        |c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c),
        "letters, digits and _+=,.@-",
    )
}

/// Provisioning template names: `[0-9A-Za-z_-]`, 1 to 36 characters.
pub fn check_template_name(name: &str) -> Result<(), String> {
    check_chars(
        name,
        36,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'),
        "letters, digits, '_' and '-'",
    )
}

/// Role alias names: `[\w=,@-]`, 1 to 128 characters.
pub fn check_role_alias(name: &str) -> Result<(), String> {
    check_chars(
        name,
        128,
        |c| c.is_ascii_alphanumeric() || "_=,@-".contains(c),
        "letters, digits and _=,@-",
    )
}

/// IAM role and policy names: `[\w+=,.@-]`, 1 to `max` characters.
pub fn check_iam_name(name: &str, max: usize) -> Result<(), String> {
    check_chars(
        name,
        max,
        |c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c),
        "letters, digits and _+=,.@-",
    )
}

/// Lambda function names: 1 to 64 letters, digits, hyphens and underscores.
pub fn check_function_name(name: &str) -> Result<(), String> {
    check_chars(
        name,
        64,
        |c| c.is_ascii_alphanumeric() || "_-".contains(c),
        "letters, digits, '_' and '-'",
    )
}

/// S3 bucket names: 3 to 63 lowercase letters, digits, dots and hyphens, starting and
/// ending with a letter or digit.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("must be an S3 bucket name: 3 to 63 lowercase letters, digits, '.' and '-'".into())
    }
}

/// Region codes such as `us-east-1` or `eu-central-2`.
pub fn check_region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let shaped = parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok();
    if shaped {
        Ok(())
    } else {
        Err("is not a region code like us-east-1".into())
    }
}

/// Endpoint host names (no scheme, no path).
pub fn check_hostname(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if ok {
        Ok(())
    } else {
        Err("must be a host name such as abc123-ats.iot.us-east-1.amazonaws.com (no https://, no path)".into())
    }
}

/// Greengrass nucleus versions: `MAJOR.MINOR.PATCH`.
pub fn check_version(version: &str) -> Result<(), String> {
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.parse::<u32>().is_ok())
    {
        Ok(())
    } else {
        Err("must be a version like 2.14.3".into())
    }
}

/// Absolute POSIX paths on the device, without `..`, empty or `.` components.
pub fn check_device_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must be an absolute path on the device, like /greengrass/v2".into());
    }
    let components: Vec<&str> = path[1..].split('/').collect();
    if components
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
        || path.chars().any(|c| c.is_control() || c == '\\')
    {
        return Err(
            "must be a plain absolute path (no '..', '.', '//', '\\' or control characters)".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thing_names_follow_aws_rules() {
        assert!(check_thing_name("gg-core:line1_0001").is_ok());
        assert!(check_thing_name(&"a".repeat(128)).is_ok());
        assert!(check_thing_name(&"a".repeat(129)).is_err());
        assert!(check_thing_name("").is_err());
        let err = check_thing_name("dev 1").unwrap_err();
        assert!(err.contains("' '"), "{err}");
        assert!(check_thing_name("dev/1").is_err());
        assert!(check_thing_name("dév").is_err());
    }

    #[test]
    fn other_names() {
        assert!(check_policy_name("Claim.Policy@v1=2,+").is_ok());
        assert!(check_policy_name("a b").is_err());
        assert!(check_template_name(&"t".repeat(36)).is_ok());
        assert!(check_template_name(&"t".repeat(37)).is_err());
        assert!(check_role_alias("GreengrassCoreTokenExchangeRoleAlias").is_ok());
        assert!(check_region("us-east-1").is_ok());
        assert!(check_region("us-gov-west-1").is_ok());
        assert!(check_region("useast1").is_err());
        assert!(check_hostname("abc-ats.iot.us-east-1.amazonaws.com").is_ok());
        assert!(check_hostname("https://x").is_err());
        assert!(check_version("2.14.3").is_ok());
        assert!(check_version("2.14").is_err());
        assert!(check_device_path("/greengrass/v2/a.pem").is_ok());
        assert!(check_device_path("/greengrass/../etc").is_err());
        assert!(check_device_path("/greengrass//a").is_err());
    }
}
