//! Prometheus metrics. Labels carry store names, operations and reasons: never values.

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;
use crate::status::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsCallLabels {
    store: String,
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    store: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// ESO's `*_status_condition` labels: namespace (for namespaced kinds only), name, condition, status.
type ConditionLabels = Vec<(&'static str, String)>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    namespace: String,
    name: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    namespace: String,
    name: String,
}

/// A Lockstep object the per-object gauges describe.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `ExternalSecret`, `SecretStore` or `ClusterSecretStore`.
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

/// The per-object gauges: one Ready series per object and kind (its reason replaces the previous
/// one), ESO's two `status_condition` series, and the time of the last successful sync. What
/// each object has set is remembered so that its series go when it does.
#[derive(Default)]
struct ObjectGauges {
    es_condition: Family<ConditionLabels, Gauge>,
    es_ready: Family<ReadyLabels, Gauge>,
    es_last_sync: Family<ObjectLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    store_condition: Family<ConditionLabels, Gauge>,
    cluster_store_condition: Family<ConditionLabels, Gauge>,
    /// The reason last set for each object.
    reasons: std::sync::Mutex<BTreeMap<ObjectKey, String>>,
}

impl ObjectGauges {
    fn condition_family(&self, kind: &str) -> &Family<ConditionLabels, Gauge> {
        match kind {
            EXTERNAL_SECRET => &self.es_condition,
            CLUSTER_SECRET_STORE => &self.cluster_store_condition,
            _ => &self.store_condition,
        }
    }

    fn condition(key: &ObjectKey, status: &str) -> ConditionLabels {
        let mut labels: ConditionLabels = key.namespace.iter().map(|ns| ("namespace", ns.clone())).collect();
        labels.extend([
            ("name", key.name.clone()),
            ("condition", crate::status::READY.into()),
            ("status", status.into()),
        ]);
        labels
    }

    fn ready_labels(key: &ObjectKey, reason: &str) -> ReadyLabels {
        ReadyLabels {
            namespace: key.namespace.clone().unwrap_or_default(),
            name: key.name.clone(),
            reason: reason.into(),
        }
    }

    fn set(&self, key: &ObjectKey, reason: Reason) {
        let ready = reason.is_ready();
        let family = self.condition_family(key.kind);
        family.get_or_create(&Self::condition(key, "True")).set(i64::from(ready));
        family.get_or_create(&Self::condition(key, "False")).set(i64::from(!ready));
        let previous = crate::lock(&self.reasons).insert(key.clone(), reason.as_str().to_string());
        if key.kind == EXTERNAL_SECRET {
            if let Some(old) = previous.filter(|old| old != reason.as_str()) {
                self.es_ready.remove(&Self::ready_labels(key, &old));
            }
            self.es_ready.get_or_create(&Self::ready_labels(key, reason.as_str())).set(i64::from(ready));
        }
    }

    fn forget(&self, key: &ObjectKey) {
        let family = self.condition_family(key.kind);
        family.remove(&Self::condition(key, "True"));
        family.remove(&Self::condition(key, "False"));
        if let Some(old) = crate::lock(&self.reasons).remove(key)
            && key.kind == EXTERNAL_SECRET
        {
            self.es_ready.remove(&Self::ready_labels(key, &old));
        }
        let object = ObjectLabels { namespace: key.namespace.clone().unwrap_or_default(), name: key.name.clone() };
        self.es_last_sync.remove(&object);
    }
}

/// The kinds as the per-object gauges name them.
pub const EXTERNAL_SECRET: &str = "ExternalSecret";
pub const SECRET_STORE: &str = "SecretStore";
pub const CLUSTER_SECRET_STORE: &str = "ClusterSecretStore";

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    aws_calls: Family<AwsCallLabels, Counter>,
    reconciles: Family<KindLabels, Counter>,
    failures: Family<ReasonLabels, Counter>,
    change_applied: Histogram,
    leader: Gauge,
    objects: ObjectGauges,
    events: Family<EventLabels, Counter>,
    queue_up: Family<StoreLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lockstep");
        let aws_calls = Family::<AwsCallLabels, Counter>::default();
        let reconciles = Family::<KindLabels, Counter>::default();
        let failures = Family::<ReasonLabels, Counter>::default();
        registry.register("aws_calls", "AWS API calls by store, operation and outcome", aws_calls.clone());
        registry.register("reconciles", "Reconciles by kind", reconciles.clone());
        registry.register("reconcile_failures", "Failed ExternalSecret syncs by condition reason", failures.clone());
        // 50 ms .. ~100 s
        let change_applied = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "change_to_applied_seconds",
            "Time from a change of an AWS secret (detected by the poller, or the time of its AWS event) to the ExternalSecret's Secret applied",
            change_applied.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process runs the controllers (leads, or no election)",
            leader.clone(),
        );
        let objects = ObjectGauges::default();
        registry.register(
            "externalsecret_status_condition",
            "ExternalSecret conditions as External Secrets Operator exports them: 1 for the Ready condition's status, 0 for the other",
            objects.es_condition.clone(),
        );
        registry.register(
            "externalsecret_ready",
            "1 when the ExternalSecret is Ready, else 0; reason is the Ready condition's reason",
            objects.es_ready.clone(),
        );
        registry.register(
            "externalsecret_last_sync_timestamp_seconds",
            "Unix time of the ExternalSecret's last successful sync (a check that found nothing to change included)",
            objects.es_last_sync.clone(),
        );
        registry.register(
            "secretstore_status_condition",
            "SecretStore conditions as External Secrets Operator exports them",
            objects.store_condition.clone(),
        );
        registry.register(
            "clustersecretstore_status_condition",
            "ClusterSecretStore conditions as External Secrets Operator exports them",
            objects.cluster_store_condition.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Messages received from stores' event queues, by outcome: matched (names a watched secret), ignored (names none, or not a Secrets Manager event), malformed",
            events.clone(),
        );
        let queue_up = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "events_queue_up",
            "1 while the store's event queue answers, 0 while it fails (polling then follows refreshInterval)",
            queue_up.clone(),
        );
        Self { registry, aws_calls, reconciles, failures, change_applied, leader, objects, events, queue_up }
    }
}

impl Metrics {
    /// Count one AWS call.
    pub fn aws_call(&self, store: &str, operation: &str, error: Option<&Error>) {
        let outcome = error.map_or("success", |e| e.reason().as_str());
        self.aws_calls
            .get_or_create(&AwsCallLabels { store: store.into(), operation: operation.into(), outcome: outcome.into() })
            .inc();
    }

    /// Count one reconcile.
    pub fn reconcile(&self, kind: &str) {
        self.reconciles.get_or_create(&KindLabels { kind: kind.into() }).inc();
    }

    /// Count one failed sync.
    pub fn failure(&self, reason: Reason) {
        self.failures.get_or_create(&ReasonLabels { reason: reason.as_str().into() }).inc();
    }

    /// A detected change reached the Secret after `elapsed`.
    pub fn change_applied(&self, elapsed: std::time::Duration) {
        self.change_applied.observe(elapsed.as_secs_f64());
    }

    /// Count one message of a store's event queue (`outcome`: matched, ignored or malformed).
    pub fn event(&self, store: &str, outcome: &'static str) {
        self.events.get_or_create(&EventLabels { store: store.into(), outcome: outcome.into() }).inc();
    }

    /// Whether a store's event queue answers; `None`: the store reads no queue (any more).
    pub fn events_queue(&self, store: &str, up: Option<bool>) {
        let labels = StoreLabels { store: store.into() };
        match up {
            Some(up) => {
                self.queue_up.get_or_create(&labels).set(i64::from(up));
            }
            None => {
                self.queue_up.remove(&labels);
            }
        }
    }

    /// Whether this process leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The Ready reason an object's status now holds; `synced_at` (Unix seconds): when an
    /// ExternalSecret's sync succeeded.
    pub fn object_status(&self, key: &ObjectKey, reason: Reason, synced_at: Option<f64>) {
        self.objects.set(key, reason);
        if let (EXTERNAL_SECRET, Some(at)) = (key.kind, synced_at) {
            let object = ObjectLabels { namespace: key.namespace.clone().unwrap_or_default(), name: key.name.clone() };
            self.objects.es_last_sync.get_or_create(&object).set(at);
        }
    }

    /// Drop the series of an object that was deleted.
    pub fn forget_object(&self, key: &ObjectKey) {
        self.objects.forget(key);
    }

    /// Drop the series of every object of `kind` for which `exists` says no (after a relist, which
    /// reports no deletions).
    pub fn retain_objects(&self, kind: &str, exists: impl Fn(&ObjectKey) -> bool) {
        let gone: Vec<ObjectKey> =
            crate::lock(&self.objects.reasons).keys().filter(|k| k.kind == kind && !exists(k)).cloned().collect();
        for key in gone {
            self.objects.forget(&key);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn es(name: &str) -> ObjectKey {
        ObjectKey { kind: EXTERNAL_SECRET, namespace: Some("ns".into()), name: name.into() }
    }

    fn lines(m: &Metrics, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = m.encode().lines().filter(|l| l.starts_with(prefix)).map(String::from).collect();
        out.sort();
        out
    }

    #[test]
    fn one_ready_series_per_object_which_goes_with_it() {
        let m = Metrics::default();
        m.object_status(&es("a"), Reason::SecretNotFound, None);
        m.object_status(&es("a"), Reason::SecretSynced, Some(1700000000.0));
        m.object_status(&es("b"), Reason::Throttled, None);
        assert_eq!(
            lines(&m, "lockstep_externalsecret_ready"),
            [
                r#"lockstep_externalsecret_ready{namespace="ns",name="a",reason="SecretSynced"} 1"#,
                r#"lockstep_externalsecret_ready{namespace="ns",name="b",reason="Throttled"} 0"#,
            ]
        );
        assert_eq!(
            lines(&m, "lockstep_externalsecret_status_condition{namespace=\"ns\",name=\"a\""),
            [
                r#"lockstep_externalsecret_status_condition{namespace="ns",name="a",condition="Ready",status="False"} 0"#,
                r#"lockstep_externalsecret_status_condition{namespace="ns",name="a",condition="Ready",status="True"} 1"#,
            ]
        );
        assert_eq!(
            lines(&m, "lockstep_externalsecret_last_sync"),
            [r#"lockstep_externalsecret_last_sync_timestamp_seconds{namespace="ns",name="a"} 1700000000.0"#]
        );
        m.forget_object(&es("a"));
        m.retain_objects(EXTERNAL_SECRET, |k| k.name != "b");
        assert!(lines(&m, "lockstep_externalsecret_").is_empty(), "{}", m.encode());
    }

    #[test]
    fn stores_by_kind_without_a_namespace_for_cluster_stores() {
        let m = Metrics::default();
        m.object_status(
            &ObjectKey { kind: CLUSTER_SECRET_STORE, namespace: None, name: "c".into() },
            Reason::Valid,
            None,
        );
        m.object_status(
            &ObjectKey { kind: SECRET_STORE, namespace: Some("ns".into()), name: "s".into() },
            Reason::AccessDenied,
            None,
        );
        assert_eq!(
            lines(&m, "lockstep_clustersecretstore_status_condition{"),
            [
                r#"lockstep_clustersecretstore_status_condition{name="c",condition="Ready",status="False"} 0"#,
                r#"lockstep_clustersecretstore_status_condition{name="c",condition="Ready",status="True"} 1"#,
            ]
        );
        assert!(m.encode().contains(
            r#"lockstep_secretstore_status_condition{namespace="ns",name="s",condition="Ready",status="False"} 1"#
        ));
    }
}
