//! Rollout restarts of workloads that read a Secret as environment variables, derived from state
//! that outlives the process: each workload records (in its own annotation) the data hash its pods
//! were last started for, and every sync compares it with the Secret's. A stopped operator finds a
//! pending restart again on its first sync after it comes back. A burst of changes is debounced
//! into one restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::{Api, Client};
use serde_json::json;

use crate::api::{RolloutRestartTarget, WorkloadKind};
use crate::error::Result;
use crate::lock;

/// The data hash a restart was made for: on the pod template (changing it is the restart) and on
/// the workload itself (the record that survives the operator).
pub const RESTART_ANNOTATION: &str = "lockstep.dev/restarted-for";
/// Field manager of a workload's first record (made without a restart). A field manager of its
/// own, so that this apply leaves the pod template's annotation, set by restarts as `lockstep`,
/// alone; a restart then takes the record over.
const RECORD_MANAGER: &str = "lockstep-restarts";

/// What one workload needs now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Its pods run with the Secret's current data.
    Nothing,
    /// It has no record yet and the data did not change in this sync: its pods started with the
    /// current data (a first sync, or a workload new to the ExternalSecret). Record it, no restart.
    Record,
    /// Its pods run with older data.
    Restart,
}

/// PURE: what a workload whose record says `recorded` needs when the Secret's data hash is
/// `current`. `changed`: this sync changed the Secret's data.
pub fn need(current: &str, recorded: Option<&str>, changed: bool) -> Need {
    match recorded {
        Some(r) if r == current => Need::Nothing,
        None if !changed => Need::Record,
        _ => Need::Restart,
    }
}

/// Restarts waiting out their quiet period, by ExternalSecret (`namespace/name`): the data hash
/// they are for, and since when (a new hash starts the period again).
#[derive(Default)]
pub struct Debouncer {
    pending: Mutex<HashMap<String, (String, Instant)>>,
}

impl Debouncer {
    /// `Duration::ZERO`: restart now (and the entry is taken). Otherwise ask again after the
    /// returned wait.
    pub fn due(&self, key: &str, hash: &str, quiet: Duration) -> Duration {
        let mut pending = lock(&self.pending);
        let (pending_hash, since) =
            pending.entry(key.to_string()).or_insert_with(|| (hash.to_string(), Instant::now()));
        if pending_hash != hash {
            *pending_hash = hash.to_string();
            *since = Instant::now();
        }
        let elapsed = since.elapsed();
        if elapsed >= quiet {
            pending.remove(key);
            Duration::ZERO
        } else {
            quiet - elapsed
        }
    }

    /// Nothing is pending for `key` any more.
    pub fn clear(&self, key: &str) {
        lock(&self.pending).remove(key);
    }
}

/// The record of each target (`None`: none yet; a target that does not exist is left out).
pub async fn records(
    client: &Client,
    namespace: &str,
    targets: &[RolloutRestartTarget],
) -> Result<Vec<(RolloutRestartTarget, Option<String>)>> {
    let mut out = Vec::new();
    for t in targets {
        let meta = match t.kind {
            WorkloadKind::Deployment => metadata::<Deployment>(client, namespace, &t.name).await?,
            WorkloadKind::StatefulSet => metadata::<StatefulSet>(client, namespace, &t.name).await?,
            WorkloadKind::DaemonSet => metadata::<DaemonSet>(client, namespace, &t.name).await?,
        };
        if let Some(annotations) = meta {
            out.push((t.clone(), annotations.get(RESTART_ANNOTATION).cloned()));
        }
    }
    Ok(out)
}

async fn metadata<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<std::collections::BTreeMap<String, String>>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let meta: Option<PartialObjectMeta<K>> = api.get_metadata_opt(name).await?;
    Ok(meta.map(|m| m.metadata.annotations.unwrap_or_default()))
}

/// Restart `target` for `hash`: its pod template's annotation (the restart) and its record, in one
/// write (a Deployment's generation moves once).
pub async fn restart(client: &Client, namespace: &str, target: &RolloutRestartTarget, hash: &str) -> Result<()> {
    let body = json!({
        "metadata": {"annotations": {RESTART_ANNOTATION: hash}},
        "spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: hash}}}},
    });
    apply(client, namespace, target, body, &super::write::apply_params()).await
}

/// Record, without a restart, that `target`'s pods run with the data of `hash`.
pub async fn record(client: &Client, namespace: &str, target: &RolloutRestartTarget, hash: &str) -> Result<()> {
    let record = json!({"metadata": {"annotations": {RESTART_ANNOTATION: hash}}});
    apply(client, namespace, target, record, &PatchParams::apply(RECORD_MANAGER).force()).await
}

async fn apply(
    client: &Client,
    namespace: &str,
    t: &RolloutRestartTarget,
    mut body: serde_json::Value,
    params: &PatchParams,
) -> Result<()> {
    body["apiVersion"] = json!("apps/v1");
    body["kind"] = json!(t.kind.as_str());
    body["metadata"]["name"] = json!(t.name);
    let patch = Patch::Apply(&body);
    match t.kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace).patch(&t.name, params, &patch).await?;
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace).patch(&t.name, params, &patch).await?;
        }
        WorkloadKind::DaemonSet => {
            Api::<DaemonSet>::namespaced(client.clone(), namespace).patch(&t.name, params, &patch).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_workload_needs() {
        let rows = [
            ("h2", Some("h2"), false, Need::Nothing),
            ("h2", Some("h2"), true, Need::Nothing),
            ("h2", None, false, Need::Record),
            ("h2", None, true, Need::Restart),
            ("h2", Some("h1"), false, Need::Restart),
            ("h2", Some("h1"), true, Need::Restart),
        ];
        for (current, recorded, changed, want) in rows {
            assert_eq!(need(current, recorded, changed), want, "{current} over {recorded:?}, changed {changed}");
        }
    }

    #[test]
    fn a_burst_gives_one_due_restart_and_a_new_hash_waits_again() {
        let d = Debouncer::default();
        let quiet = Duration::from_secs(5);
        assert!(d.due("a", "h1", quiet) > Duration::ZERO);
        assert!(d.due("a", "h2", quiet) > Duration::from_secs(4), "a new change starts the period again");
        assert_eq!(d.due("a", "h2", Duration::ZERO), Duration::ZERO);
        assert!(d.due("a", "h2", quiet) > Duration::ZERO, "taken once: the next ask starts anew");
        d.clear("a");
        assert!(lock(&d.pending).is_empty());
    }
}
