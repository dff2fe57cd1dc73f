//! The ways this operator writes: server-side apply with field manager `lockstep`, and Events.

use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;

/// Server-side apply as field manager `lockstep`, taking over fields another manager set.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(crate::MANAGER).force()
}

/// Apply `status` as the status of object `name` of `api`'s kind.
pub async fn apply_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Publish an Event about `obj` (a failure to publish is logged, never fatal).
pub async fn event<K: Resource<DynamicType = ()>>(
    ctx: &super::Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let note: String = note.chars().take(1000).collect();
    let regarding = obj.object_ref(&());
    let event = super::recorder::Published { type_, reason, action: "Sync", note: &note, regarding: &regarding };
    if let Err(e) = ctx.recorder.publish(&event).await {
        tracing::warn!(error = %e, "could not publish event");
    }
}
