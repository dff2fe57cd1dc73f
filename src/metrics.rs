//! Prometheus metrics. Labels carry store names, operations and reasons: never values.

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
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    aws_calls: Family<AwsCallLabels, Counter>,
    reconciles: Family<KindLabels, Counter>,
    failures: Family<ReasonLabels, Counter>,
    change_applied: Histogram,
    leader: Gauge,
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
            "Time from a change of an AWS secret detected by the poller to the ExternalSecret's Secret applied",
            change_applied.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process runs the controllers (leads, or no election)",
            leader.clone(),
        );
        Self { registry, aws_calls, reconciles, failures, change_applied, leader }
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

    /// Whether this process leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
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
