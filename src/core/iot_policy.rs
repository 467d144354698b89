//! AWS IoT policy documents, read and evaluated as AWS IoT evaluates them for one request:
//! an explicit Deny wins, else an Allow whose Action and Resource patterns match is needed.
//! Patterns use IAM's wildcards (`*` any run of characters, `/` included; `?` one character);
//! actions compare without regard to case, resources with it. Policy variables
//! (`${iot:ClientId}` ...) are filled in from what the caller knows of the connection; an
//! unknown variable matches nothing. Also AWS IoT's policy size rule (2048 characters,
//! whitespace excluded).

use std::collections::BTreeMap;

use serde_json::Value;

/// AWS IoT's limit on a policy document's size, counted without whitespace.
pub const MAX_POLICY_CHARS: usize = 2048;

/// The size AWS IoT counts against [`MAX_POLICY_CHARS`]: characters other than whitespace.
pub fn policy_size(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

/// What a policy says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No statement allows it (AWS's implicit deny).
    NotAllowed,
    /// A statement denies it.
    Denied,
}

#[derive(Debug, Clone)]
struct Statement {
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    /// Conditions are not evaluated: a conditional Allow counts as allowing (the check
    /// never refuses a policy that may work); a conditional Deny is ignored for the same
    /// reason.
    conditional: bool,
}

/// A parsed AWS IoT policy document.
#[derive(Debug, Clone)]
pub struct PolicyDocument {
    statements: Vec<Statement>,
}

fn strings(value: Option<&Value>, field: &str) -> Result<Vec<String>, String> {
    match value {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{field} holds a non-string value"))
            })
            .collect(),
        None => Ok(Vec::new()),
        Some(_) => Err(format!("{field} must be a string or a list of strings")),
    }
}

impl PolicyDocument {
    /// Reads a policy document (JSON text as GetPolicy returns it).
    pub fn parse(text: &str) -> Result<Self, String> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| format!("not a JSON document ({e})"))?;
        let statements = match doc.get("Statement") {
            Some(Value::Array(items)) => items.clone(),
            Some(single @ Value::Object(_)) => vec![single.clone()],
            _ => return Err("has no Statement list".into()),
        };
        let statements = statements
            .iter()
            .map(|s| {
                let allow = match s.get("Effect").and_then(Value::as_str) {
                    Some("Allow") => true,
                    Some("Deny") => false,
                    _ => return Err("a statement's Effect is neither Allow nor Deny".to_string()),
                };
                Ok(Statement {
                    allow,
                    actions: strings(s.get("Action"), "Action")?,
                    resources: strings(s.get("Resource"), "Resource")?,
                    conditional: s.get("Condition").is_some(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self { statements })
    }

    /// What this policy says about `action` on `resource`, with `variables` (such as
    /// `iot:ClientId`) filled into the patterns.
    pub fn decide(
        &self,
        action: &str,
        resource: &str,
        variables: &BTreeMap<&str, &str>,
    ) -> Decision {
        let matches = |s: &Statement| {
            s.actions
                .iter()
                .any(|a| wildcard_match(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()))
                && s.resources
                    .iter()
                    .any(|r| substitute(r, variables).is_some_and(|r| wildcard_match(&r, resource)))
        };
        if self
            .statements
            .iter()
            .any(|s| !s.allow && !s.conditional && matches(s))
        {
            return Decision::Denied;
        }
        if self.statements.iter().any(|s| s.allow && matches(s)) {
            Decision::Allowed
        } else {
            Decision::NotAllowed
        }
    }
}

/// `pattern` with each `${name}` replaced from `variables`; `None` when one is unknown.
/// (Policy variables and the template function `Fn::Sub` share this syntax.)
pub fn substitute(pattern: &str, variables: &BTreeMap<&str, &str>) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        out.push_str(variables.get(&after[..end])?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// IAM-style wildcard match of the whole `text`.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Classic greedy match with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &[(&'a str, &'a str)]) -> BTreeMap<&'a str, &'a str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn wildcards_follow_iam() {
        assert!(wildcard_match(
            "topic/$aws/things/*",
            "topic/$aws/things/a/b"
        ));
        assert!(wildcard_match("client/SN?", "client/SN1"));
        assert!(!wildcard_match("client/SN?", "client/SN10"));
        assert!(wildcard_match("client/SN1*", "client/SN10"));
        assert!(!wildcard_match("client/SN1", "client/SN10"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "a-x-b-y-c"));
        assert!(!wildcard_match("a*b*c", "a-x-b-y-d"));
    }

    #[test]
    fn deny_wins_and_actions_ignore_case() {
        let doc = PolicyDocument::parse(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"iot:*","Resource":"*"},
                {"Effect":"Deny","Action":"IOT:PUBLISH","Resource":"topic/secret"}]}"#,
        )
        .unwrap();
        let none = vars(&[]);
        assert_eq!(
            doc.decide("iot:Publish", "topic/x", &none),
            Decision::Allowed
        );
        assert_eq!(
            doc.decide("iot:Publish", "topic/secret", &none),
            Decision::Denied
        );
    }

    #[test]
    fn single_statement_object_and_implicit_deny() {
        let doc = PolicyDocument::parse(
            r#"{"Statement":{"Effect":"Allow","Action":["iot:Connect"],"Resource":["client/a"]}}"#,
        )
        .unwrap();
        let none = vars(&[]);
        assert_eq!(
            doc.decide("iot:Connect", "client/a", &none),
            Decision::Allowed
        );
        assert_eq!(
            doc.decide("iot:Connect", "client/b", &none),
            Decision::NotAllowed
        );
    }

    #[test]
    fn policy_variables_are_filled_in() {
        let doc = PolicyDocument::parse(
            r#"{"Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"client/${iot:ClientId}"}]}"#,
        )
        .unwrap();
        assert_eq!(
            doc.decide("iot:Connect", "client/x", &vars(&[("iot:ClientId", "x")])),
            Decision::Allowed
        );
        // Unknown variable: matches nothing.
        assert_eq!(
            doc.decide("iot:Connect", "client/x", &vars(&[])),
            Decision::NotAllowed
        );
    }

    #[test]
    fn bad_documents_are_errors_not_panics() {
        for text in [
            "",
            "[]",
            r#"{"Statement":5}"#,
            r#"{"Statement":[{"Effect":"Maybe"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":7}]}"#,
        ] {
            assert!(PolicyDocument::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn size_excludes_whitespace() {
        assert_eq!(policy_size("{ \"a\" :\n 1 }"), 7);
    }
}
