//! The ExternalSecret controller: what triggers a reconcile, and what a reconcile does around its
//! sync (status, Events, rollout restarts, the next action).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, LocalObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{info, instrument, warn};

use super::restart::{self, Need};
use super::sync::{self, Synced};
use super::{Context, Wiring, watch, write};
use crate::api::{ClusterSecretStore, ExternalSecret, ExternalSecretStatus, SecretStore, StoreKind};
use crate::error::{Error, Result};
use crate::status::{self, Reason};
use crate::{MANAGED_BY_LABEL, MANAGER};

/// Run the ExternalSecret controller until shutdown. It reconciles on spec changes, on changes of
/// the Secrets it manages, of the stores they use, and when a poller sees a source move.
pub async fn run(
    ctx: Arc<Context>,
    wiring: Wiring,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let Wiring { triggers, store_caches } = wiring;
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let controller = ctx.controller(super::EXTERNAL_SECRET, ctx.scoped::<ExternalSecret>());
    let reader = controller.store();
    let using = move |kind: StoreKind, ns: Option<String>, name: String| {
        reader
            .state()
            .into_iter()
            .filter(|es| {
                let r = &es.spec.secret_store_ref;
                r.kind == kind && r.name == name && (kind == StoreKind::ClusterSecretStore || es.namespace() == ns)
            })
            .map(|es| ObjectRef::from_obj(&*es))
            .collect::<Vec<_>>()
    };
    // A store change reaches the cache that store resolution reads before it triggers the
    // ExternalSecrets using the store, so they see the new spec.
    let store_changes = watch::changes_cached_in(store_caches.secret_stores, ctx.scoped::<SecretStore>());
    let secrets = ctx.scoped::<PartialObjectMeta<Secret>>();
    let mut controller = controller.owns_stream(watch::every_change(secrets, managed)).watches_stream(store_changes, {
        let using = using.clone();
        move |store: SecretStore| using(StoreKind::SecretStore, store.namespace(), store.name_any())
    });
    if ctx.namespace.is_none() {
        let api = Api::<ClusterSecretStore>::all(ctx.client.clone());
        let cluster_store_changes = watch::changes_cached_in(store_caches.cluster_secret_stores, api);
        controller = controller.watches_stream(cluster_store_changes, move |store: ClusterSecretStore| {
            using(StoreKind::ClusterSecretStore, None, store.name_any())
        });
    }
    // An edit of a ConfigMap or Secret a `templateFrom` names renders its readers again: found in
    // the index each reconcile keeps (not a scan of every ExternalSecret per Secret event, which
    // made a cold start O(N²) in the Secrets it creates), those no longer cached dropped from it.
    let reader = controller.store();
    let readers_ctx = ctx.clone();
    let reading = move |kind: TemplateKind, ns: Option<String>, name: String| {
        let mut index = crate::lock(&readers_ctx.template_readers);
        let found = index.readers(kind, ns.as_deref().unwrap_or_default(), &name);
        let (live, gone): (Vec<_>, Vec<_>) = found.into_iter().partition(|r| reader.get(r).is_some());
        for r in &gone {
            index.forget(r);
        }
        live
    };
    let config_maps = watch::every_change(ctx.scoped::<PartialObjectMeta<ConfigMap>>(), watcher::Config::default());
    // Every Secret's metadata, kept for the credential cache (see `Stores::secret`).
    let all_secrets = ctx.scoped::<PartialObjectMeta<Secret>>();
    let template_secrets =
        watch::versions_watch(all_secrets, watcher::Config::default(), store_caches.secret_versions).touched_objects();
    let by_config_map = reading.clone();
    controller = controller
        .watches_stream(config_maps, move |cm: PartialObjectMeta<ConfigMap>| {
            by_config_map(TemplateKind::ConfigMap, cm.namespace(), cm.name_any())
        })
        .watches_stream(template_secrets, move |s: PartialObjectMeta<Secret>| {
            reading(TemplateKind::Secret, s.namespace(), s.name_any())
        });
    tokio::spawn(want_cold_start_values(controller.store(), ctx.clone()));
    let triggers = futures::stream::unfold(triggers, |mut rx| async move { Some((rx.recv().await?, rx)) });
    controller
        .reconcile_on(triggers)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "reconcile failed");
            }
        })
        .await;
}

/// Once the first list of ExternalSecrets is in, tell the fetcher which AWSCURRENT values their
/// first syncs will ask for, by store, so that the cold start fetches them in full batches. Only
/// ExternalSecrets that refresh: a sync-once one reads AWS at its own sync. A store that does not
/// resolve yet is skipped (its ExternalSecrets fetch as they sync).
async fn want_cold_start_values(reader: kube::runtime::reflector::Store<ExternalSecret>, ctx: Arc<Context>) {
    // The cache counts as synced once the first list is in it (bounded: a cold start that takes
    // longer than this fetches as its syncs come).
    let mut waits = 0;
    while !ctx.readiness.synced(super::EXTERNAL_SECRET) {
        waits += 1;
        if waits > 600 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tracing::debug!(externalsecrets = reader.state().len(), "cold start: first list in");
    let mut by_store: std::collections::HashMap<(String, StoreKind, String), Vec<String>> = Default::default();
    for es in reader.state() {
        if !matches!(es.spec.schedule(), Ok(Some(_))) {
            continue;
        }
        let r = &es.spec.secret_store_ref;
        let keys = crate::source::Sources::of(&es.spec).named.into_iter();
        let keys = keys.filter(|s| s.stage() == Some(crate::api::AWSCURRENT)).map(|s| s.key);
        by_store.entry((es.namespace().unwrap_or_default(), r.kind, r.name.clone())).or_default().extend(keys);
    }
    for ((ns, kind, name), keys) in by_store {
        match ctx.stores.resolve(&ns, kind, &name).await {
            Ok(store) => {
                tracing::debug!(store = %store.id, values = keys.len(), "cold start: values wanted");
                ctx.fetcher.want(&store.id, &store.client, keys);
            }
            Err(e) => tracing::debug!(namespace = ns, store = name, error = %e, "cold start: store not resolved"),
        }
    }
}

/// The kinds a `templateFrom` entry reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TemplateKind {
    ConfigMap,
    Secret,
}

/// The ConfigMaps and Secrets of its namespace whose templates `es` renders.
fn templates_read(es: &ExternalSecret) -> Vec<(TemplateKind, String)> {
    let from = es.spec.target.template.iter().flat_map(|t| &t.template_from);
    from.flat_map(|f| {
        let cm = f.config_map.as_ref().map(|r| (TemplateKind::ConfigMap, r.name.clone()));
        let secret = f.secret.as_ref().map(|r| (TemplateKind::Secret, r.name.clone()));
        cm.into_iter().chain(secret)
    })
    .collect()
}

/// Which ExternalSecrets render templates kept in which ConfigMaps and Secrets, as each one's
/// latest reconcile found its spec. Recording at reconcile is enough: a reconcile after a spec
/// change reads the templates as they are then, and an edit after it finds the reader here.
#[derive(Default)]
pub struct TemplateReaders {
    by_source: std::collections::HashMap<(TemplateKind, String, String), std::collections::HashSet<EsRef>>,
    of: std::collections::HashMap<EsRef, Vec<(TemplateKind, String, String)>>,
}

type EsRef = ObjectRef<ExternalSecret>;

impl TemplateReaders {
    /// Record what `es` reads now (nothing is kept for one that reads no template).
    pub fn record(&mut self, es: &ExternalSecret) {
        let read = templates_read(es);
        if read.is_empty() && self.of.is_empty() {
            return;
        }
        let r = ObjectRef::from_obj(es);
        if read.is_empty() && !self.of.contains_key(&r) {
            return;
        }
        let ns = es.namespace().unwrap_or_default();
        let now: Vec<_> = read.into_iter().map(|(k, name)| (k, ns.clone(), name)).collect();
        self.forget(&r);
        for source in &now {
            self.by_source.entry(source.clone()).or_default().insert(r.clone());
        }
        if !now.is_empty() {
            self.of.insert(r, now);
        }
    }

    /// Forget `r` (deleted, or no longer reading).
    pub fn forget(&mut self, r: &EsRef) {
        for source in self.of.remove(r).unwrap_or_default() {
            if let Some(readers) = self.by_source.get_mut(&source) {
                readers.remove(r);
                if readers.is_empty() {
                    self.by_source.remove(&source);
                }
            }
        }
    }

    /// The ExternalSecrets reading the `kind` named `name` in namespace `ns`.
    pub fn readers(&self, kind: TemplateKind, ns: &str, name: &str) -> Vec<EsRef> {
        let key = (kind, ns.to_string(), name.to_string());
        self.by_source.get(&key).map(|rs| rs.iter().cloned().collect()).unwrap_or_default()
    }
}

/// Sync failures become the status (see [`reconcile`]); what reaches here is a failed status write.
fn error_policy(_es: Arc<ExternalSecret>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(error = %err, "status update failed");
    Action::requeue(Duration::from_secs(5))
}

#[instrument(skip_all, fields(namespace = es.namespace().unwrap_or_default(), name = es.name_any()))]
async fn reconcile(es: Arc<ExternalSecret>, ctx: Arc<Context>) -> Result<Action> {
    let key = format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any());
    crate::lock(&ctx.template_readers).record(&es);
    ctx.metrics.reconcile("ExternalSecret");
    let refresh = es.spec.schedule();
    let outcome = match &refresh {
        Ok(refresh) => sync::sync(&es, &ctx, *refresh).await,
        Err(message) => Err(Error::InvalidValue(message.clone())),
    };
    let refresh = refresh.ok().flatten();
    report(&es, &ctx, &outcome).await?;

    let restart_in = match &outcome {
        Ok(synced) => rollout_restarts(&es, &ctx, &key, synced).await,
        Err(e) => {
            ctx.metrics.failure(e.reason());
            None
        }
    };
    let next = ctx.backoff.settle(&key, outcome.as_ref().err(), restart_in);
    Ok(status::next_action(next, refresh))
}

/// Write the status the outcome gives (only when it changed), publish an Event when the Ready
/// reason changes, and time a detected change that has now been applied.
async fn report(es: &ExternalSecret, ctx: &Context, outcome: &Result<Synced>) -> Result<()> {
    let previous = es.status.clone().unwrap_or_default();
    let (next, reason, message) = status_after(es, &previous, outcome, Time(jiff::Timestamp::now()));
    if next != previous {
        let api = Api::<ExternalSecret>::namespaced(ctx.client.clone(), &es.namespace().unwrap_or_default());
        write::apply_status(&api, &es.name_any(), &next).await?;
    }
    let synced_at = outcome.is_ok().then(|| jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
    ctx.metrics.object_status(&super::object_key::<ExternalSecret>(es), reason, synced_at);
    if status::ready_reason(&previous.conditions) != Some(reason.as_str()) {
        let type_ = if reason.is_ready() { EventType::Normal } else { EventType::Warning };
        write::event(ctx, es, type_, reason.as_str(), &message).await;
        info!(reason = %reason, "ready condition changed");
    }
    if outcome.is_ok()
        && let Some(at) = ctx.pollers.take_detected(&ObjectRef::from_obj(es))
    {
        ctx.metrics.change_applied(at.elapsed());
    }
    Ok(())
}

/// PURE: the status after a sync's outcome, and the Ready reason and message in it.
fn status_after(
    es: &ExternalSecret,
    previous: &ExternalSecretStatus,
    outcome: &Result<Synced>,
    now: Time,
) -> (ExternalSecretStatus, Reason, String) {
    let mut next = previous.clone();
    let (reason, message) = match outcome {
        Ok(synced) => {
            next.sources = synced.sources.clone();
            next.synced_resource_version = Some(super::target::metadata_version(es));
            if synced.fetched {
                next.refresh_time = Some(now.clone());
            }
            next.binding = synced.binding.clone().map(|name| LocalObjectReference { name });
            (Reason::SecretSynced, format!("Secret {:?} is in sync", es.target_name()))
        }
        Err(e) => (e.reason(), e.to_string()),
    };
    next.conditions = status::set_ready(&previous.conditions, reason, &message, es.metadata.generation, now);
    next.observed_generation = es.metadata.generation;
    (next, reason, message)
}

/// Rollout restarts of the targets whose pods run with older data than the Secret holds, once a
/// burst of changes has been quiet for the debounce period. Returns when to look again while a
/// restart waits.
async fn rollout_restarts(es: &ExternalSecret, ctx: &Context, key: &str, synced: &Synced) -> Option<Duration> {
    let targets = &es.spec.rollout_restart_targets;
    if targets.is_empty() {
        return None;
    }
    let ns = es.namespace().unwrap_or_default();
    let records = match restart::records(&ctx.client, &ns, targets).await {
        Ok(records) => records,
        Err(e) => {
            warn!(error = %e, "cannot read the rolloutRestartTargets");
            write::event(ctx, es, EventType::Warning, "RolloutRestartFailed", &e.to_string()).await;
            return None;
        }
    };
    let mut stale = Vec::new();
    for (target, recorded) in records {
        match restart::need(&synced.hash, recorded.as_deref(), synced.data_changed) {
            Need::Nothing => {}
            Need::Record => {
                if let Err(e) = restart::record(&ctx.client, &ns, &target, &synced.hash).await {
                    warn!(error = %e, workload = %target.name, "cannot record the data a workload runs with");
                }
            }
            Need::Restart => stale.push(target),
        }
    }
    if stale.is_empty() {
        ctx.restarts.clear(key);
        return None;
    }
    let wait = ctx.restarts.due(key, &synced.hash, ctx.restart_debounce);
    if !wait.is_zero() {
        return Some(wait);
    }
    for target in &stale {
        if let Err(e) = restart::restart(&ctx.client, &ns, target, &synced.hash).await {
            warn!(error = %e, workload = %target.name, "rollout restart failed");
            let note = format!("{} {}: {e}", target.kind.as_str(), target.name);
            write::event(ctx, es, EventType::Warning, "RolloutRestartFailed", &note).await;
            return None;
        }
    }
    info!(targets = stale.len(), "rollout restart after a data change");
    let note = format!("restarted {} of the rolloutRestartTargets after a data change", stale.len());
    write::event(ctx, es, EventType::Normal, "RolloutRestarted", &note).await;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn es(ns: &str, name: &str, reads: &[(&str, &str)]) -> ExternalSecret {
        let from: Vec<serde_json::Value> =
            reads.iter().map(|(kind, n)| serde_json::json!({ *kind: {"name": n, "items": [{"key": "k"}]} })).collect();
        let template =
            if from.is_empty() { serde_json::json!(null) } else { serde_json::json!({"templateFrom": from}) };
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lockstep.dev/v1alpha1",
            "kind": "ExternalSecret",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"secretStoreRef": {"name": "s"}, "target": {"template": template}},
        }))
        .expect("an ExternalSecret")
    }

    fn names(rs: Vec<EsRef>) -> Vec<String> {
        let mut n: Vec<String> = rs.into_iter().map(|r| r.name).collect();
        n.sort();
        n
    }

    /// The index follows each ExternalSecret's spec through every change of what it reads: added,
    /// moved to another template, one kind swapped for the other, dropped, deleted; namespaces
    /// never mix.
    #[test]
    fn template_readers_follow_every_change_of_what_is_read() {
        use TemplateKind::{ConfigMap, Secret};
        let mut ix = TemplateReaders::default();
        ix.record(&es("a", "plain", &[]));
        assert!(ix.of.is_empty(), "nothing is kept for one that reads no template");
        ix.record(&es("a", "one", &[("secret", "tpl")]));
        ix.record(&es("a", "two", &[("secret", "tpl"), ("configMap", "cm")]));
        ix.record(&es("b", "one", &[("secret", "tpl")]));
        assert_eq!(names(ix.readers(Secret, "a", "tpl")), ["one", "two"]);
        assert_eq!(names(ix.readers(ConfigMap, "a", "cm")), ["two"]);
        assert_eq!(names(ix.readers(ConfigMap, "a", "tpl")), Vec::<String>::new(), "kinds never mix");
        assert_eq!(names(ix.readers(Secret, "b", "tpl")), ["one"], "namespaces never mix");

        ix.record(&es("a", "one", &[("secret", "other")]));
        assert_eq!(names(ix.readers(Secret, "a", "tpl")), ["two"], "moved to another template");
        assert_eq!(names(ix.readers(Secret, "a", "other")), ["one"]);
        ix.record(&es("a", "two", &[("secret", "cm")]));
        assert_eq!(names(ix.readers(ConfigMap, "a", "cm")), Vec::<String>::new(), "a kind swapped");
        assert_eq!(names(ix.readers(Secret, "a", "cm")), ["two"]);
        ix.record(&es("a", "two", &[]));
        assert!(ix.readers(Secret, "a", "cm").is_empty(), "templateFrom dropped");
        ix.forget(&ObjectRef::from_obj(&es("a", "one", &[])));
        ix.forget(&ObjectRef::from_obj(&es("b", "one", &[])));
        assert!(ix.of.is_empty() && ix.by_source.is_empty(), "nothing left behind");
    }
}
