//! Which claims `retire-provisioned` retires: those of devices whose thing exists with a
//! certificate other than the claim (their own, from provisioning). A claim shared by a
//! batch is retired only once every device of it has provisioned.

use std::collections::HashSet;

use anyhow::Result;

use crate::batch_dir::spec::BatchSpec;
use crate::cloud::Inventory;
use crate::core::devices::ClaimScope;
use crate::core::manifest::ManifestRow;
use crate::retirement::revoke::Selection;

/// The serials whose claim is still live and whose thing exists with a certificate other
/// than the claim (the device's own, from provisioning).
pub async fn provisioned(
    iot: &impl Inventory,
    rows: &[ManifestRow],
    things: &HashSet<String>,
) -> Result<HashSet<String>> {
    let mut provisioned = HashSet::new();
    for row in rows
        .iter()
        .filter(|r| r.status.is_live() && things.contains(&r.thing_name))
    {
        let attached = iot.thing_principals(&row.thing_name).await.map_err(|e| {
            anyhow::anyhow!(
                "ListThingPrincipals {}: {e}; retire-provisioned needs iot:ListThingPrincipals",
                row.thing_name
            )
        })?;
        if attached.iter().any(|arn| *arn != row.certificate_arn) {
            provisioned.insert(row.serial.clone());
        }
    }
    Ok(provisioned)
}

/// What to retire: the provisioned devices' own claims, or a shared batch's claim once
/// every device of it has provisioned.
pub fn provisioned_selection(
    spec: &BatchSpec,
    rows: &[ManifestRow],
    provisioned: &HashSet<String>,
) -> Option<Selection> {
    if provisioned.is_empty() {
        return None;
    }
    match spec.claim_scope {
        ClaimScope::Device => {
            let mut serials: Vec<String> = provisioned.iter().cloned().collect();
            serials.sort();
            Some(Selection::Serials(serials))
        }
        ClaimScope::Batch => {
            let live = rows.iter().filter(|r| r.status.is_live()).count();
            (provisioned.len() == live).then_some(Selection::All)
        }
    }
}
