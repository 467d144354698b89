//! Making room for a new default version: AWS keeps at most five versions of a policy (IAM
//! or IoT) or of a provisioning template, so the oldest non-default one goes first.

/// Versions a policy or template may keep; the oldest non-default goes to make room.
const MAX_VERSIONS: usize = 5;

/// The version to delete before a new one can be added: the oldest non-default one, when
/// the policy or template already keeps the maximum. `versions` are (is default, created
/// at, version id).
pub(super) fn version_to_drop<Id>(
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
pub(super) trait Version {
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

#[cfg(test)]
mod tests {
    use super::*;

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
