//! Rollout restarts of workloads that read a Secret as environment variables, debounced.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::api::{RolloutRestartTarget, WorkloadKind};
use crate::error::Result;

/// Pod-template annotation set on restart; its value is the data hash that caused it, so a repeated
/// patch for the same data is a no-op.
pub const RESTART_ANNOTATION: &str = "lockstep.dev/restarted-for";

/// Data changes waiting for their restart, by ExternalSecret (`namespace/name`).
#[derive(Default)]
pub struct Debouncer {
    pending: Mutex<HashMap<String, Instant>>,
}

impl Debouncer {
    /// Record a data change now.
    pub fn changed(&self, key: &str) {
        crate::lock(&self.pending).insert(key.to_string(), Instant::now());
    }

    /// `None`: nothing pending. `Some(ZERO)`: the quiet period is over, restart now (and the entry is
    /// taken). `Some(d)`: ask again in `d`.
    pub fn due(&self, key: &str, quiet: Duration) -> Option<Duration> {
        let mut pending = crate::lock(&self.pending);
        let since = pending.get(key)?.elapsed();
        if since >= quiet {
            pending.remove(key);
            Some(Duration::ZERO)
        } else {
            Some(quiet - since)
        }
    }
}

/// Patch each target's pod template (server-side apply, field manager `lockstep`).
pub async fn restart(client: &Client, namespace: &str, targets: &[RolloutRestartTarget], hash: &str) -> Result<()> {
    let params = PatchParams::apply(crate::MANAGER).force();
    for t in targets {
        let patch = json!({
            "apiVersion": "apps/v1",
            "kind": t.kind.as_str(),
            "metadata": {"name": t.name},
            "spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: hash}}}},
        });
        let patch = Patch::Apply(&patch);
        match t.kind {
            WorkloadKind::Deployment => {
                Api::<Deployment>::namespaced(client.clone(), namespace).patch(&t.name, &params, &patch).await?;
            }
            WorkloadKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(client.clone(), namespace).patch(&t.name, &params, &patch).await?;
            }
            WorkloadKind::DaemonSet => {
                Api::<DaemonSet>::namespaced(client.clone(), namespace).patch(&t.name, &params, &patch).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_gives_one_due_restart() {
        let d = Debouncer::default();
        assert_eq!(d.due("a", Duration::from_secs(5)), None);
        d.changed("a");
        d.changed("a");
        assert!(d.due("a", Duration::from_secs(5)).is_some_and(|w| w > Duration::ZERO));
        assert_eq!(d.due("a", Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(d.due("a", Duration::ZERO), None, "taken once");
    }
}
