//! Prometheus metrics. Labels carry store names, operations and reasons: never values.

use std::collections::HashMap;

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
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

/// A Lockstep object the per-object gauges describe.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `ExternalSecret`, `SecretStore` or `ClusterSecretStore`.
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

/// What the per-object gauges say of one object: its Ready reason and, for an ExternalSecret,
/// when it last synced.
#[derive(Clone, Copy, Debug)]
struct ObjectState {
    reason: Reason,
    last_sync: Option<f64>,
}

/// The per-object gauges: one Ready series per ExternalSecret (labelled with its reason), ESO's two
/// `status_condition` series per object, and the time of an ExternalSecret's last successful sync.
/// They are written out at scrape time from one small record per object, rather than kept as
/// label sets (five per ExternalSecret: about 1 KiB each at 10,000), so an object's series go
/// when its record does. A hash map, sorted at scrape time: every reconcile writes its record,
/// where a B-tree's lookup compared a dozen keys (2.7% of the CPU at 10,000); a scrape is rare.
#[derive(Debug, Default)]
struct ObjectGauges {
    objects: std::sync::Mutex<HashMap<ObjectKey, ObjectState>>,
}

/// What a per-object family's series say.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Series {
    /// ESO's pair: `condition="Ready"` with `status="True"` and `status="False"`, 1 for the one that holds.
    Condition,
    /// One series labelled with the reason: 1 when Ready.
    Ready,
    /// The last successful sync's Unix time, once there was one.
    LastSync,
}

/// The per-object families: name, help, the kind of object each describes, and its series.
const OBJECT_FAMILIES: [(&str, &str, &str, Series); 5] = [
    (
        "externalsecret_status_condition",
        "ExternalSecret conditions as External Secrets Operator exports them: 1 for the Ready condition's status, 0 for the other",
        EXTERNAL_SECRET,
        Series::Condition,
    ),
    (
        "externalsecret_ready",
        "1 when the ExternalSecret is Ready, else 0; reason is the Ready condition's reason",
        EXTERNAL_SECRET,
        Series::Ready,
    ),
    (
        "externalsecret_last_sync_timestamp_seconds",
        "Unix time of the ExternalSecret's last successful sync (a check that found nothing to change included)",
        EXTERNAL_SECRET,
        Series::LastSync,
    ),
    (
        "secretstore_status_condition",
        "SecretStore conditions as External Secrets Operator exports them",
        SECRET_STORE,
        Series::Condition,
    ),
    (
        "clustersecretstore_status_condition",
        "ClusterSecretStore conditions as External Secrets Operator exports them",
        CLUSTER_SECRET_STORE,
        Series::Condition,
    ),
];

impl ObjectGauges {
    fn set(&self, key: &ObjectKey, reason: Reason, synced_at: Option<f64>) {
        let mut objects = crate::lock(&self.objects);
        match objects.get_mut(key) {
            Some(state) => {
                state.reason = reason;
                state.last_sync = synced_at.or(state.last_sync);
            }
            None => {
                objects.insert(key.clone(), ObjectState { reason, last_sync: synced_at });
            }
        }
    }

    fn forget(&self, key: &ObjectKey) {
        crate::lock(&self.objects).remove(key);
    }

    /// One family's series, in key order.
    fn encode_family(
        objects: &[(&ObjectKey, &ObjectState)],
        kind: &str,
        series: Series,
        mut family: MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        for (key, state) in objects.iter().filter(|(k, _)| k.kind == kind) {
            let ready = state.reason.is_ready();
            let mut labels: Vec<(&str, &str)> = Vec::with_capacity(4);
            if let Some(ns) = &key.namespace {
                labels.push(("namespace", ns));
            }
            labels.push(("name", &key.name));
            match series {
                Series::Ready => {
                    labels.push(("reason", state.reason.as_str()));
                    ConstGauge::new(i64::from(ready)).encode(family.encode_family(&labels.as_slice())?)?;
                }
                Series::LastSync => {
                    if let Some(at) = state.last_sync {
                        ConstGauge::new(at).encode(family.encode_family(&labels.as_slice())?)?;
                    }
                }
                Series::Condition => {
                    for (status, value) in [("True", ready), ("False", !ready)] {
                        let mut labels = labels.clone();
                        labels.extend([("condition", crate::status::READY), ("status", status)]);
                        ConstGauge::new(i64::from(value)).encode(family.encode_family(&labels.as_slice())?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Collector for ObjectGauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let objects = crate::lock(&self.objects);
        let mut objects: Vec<_> = objects.iter().collect();
        objects.sort_unstable_by_key(|(k, _)| *k);
        for (name, help, kind, series) in OBJECT_FAMILIES {
            let has_series = objects
                .iter()
                .any(|(k, state)| k.kind == kind && (series != Series::LastSync || state.last_sync.is_some()));
            if has_series {
                let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                Self::encode_family(&objects, kind, series, family)?;
            }
        }
        Ok(())
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
    objects: Arc<ObjectGauges>,
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
        let objects = Arc::new(ObjectGauges::default());
        registry.register_collector(Box::new(Arc::clone(&objects)));
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
        self.objects.set(key, reason, synced_at.filter(|_| key.kind == EXTERNAL_SECRET));
    }

    /// Drop the series of an object that was deleted.
    pub fn forget_object(&self, key: &ObjectKey) {
        self.objects.forget(key);
    }

    /// Drop the series of every object of `kind` for which `exists` says no (after a relist, which
    /// reports no deletions).
    pub fn retain_objects(&self, kind: &str, exists: impl Fn(&ObjectKey) -> bool) {
        crate::lock(&self.objects.objects).retain(|k, _| k.kind != kind || exists(k));
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

    #[test]
    fn object_families_are_described_once_and_only_while_they_have_series() {
        let m = Metrics::default();
        assert!(!m.encode().contains("externalsecret"), "{}", m.encode());
        m.object_status(&es("a"), Reason::SecretNotFound, None);
        m.object_status(&es("b"), Reason::SecretSynced, Some(1.0));
        let text = m.encode();
        for family in
            ["externalsecret_status_condition", "externalsecret_ready", "externalsecret_last_sync_timestamp_seconds"]
        {
            assert_eq!(text.matches(&format!("# TYPE lockstep_{family} gauge\n")).count(), 1, "{text}");
            assert_eq!(text.matches(&format!("# HELP lockstep_{family} ")).count(), 1, "{text}");
        }
        assert!(!text.contains("secretstore_status_condition"), "{text}");
        // A failed sync keeps the time of the last one that succeeded.
        m.object_status(&es("b"), Reason::Throttled, None);
        assert_eq!(
            lines(&m, "lockstep_externalsecret_last_sync"),
            [r#"lockstep_externalsecret_last_sync_timestamp_seconds{namespace="ns",name="b"} 1.0"#]
        );
        assert_eq!(
            lines(&m, "lockstep_externalsecret_ready"),
            [
                r#"lockstep_externalsecret_ready{namespace="ns",name="a",reason="SecretNotFound"} 0"#,
                r#"lockstep_externalsecret_ready{namespace="ns",name="b",reason="Throttled"} 0"#,
            ]
        );
    }
}
