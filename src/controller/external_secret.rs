//! Reconcile an ExternalSecret: resolve store -> fetch -> render -> apply -> status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{Context, target};
use crate::api::AWSCURRENT;
use crate::api::{
    ClusterSecretStore, CreationPolicy, DeletionPolicy, ExternalSecret, ExternalSecretStatus, SecretStore,
    SourceStatus, StoreKind,
};
use crate::aws::fetch::batch_get;
use crate::aws::{get_secret_value, metadata};
use crate::error::{Error, Result};
use crate::render::{self, Desired, VersionSel};
use crate::status::{self, Reason};
use crate::{MANAGED_BY_LABEL, MANAGER};

/// What a successful sync leaves behind.
struct Synced {
    sources: Vec<SourceStatus>,
    hash: String,
    resource_version: Option<String>,
    /// The Secret existed with other data (so this is not the first sync).
    data_changed: bool,
}

impl Synced {
    fn new(desired: Desired, resource_version: Option<String>, data_changed: bool) -> Self {
        Self { sources: desired.sources, hash: desired.hash, resource_version, data_changed }
    }
}

/// Run the ExternalSecret controller until shutdown.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (es_api, secrets, stores) = match &ctx.namespace {
        Some(ns) => (
            Api::<ExternalSecret>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns),
            Api::<SecretStore>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone())),
    };
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let controller = ctx.controller(super::EXTERNAL_SECRET, es_api);
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
    let store_changes = super::changes_cached_in(&ctx.secret_stores, stores);
    let mut controller =
        controller.owns_stream(super::owned_secret_changes(secrets, managed)).watches_stream(store_changes, {
            let using = using.clone();
            move |store: SecretStore| using(StoreKind::SecretStore, store.namespace(), store.name_any())
        });
    if ctx.namespace.is_none() {
        let cluster_store_changes =
            super::changes_cached_in(&ctx.cluster_secret_stores, Api::<ClusterSecretStore>::all(client));
        controller = controller.watches_stream(cluster_store_changes, move |store: ClusterSecretStore| {
            using(StoreKind::ClusterSecretStore, None, store.name_any())
        });
    }
    controller
        .reconcile_on(futures::stream::unfold(ctx.take_triggers(), |rx| async move {
            let mut rx = rx?;
            let next = rx.recv().await?;
            Some((next, Some(rx)))
        }))
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

fn error_policy(_es: Arc<ExternalSecret>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(error = %err, "status update failed");
    Action::requeue(Duration::from_secs(5))
}

#[instrument(skip_all, fields(namespace = es.namespace().unwrap_or_default(), name = es.name_any()))]
async fn reconcile(es: Arc<ExternalSecret>, ctx: Arc<Context>) -> Result<Action> {
    let key = format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any());
    ctx.metrics.reconcile("ExternalSecret");
    let refresh = es.spec.refresh().map_err(Error::InvalidValue);
    let outcome = match &refresh {
        Ok(refresh) => sync(&es, &ctx, *refresh).await,
        Err(e) => Err(Error::InvalidValue(e.to_string())),
    };
    let refresh = refresh.ok().flatten();

    let previous = es.status.clone().unwrap_or_default();
    let mut next = previous.clone();
    let (reason, message) = match &outcome {
        Ok(synced) => {
            next.sources = synced.sources.clone();
            if synced.resource_version.is_some() {
                next.synced_resource_version = synced.resource_version.clone();
            }
            (Reason::SecretSynced, format!("Secret {:?} is in sync", es.target_name()))
        }
        Err(e) => (e.reason(), e.to_string()),
    };
    let now = Time(jiff::Timestamp::now());
    next.conditions = status::set_ready(&previous.conditions, reason, &message, es.metadata.generation, now);
    next.observed_generation = es.metadata.generation;
    write_status(&es, &ctx, &previous, &next).await?;

    if status::ready_reason(&previous.conditions) != Some(reason.as_str()) {
        publish(&es, &ctx, reason, &message).await;
        info!(reason = %reason, "ready condition changed");
    }

    if outcome.is_ok()
        && let Some(at) = ctx.pollers.take_detected(&ObjectRef::from_obj(&*es))
    {
        ctx.metrics.change_applied(at.elapsed());
    }

    let restart_in = match &outcome {
        Ok(synced) => rollout_restarts(&es, &ctx, &key, synced).await,
        Err(_) => None,
    };

    Ok(match outcome {
        Ok(_) => {
            ctx.reset_backoff(&key);
            match (restart_in, refresh) {
                (Some(wait), Some(r)) => Action::requeue(wait.min(r)),
                (Some(wait), None) => Action::requeue(wait),
                (None, r) => r.map_or_else(Action::await_change, Action::requeue),
            }
        }
        Err(e) => {
            ctx.metrics.failure(reason);
            if e.is_transient() {
                let wait = ctx.backoff(&key);
                Action::requeue(refresh.map_or(wait, |r| wait.min(r.max(Duration::from_secs(5)))))
            } else {
                ctx.reset_backoff(&key);
                refresh.map_or_else(Action::await_change, Action::requeue)
            }
        }
    })
}

async fn write_status(
    es: &ExternalSecret,
    ctx: &Context,
    previous: &ExternalSecretStatus,
    next: &ExternalSecretStatus,
) -> Result<()> {
    if previous == next {
        return Ok(());
    }
    let api = Api::<ExternalSecret>::namespaced(ctx.client.clone(), &es.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": ExternalSecret::api_version(&()),
        "kind": ExternalSecret::kind(&()),
        "status": next,
    });
    api.patch_status(&es.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

async fn publish(es: &ExternalSecret, ctx: &Context, reason: Reason, message: &str) {
    let type_ = if reason.is_ready() { EventType::Normal } else { EventType::Warning };
    publish_event(es, ctx, type_, reason.as_str(), message).await;
}

async fn publish_event(es: &ExternalSecret, ctx: &Context, type_: EventType, reason: &str, message: &str) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(message.chars().take(1000).collect()),
        action: "Sync".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &es.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}

async fn sync(es: &ExternalSecret, ctx: &Context, refresh: Option<Duration>) -> Result<Synced> {
    let ns = es.namespace().unwrap_or_default();
    let sref = &es.spec.secret_store_ref;
    let store = ctx.resolve_store(&ns, sref.kind, &sref.name).await?;

    let sources = render::sources(&es.spec);
    if let Some(refresh) = refresh {
        ctx.pollers.watch(&store.id, &store.client, ObjectRef::from_obj(es), refresh, &sources);
        // While change detection cannot reach AWS, nothing can be confirmed: say so, touch nothing.
        if let Some(why) = ctx.pollers.unavailable(&store.id) {
            return Err(Error::ProviderUnavailable(why));
        }
    }

    // find is listed again at every sync: that is how new matching AWS secrets are picked up.
    let (mut found, listed) = find_all(es, ctx, &store).await?;
    let all = render::all_sources(&es.spec, &found);

    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    if let Some(unchanged) = unchanged(es, ctx, &store.id, &all, &listed, &secrets).await? {
        return Ok(unchanged);
    }

    let results = futures::future::join_all(sources.iter().map(|s| {
        let client = &store.client;
        let store_id = &store.id;
        async move {
            let current = match &s.version {
                VersionSel::Stage(stage) => ctx.pollers.current(store_id, &s.key, stage),
                VersionSel::Id(_) => None,
            };
            let fetched = ctx
                .values
                .get(store_id, s, current.as_deref(), || async {
                    // AWSCURRENT fetches that arrive together share BatchGetSecretValue calls.
                    if matches!(&s.version, VersionSel::Stage(stage) if stage == AWSCURRENT) {
                        return ctx.batcher.current(store_id, client, &s.key, current.as_deref()).await;
                    }
                    client.limit.acquire().await;
                    let r = get_secret_value(&client.sm, s).await;
                    ctx.metrics.aws_call(&store_id.to_string(), "GetSecretValue", r.as_ref().err());
                    r
                })
                .await;
            if let Ok(f) = &fetched {
                ctx.pollers.seed(store_id, s, f);
            }
            fetched
        }
    }))
    .await;

    let target_name = es.target_name().to_string();

    let all_gone = !results.is_empty() && results.iter().all(|r| matches!(r, Err(Error::SecretNotFound { .. })));
    if all_gone
        && es.spec.target.deletion_policy == DeletionPolicy::Delete
        && let Some(existing) = secrets.get_opt(&target_name).await?
        && target::is_ours(&existing, es)
    {
        secrets.delete(&target_name, &Default::default()).await?;
        info!(secret = %target_name, "deleted Secret: every AWS secret it was built from is gone (deletionPolicy Delete)");
    }

    let mut fetched = BTreeMap::new();
    for (source, result) in sources.iter().cloned().zip(results) {
        fetched.insert(source, result?);
    }
    // Found secrets: held values the listing confirms, the rest in batches.
    let mut extra = Vec::new();
    for source in all.iter().filter(|s| !sources.contains(s)) {
        match ctx.values.peek(&store.id, source, listed.get(&source.key).map(String::as_str)) {
            Some(f) => {
                fetched.insert(source.clone(), f);
            }
            None => extra.push(source.key.clone()),
        }
    }
    if !extra.is_empty() {
        let results = batch_get(&store.client, &ctx.metrics, &store.id.to_string(), &extra).await;
        for (name, result) in extra.into_iter().zip(results) {
            match result {
                Ok(f) => {
                    let source = render::found_source(&name);
                    ctx.values.put(&store.id, &source, f.clone());
                    fetched.insert(source, f);
                }
                // Deleted since it was listed: no longer found.
                Err(Error::SecretNotFound { .. }) => found.values_mut().for_each(|names| names.retain(|n| *n != name)),
                Err(e) => return Err(e),
            }
        }
    }
    let desired = render::render(&es.spec, &fetched, &found)?;

    let policy = es.spec.target.creation_policy;
    if policy == CreationPolicy::None {
        return Ok(Synced::new(desired, None, false));
    }
    let existing = secrets.get_opt(&target_name).await?;
    match (&existing, policy) {
        (None, CreationPolicy::Merge) => {
            return Err(Error::TargetConflict(format!(
                "creationPolicy Merge needs an existing Secret {target_name:?}; create it first or use creationPolicy Owner"
            )));
        }
        (Some(s), CreationPolicy::Owner | CreationPolicy::Orphan) if !target::is_ours(s, es) => {
            return Err(Error::TargetConflict(format!(
                "Secret {target_name:?} already exists and is not managed by this ExternalSecret; delete it, set target.name to another name, or use creationPolicy Merge"
            )));
        }
        _ => {}
    }
    if let Some(s) = &existing {
        if target::up_to_date(s, es, &desired) {
            return Ok(Synced::new(desired, s.metadata.resource_version.clone(), false));
        }
        if s.immutable == Some(true) {
            return Err(Error::TargetConflict(format!(
                "Secret {target_name:?} is immutable and its data changed; delete it so it can be written again"
            )));
        }
    }
    let data_changed = existing
        .as_ref()
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(crate::DATA_HASH_ANNOTATION))
        .is_some_and(|h| *h != desired.hash);
    let patch = target::build(es, &ns, &desired);
    let written = secrets.patch(&target_name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    info!(secret = %target_name, "applied Secret");
    Ok(Synced::new(desired, written.metadata.resource_version, data_changed))
}

/// The AWS secrets each `dataFrom[].find` selects now, and the version id behind AWSCURRENT of each
/// (secrets without a current version hold no value and are left out).
async fn find_all(
    es: &ExternalSecret,
    ctx: &Context,
    store: &super::ResolvedStore,
) -> Result<(render::Found, BTreeMap<String, String>)> {
    let mut found = render::Found::new();
    let mut listed = BTreeMap::new();
    let store_id = store.id.to_string();
    for (i, from) in es.spec.data_from.iter().enumerate() {
        let Some(find) = &from.find else { continue };
        let name = match &find.name {
            Some(n) => Some(regex::Regex::new(&n.regexp).map_err(|e| {
                Error::InvalidValue(format!("dataFrom[{i}].find.name.regexp is not a valid regular expression: {e}"))
            })?),
            None => None,
        };
        let r = metadata::find(&store.client.sm, &store.client.limit, find, name.as_ref()).await;
        match &r {
            Ok((_, calls)) => (0..*calls).for_each(|_| ctx.metrics.aws_call(&store_id, "ListSecrets", None)),
            Err(e) => ctx.metrics.aws_call(&store_id, "ListSecrets", Some(e)),
        }
        let mut names = Vec::new();
        for meta in r?.0 {
            if let Some(version) = meta.stages.get(AWSCURRENT) {
                listed.insert(meta.name.clone(), version.clone());
                names.push(meta.name);
            }
        }
        found.insert(i, names);
    }
    Ok((found, listed))
}

/// Debounced rollout restarts after a data change. Returns when to look again while a restart
/// waits for its quiet period.
async fn rollout_restarts(es: &ExternalSecret, ctx: &Context, key: &str, synced: &Synced) -> Option<Duration> {
    let targets = &es.spec.rollout_restart_targets;
    if targets.is_empty() {
        return None;
    }
    if synced.data_changed {
        ctx.restarts.changed(key);
    }
    let wait = ctx.restarts.due(key, ctx.restart_debounce)?;
    if !wait.is_zero() {
        return Some(wait);
    }
    let ns = es.namespace().unwrap_or_default();
    match super::restart::restart(&ctx.client, &ns, targets, &synced.hash).await {
        Ok(()) => {
            info!(targets = targets.len(), "rollout restart after a data change");
            let note = "restarted the rolloutRestartTargets after a data change";
            publish_event(es, ctx, EventType::Normal, "RolloutRestarted", note).await;
        }
        Err(e) => {
            warn!(error = %e, "rollout restart failed");
            publish_event(es, ctx, EventType::Warning, "RolloutRestartFailed", &e.to_string()).await;
        }
    }
    None
}

/// The fast path of a refresh: nothing changed since the last sync (same generation, every source
/// still at the version that is live, the Secret intact), so no value is fetched.
async fn unchanged(
    es: &ExternalSecret,
    ctx: &Context,
    store: &super::StoreId,
    sources: &[render::SourceKey],
    listed: &BTreeMap<String, String>,
    secrets: &Api<Secret>,
) -> Result<Option<Synced>> {
    let Some(status) = es.status.as_ref() else { return Ok(None) };
    let policy = es.spec.target.creation_policy;
    if !matches!(policy, CreationPolicy::Owner | CreationPolicy::Orphan)
        || status.observed_generation != es.metadata.generation
        || status::ready_reason(&status.conditions) != Some(Reason::SecretSynced.as_str())
        || status.sources.len() != sources.len()
    {
        return Ok(None);
    }
    for s in sources {
        let live = status.sources.iter().find(|l| {
            l.key == s.key
                && match &s.version {
                    VersionSel::Stage(stage) => l.version_stage.as_deref() == Some(stage.as_str()),
                    VersionSel::Id(id) => l.version_stage.is_none() && &l.version_id == id,
                }
        });
        let Some(live) = live else { return Ok(None) };
        let current = |stage: &str| match (stage, listed.get(&s.key)) {
            (AWSCURRENT, Some(version)) => Some(version.clone()),
            _ => ctx.pollers.current(store, &s.key, stage),
        };
        if let VersionSel::Stage(stage) = &s.version
            && current(stage).as_deref() != Some(live.version_id.as_str())
        {
            return Ok(None);
        }
    }
    let Some(secret) = secrets.get_opt(es.target_name()).await? else { return Ok(None) };
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let data: std::collections::BTreeMap<String, crate::value::SecretBytes> =
        secret.data.iter().flatten().map(|(k, v)| (k.clone(), crate::value::SecretBytes::new(v.0.clone()))).collect();
    let hash = render::hash(&data);
    let intact = target::is_ours(&secret, es)
        && annotations.get(crate::DATA_HASH_ANNOTATION) == Some(&hash)
        && annotations.get(crate::SOURCE_VERSIONS_ANNOTATION) == Some(&target::versions_annotation(&status.sources));
    Ok(intact.then(|| Synced {
        sources: status.sources.clone(),
        hash,
        resource_version: secret.metadata.resource_version.clone(),
        data_changed: false,
    }))
}
