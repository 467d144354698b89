//! The one loop that settles a resource, whatever its kind: [`Kind`] (the report's word
//! for a kind and the IAM action of each of its calls), [`Resource`] (how a kind is read,
//! compared, created and updated, implemented per kind in `resources`), [`settle`] (read,
//! compare, then create, leave, report drift or update as the mode says; a create answered
//! "already exists" is a race with another run, settled by reading again), and
//! [`AnyResource`], the table's one type for a resource of any kind.

use super::*;

/// A kind of resource: the report's word for it, and the IAM actions of the calls that read,
/// create and update one, named when AWS refuses the call.
pub(super) struct Kind {
    pub(super) word: &'static str,
    read: &'static str,
    create: &'static str,
    /// For a kind that is right whenever present (attachment, thing group), the create
    /// call again: one is never updated.
    update: &'static str,
}

// One row a kind: the report's word, then the calls that read, create and update one.
#[rustfmt::skip]
impl Kind {
    pub(super) const ROLE:        Kind = Kind::new("iam role",          "iam:GetRole",                      "iam:CreateRole",                 "iam:UpdateAssumeRolePolicy");
    pub(super) const IAM_POLICY:  Kind = Kind::new("iam policy",        "iam:GetPolicy",                    "iam:CreatePolicy",               IAM_POLICY_VERSION);
    pub(super) const ATTACHMENT:  Kind = Kind::new("iam attachment",    "iam:ListAttachedRolePolicies",     "iam:AttachRolePolicy",           "iam:AttachRolePolicy");
    pub(super) const ROLE_ALIAS:  Kind = Kind::new("iot role alias",    "iot:DescribeRoleAlias",            "iot:CreateRoleAlias",            "iot:UpdateRoleAlias");
    pub(super) const IOT_POLICY:  Kind = Kind::new("iot policy",        "iot:GetPolicy",                    "iot:CreatePolicy",               IOT_POLICY_VERSION);
    pub(super) const THING_GROUP: Kind = Kind::new("iot thing group",   "iot:DescribeThingGroup",           "iot:CreateThingGroup",           "iot:CreateThingGroup");
    pub(super) const FUNCTION:    Kind = Kind::new("lambda function",   "lambda:GetFunction",               "lambda:CreateFunction",          FUNCTION_UPDATE);
    pub(super) const PERMISSION:  Kind = Kind::new("lambda permission", "lambda:GetPolicy",                 "lambda:AddPermission",           PERMISSION_UPDATE);
    pub(super) const TEMPLATE:    Kind = Kind::new("iot template",      "iot:DescribeProvisioningTemplate", "iot:CreateProvisioningTemplate", TEMPLATE_VERSION);
}

impl Kind {
    pub(super) const fn new(
        word: &'static str,
        read: &'static str,
        create: &'static str,
        update: &'static str,
    ) -> Self {
        Self {
            word,
            read,
            create,
            update,
        }
    }
}

/// Updating a policy or a template is a new default version, room made for it first (and
/// for a template, its settings).
pub(super) const IAM_POLICY_VERSION: &str =
    "iam:CreatePolicyVersion, iam:ListPolicyVersions and iam:DeletePolicyVersion";
pub(super) const IOT_POLICY_VERSION: &str =
    "iot:CreatePolicyVersion, iot:ListPolicyVersions and iot:DeletePolicyVersion";
pub(super) const FUNCTION_UPDATE: &str =
    "lambda:UpdateFunctionCode and lambda:UpdateFunctionConfiguration";
pub(super) const PERMISSION_UPDATE: &str = "lambda:RemovePermission and lambda:AddPermission";
pub(super) const TEMPLATE_VERSION: &str = "iot:CreateProvisioningTemplateVersion, iot:ListProvisioningTemplateVersions, iot:DeleteProvisioningTemplateVersion and iot:UpdateProvisioningTemplate";

/// One kind of AWS resource: how setup reads it, tells whether it is as desired, and creates
/// or updates it. The steps hold the names and desired documents.
pub(super) trait Resource {
    /// What AWS has.
    type Current;

    /// The kind: the report's word for it, and the actions a refused call names.
    fn kind(&self) -> &'static Kind;

    /// The resource as AWS has it; `None` when there is none.
    async fn read(
        &self,
        api: &impl AccountApi,
        ctx: &Context,
    ) -> Result<Option<Self::Current>, AwsError>;

    /// Takes from the resource found what later steps need.
    fn learn(&self, _current: &Self::Current, _ctx: &mut Context) {}

    /// How the resource found differs from the desired one; by default, not at all (being
    /// there is all that counts).
    fn differs(&self, _current: &Self::Current, _ctx: &Context) -> Option<String> {
        None
    }

    async fn create(&self, api: &impl AccountApi, ctx: &Context) -> Result<(), AwsError>;

    async fn update(
        &self,
        _api: &impl AccountApi,
        _ctx: &Context,
        _current: &Self::Current,
    ) -> Result<(), AwsError> {
        unreachable!("{} never differs, so is never updated", self.kind().word)
    }

    /// The ARN a refused call names.
    fn arn<'a>(&'a self, ctx: &'a Context) -> &'a str;

    /// The role that creating or updating the resource passes to AWS, which then also
    /// needs iam:PassRole on it.
    fn passes<'a>(&'a self, _ctx: &'a Context) -> Option<&'a str> {
        None
    }
}

/// Reads a resource, compares it, and, unless planning, creates or updates it as the mode
/// says. Returns what became of it, or the call AWS refused. A create answered "already
/// exists" (another run made the resource since the read) reads again and settles what it
/// finds; only if there is still nothing to read is the name taken by something else.
pub(super) async fn settle<R: Resource>(
    resource: &R,
    api: &impl AccountApi,
    mode: Mode,
    ctx: &mut Context,
) -> Result<Outcome, Refused> {
    let current = read(resource, api, ctx).await?;
    match act(resource, api, mode, ctx, current.as_ref()).await {
        Err(refused) if current.is_none() && already_there(&refused.error) => {
            let Some(current) = read(resource, api, ctx).await? else {
                return Err(refused);
            };
            act(resource, api, mode, ctx, Some(&current)).await
        }
        settled => settled,
    }
}

/// Whether a create was refused because the resource is there (Lambda says so with a
/// conflict).
fn already_there(error: &AwsError) -> bool {
    matches!(error, AwsError::AlreadyExists(_) | AwsError::Conflict(_))
}

/// Reads the resource and learns from it what later steps need.
async fn read<R: Resource>(
    resource: &R,
    api: &impl AccountApi,
    ctx: &mut Context,
) -> Result<Option<R::Current>, Refused> {
    let current = (resource.read(api, ctx).await)
        .map_err(refused(resource.kind().read, resource.arn(ctx).into()))?;
    if let Some(current) = &current {
        resource.learn(current, ctx);
    }
    Ok(current)
}

/// Compares what was read with the desired resource, and creates or updates it as the mode
/// says.
async fn act<R: Resource>(
    resource: &R,
    api: &impl AccountApi,
    mode: Mode,
    ctx: &Context,
    current: Option<&R::Current>,
) -> Result<Outcome, Refused> {
    let found = match current {
        None => Found::Missing,
        Some(current) => (resource.differs(current, ctx)).map_or(Found::Same, Found::Differs),
    };
    let target = match resource.passes(ctx) {
        Some(role) => format!("{}, and iam:PassRole on {role}", resource.arn(ctx)),
        None => resource.arn(ctx).into(),
    };
    Ok(match (found, mode.plan) {
        (Found::Same, _) => Outcome::Unchanged,
        (Found::Missing, true) => Outcome::WouldCreate,
        (Found::Missing, false) => {
            (resource.create(api, ctx).await).map_err(refused(resource.kind().create, target))?;
            Outcome::Created
        }
        (Found::Differs(what), _) if !mode.update_drifted => Outcome::Drift(what),
        (Found::Differs(what), true) => Outcome::WouldUpdate(what),
        (Found::Differs(_), false) => {
            let current = current.expect("what differs was found");
            (resource.update(api, ctx, current).await)
                .map_err(refused(resource.kind().update, target))?;
            Outcome::Updated
        }
    })
}

/// Declares [`AnyResource`], one variant per kind of resource, and its dispatch to
/// [`settle`].
macro_rules! any_resource {
    ($($kind:ident),+ $(,)?) => {
        /// A resource of any kind, as the table holds it. (A [`Resource`] has a type of its
        /// own and async methods, so it cannot be a trait object.)
        pub(super) enum AnyResource {
            $($kind($kind)),+
        }

        $(impl From<$kind> for AnyResource {
            fn from(resource: $kind) -> Self {
                AnyResource::$kind(resource)
            }
        })+

        impl AnyResource {
            pub(super) fn kind(&self) -> &'static Kind {
                match self {
                    $(AnyResource::$kind(r) => r.kind()),+
                }
            }

            pub(super) async fn settle(
                &self,
                api: &impl AccountApi,
                mode: Mode,
                ctx: &mut Context,
            ) -> Result<Outcome, Refused> {
                match self {
                    $(AnyResource::$kind(r) => settle(r, api, mode, ctx).await),+
                }
            }
        }
    };
}

any_resource![Role, Policy, Attachment, RoleAlias, ThingGroup, Function, Permission, Template];

/// Whether a document read back from AWS says something else than the desired one.
pub(super) fn document_differs(actual: &str, desired: &Value, what: &str) -> Option<String> {
    (!desired::same_document(actual, desired))
        .then(|| format!("{what} differs from the desired one"))
}

/// Runs a create that passes a role, again every 5 s for a minute while AWS rejects the
/// request: IAM is eventually consistent, and a role created seconds ago may not be
/// assumable yet (Lambda answers InvalidParameterValueException, AWS IoT
/// InvalidRequestException, codes that name no more than a rejected request).
pub(super) async fn while_role_settles<T, F>(create: impl FnMut() -> F) -> Result<(), AwsError>
where
    F: Future<Output = Result<T, AwsError>>,
{
    use backon::{ConstantBuilder, Retryable};
    let pace = ConstantBuilder::default()
        .with_delay(Duration::from_secs(5))
        .with_max_times(12);
    (create.retry(pace))
        .when(|e| matches!(e, AwsError::Rejected(_)))
        .await
        .map(drop)
}
