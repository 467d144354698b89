//! Which claims `retire-provisioned` retires: those of devices whose thing exists with a
//! certificate other than the claim (their own, from provisioning), looked up several at
//! once. A claim shared by a batch is retired only once every device of it has provisioned.

use std::collections::HashSet;

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};

use crate::batch_dir::spec::BatchSpec;
use crate::cloud::Inventory;
use crate::core::devices::ClaimScope;
use crate::core::manifest::ManifestRow;
use crate::retirement::revoke::Selection;

/// The serials whose claim is still live and whose thing exists with a certificate other
/// than the claim (the device's own, from provisioning); `concurrency` things looked up at
/// once, at ListThingPrincipals' pace.
pub async fn provisioned(
    iot: &impl Inventory,
    rows: &[ManifestRow],
    things: &HashSet<String>,
    concurrency: usize,
) -> Result<HashSet<String>> {
    let live = rows
        .iter()
        .filter(|r| r.status.is_live() && things.contains(&r.thing_name));
    let lookups = futures::stream::iter(live).map(|row| async move {
        let attached = iot.thing_principals(&row.thing_name).await.map_err(|e| {
            anyhow::anyhow!(
                "ListThingPrincipals {}: {e}; retire-provisioned needs iot:ListThingPrincipals",
                row.thing_name
            )
        })?;
        let own = attached.iter().any(|arn| *arn != row.certificate_arn);
        Ok::<_, anyhow::Error>(own.then(|| row.serial.clone()))
    });
    let found: Vec<Option<String>> = lookups
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
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
