//! [`AccountApi`] on the in-memory account: each call logged, checked against the denied
//! actions, and answered from or applied to the state as AWS would.

use super::*;

impl AccountApi for FakeAccount {
    fn region(&self) -> &str {
        REGION
    }

    async fn caller_arn(&self) -> Result<String, AwsError> {
        drop(self.allow("sts:GetCallerIdentity", "*")?);
        Ok(iam_arn("user/factory"))
    }

    async fn describe_endpoint(&self, kind: EndpointKind) -> Result<String, AwsError> {
        drop(self.allow("iot:DescribeEndpoint", "*")?);
        Ok(match kind {
            EndpointKind::DataAts => format!("abc-ats.iot.{REGION}.amazonaws.com"),
            EndpointKind::CredentialProvider => {
                format!("abc.credentials.iot.{REGION}.amazonaws.com")
            }
        })
    }

    async fn get_role(&self, name: &str) -> Result<Option<RoleInfo>, AwsError> {
        let state = self.allow("iam:GetRole", name)?;
        Ok(state.roles.get(name).map(|trust| RoleInfo {
            arn: iam_arn(&format!("role/{name}")),
            // IAM answers the trust policy URL-encoded.
            trust_policy: percent_encoding::utf8_percent_encode(
                trust,
                percent_encoding::NON_ALPHANUMERIC,
            )
            .to_string(),
        }))
    }

    async fn create_role(&self, name: &str, trust_policy: &str) -> Result<(), AwsError> {
        self.create("iam:CreateRole", name, |state| {
            vacant(state.roles.get(name), "EntityAlreadyExists", 409, name)?;
            state.roles.insert(name.into(), trust_policy.into());
            Ok(())
        })
    }

    async fn update_trust_policy(&self, role: &str, trust_policy: &str) -> Result<(), AwsError> {
        let mut state = self.allow("iam:UpdateAssumeRolePolicy", role)?;
        let trust = state.roles.get_mut(role).ok_or_else(|| not_found(role))?;
        *trust = trust_policy.into();
        Ok(())
    }

    async fn get_iam_policy(&self, arn: &str) -> Result<Option<PolicyInfo>, AwsError> {
        let state = self.allow("iam:GetPolicy", arn)?;
        Ok(policy(arn.into(), state.iam_policies.get(arn)))
    }

    async fn create_iam_policy(&self, name: &str, document: &str) -> Result<(), AwsError> {
        let arn = iam_arn(&format!("policy/{name}"));
        self.create("iam:CreatePolicy", &arn, |state| {
            // A policy's name is unique whatever its path.
            let suffix = format!("/{name}");
            let taken = state.iam_policies.keys().find(|a| a.ends_with(&suffix));
            vacant(taken, "EntityAlreadyExists", 409, name)?;
            state
                .iam_policies
                .insert(arn.clone(), vec![document.into()]);
            Ok(())
        })
    }

    async fn update_iam_policy(&self, arn: &str, document: &str) -> Result<(), AwsError> {
        let mut state = self.allow("iam:CreatePolicyVersion", arn)?;
        let versions = state
            .iam_policies
            .get_mut(arn)
            .ok_or_else(|| not_found(arn))?;
        new_version(versions, document);
        Ok(())
    }

    async fn attached_role_policies(&self, role: &str) -> Result<Vec<String>, AwsError> {
        let state = self.allow("iam:ListAttachedRolePolicies", role)?;
        if !state.roles.contains_key(role) {
            return Err(error("NoSuchEntity", 404, format!("role {role}")));
        }
        let attached = state.attachments.iter().filter(|(r, _)| r == role);
        Ok(attached.map(|(_, arn)| arn.clone()).collect())
    }

    async fn attach_role_policy(&self, role: &str, policy_arn: &str) -> Result<(), AwsError> {
        let mut state = self.allow("iam:AttachRolePolicy", role)?;
        state.attachments.insert((role.into(), policy_arn.into()));
        Ok(())
    }

    async fn describe_role_alias(&self, alias: &str) -> Result<Option<RoleAliasInfo>, AwsError> {
        let state = self.allow("iot:DescribeRoleAlias", alias)?;
        Ok(state
            .role_aliases
            .get(alias)
            .map(|(role, secs)| RoleAliasInfo {
                arn: iot_arn(&format!("rolealias/{alias}")),
                role_arn: role.clone(),
                credential_duration_seconds: *secs,
            }))
    }

    async fn create_role_alias(&self, alias: &str, role: &str, secs: i32) -> Result<(), AwsError> {
        self.create("iot:CreateRoleAlias", alias, |state| {
            let taken = state.role_aliases.get(alias);
            vacant(taken, "ResourceAlreadyExistsException", 409, alias)?;
            state.role_aliases.insert(alias.into(), (role.into(), secs));
            Ok(())
        })
    }

    async fn update_role_alias(&self, alias: &str, role: &str, secs: i32) -> Result<(), AwsError> {
        let mut state = self.allow("iot:UpdateRoleAlias", alias)?;
        let found = state
            .role_aliases
            .get_mut(alias)
            .ok_or_else(|| not_found(alias))?;
        *found = (role.into(), secs);
        Ok(())
    }

    async fn get_iot_policy(&self, name: &str) -> Result<Option<PolicyInfo>, AwsError> {
        let state = self.allow("iot:GetPolicy", name)?;
        let arn = iot_arn(&format!("policy/{name}"));
        Ok(policy(arn, state.iot_policies.get(name)))
    }

    async fn create_iot_policy(&self, name: &str, document: &str) -> Result<(), AwsError> {
        self.create("iot:CreatePolicy", name, |state| {
            let taken = state.iot_policies.get(name);
            vacant(taken, "ResourceAlreadyExistsException", 409, name)?;
            state
                .iot_policies
                .insert(name.into(), vec![document.into()]);
            Ok(())
        })
    }

    async fn update_iot_policy(&self, name: &str, document: &str) -> Result<(), AwsError> {
        let mut state = self.allow("iot:CreatePolicyVersion", name)?;
        let versions = state
            .iot_policies
            .get_mut(name)
            .ok_or_else(|| not_found(name))?;
        new_version(versions, document);
        Ok(())
    }

    async fn thing_group_arn(&self, name: &str) -> Result<Option<String>, AwsError> {
        let state = self.allow("iot:DescribeThingGroup", name)?;
        let arn = iot_arn(&format!("thinggroup/{name}"));
        Ok(state.thing_groups.contains(name).then_some(arn))
    }

    async fn create_thing_group(&self, name: &str) -> Result<(), AwsError> {
        // CreateThingGroup of a group that is there, alike, succeeds.
        let mut state = self.allow("iot:CreateThingGroup", name)?;
        state.thing_groups.insert(name.into());
        Ok(())
    }

    async fn describe_template(&self, name: &str) -> Result<Option<TemplateInfo>, AwsError> {
        let state = self.allow("iot:DescribeProvisioningTemplate", name)?;
        Ok(state.templates.get(name).cloned())
    }

    async fn create_template(&self, spec: &TemplateSpec<'_>) -> Result<(), AwsError> {
        self.create("iot:CreateProvisioningTemplate", spec.name, |state| {
            let taken = state.templates.get(spec.name);
            vacant(taken, "ResourceAlreadyExistsException", 409, spec.name)?;
            state.templates.insert(spec.name.into(), template(spec));
            Ok(())
        })
    }

    async fn update_template(&self, spec: &TemplateSpec<'_>, _body: bool) -> Result<(), AwsError> {
        let action = "iot:UpdateProvisioningTemplate";
        let mut state = self.allow(action, spec.name)?;
        let found = state
            .templates
            .get_mut(spec.name)
            .ok_or_else(|| not_found(spec.name))?;
        *found = template(spec);
        Ok(())
    }

    async fn get_function(&self, name: &str) -> Result<Option<FunctionInfo>, AwsError> {
        let state = self.allow("lambda:GetFunction", name)?;
        Ok(state.functions.get(name).cloned())
    }

    async fn create_function(&self, spec: &FunctionSpec<'_>) -> Result<(), AwsError> {
        self.create("lambda:CreateFunction", spec.name, |state| {
            let taken = state.functions.get(spec.name);
            vacant(taken, "ResourceConflictException", 409, spec.name)?;
            state.functions.insert(spec.name.into(), function(spec));
            Ok(())
        })
    }

    async fn update_function(&self, spec: &FunctionSpec<'_>) -> Result<(), AwsError> {
        let mut state = self.allow("lambda:UpdateFunctionCode", spec.name)?;
        let found = state
            .functions
            .get_mut(spec.name)
            .ok_or_else(|| not_found(spec.name))?;
        *found = function(spec);
        Ok(())
    }

    async fn function_policy(&self, function_arn: &str) -> Result<Option<String>, AwsError> {
        let state = self.allow("lambda:GetPolicy", function_arn)?;
        let statements = state
            .permissions
            .get(function_arn)
            .filter(|s| !s.is_empty());
        let policy = statements.map(|statements| {
            let statements: Vec<_> = statements.values().cloned().collect();
            serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string()
        });
        Ok(policy)
    }

    async fn allow_iot_invoke(&self, arn: &str, sid: &str, account: &str) -> Result<(), AwsError> {
        self.create("lambda:AddPermission", arn, |state| {
            let statements = state.permissions.entry(arn.into()).or_default();
            vacant(statements.get(sid), "ResourceConflictException", 409, sid)?;
            let statement = serde_json::json!({
                "Sid": sid, "Effect": "Allow", "Action": "lambda:InvokeFunction",
                "Principal": {"Service": "iot.amazonaws.com"}, "Resource": arn,
                "Condition": {"StringEquals": {"AWS:SourceAccount": account}},
            });
            statements.insert(sid.into(), statement);
            Ok(())
        })
    }

    async fn remove_permission(&self, arn: &str, sid: &str) -> Result<(), AwsError> {
        let mut state = self.allow("lambda:RemovePermission", arn)?;
        let statements = state
            .permissions
            .get_mut(arn)
            .ok_or_else(|| not_found(arn))?;
        statements
            .remove(sid)
            .map(drop)
            .ok_or_else(|| not_found(sid))
    }
}
