//! The controllers: ExternalSecrets (write Secrets) and stores (validate access), and the state
//! they share.
//!
//! A sync flows down these modules: `stores` (dereference the store) -> `sync` (list sources,
//! fetch through `fetcher`, render, plan the target with `target`, apply) -> `external_secret`
//! (status, Events, restarts, next action). `poller` feeds `fetcher` what AWS holds now.
//! Beside them, `cluster_external_secret` keeps one ExternalSecret per selected namespace
//! (`provision` decides which).

mod backoff;
mod cluster_external_secret;
mod external_secret;
mod fetcher;
mod poller;
pub mod provision;
mod recorder;
pub mod restart;
mod run;
mod store;
mod stores;
mod sync;
pub mod target;
mod watch;
mod write;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::{PredicateConfig, WatchStreamExt, predicates, reflector, watcher};

use crate::admin::Readiness;
use crate::api::StoreKind;
use crate::metrics::Metrics;

pub use cluster_external_secret::run as run_cluster_external_secrets;
pub use external_secret::run as run_external_secrets;
pub use run::run;
pub use store::run as run_store_controller;
pub use stores::{AwsRate, ResolvedStore, Store, StoreCacheWriters, Stores};

/// Shared state of the controllers.
pub struct Context {
    pub client: Client,
    /// One per process, so Events aggregate.
    pub recorder: recorder::Recorder,
    pub metrics: Arc<Metrics>,
    /// `--namespace`: watch only this namespace.
    pub namespace: Option<String>,
    /// Quiet period after the last data change before rollout restarts run.
    pub restart_debounce: Duration,
    /// Each controller reports here when its cache has synced.
    pub readiness: Arc<Readiness>,
    pub restarts: restart::Debouncer,
    pub stores: Stores,
    pub pollers: Arc<poller::Pollers>,
    pub fetcher: Arc<fetcher::Fetcher>,
    pub backoff: backoff::Backoff,
    /// Which ExternalSecrets render which `templateFrom` ConfigMaps and Secrets.
    pub template_readers: std::sync::Mutex<external_secret::TemplateReaders>,
}

/// What the ExternalSecret controller takes from [`Context::new`] once: the stream the pollers
/// trigger it with, and the store caches its watches fill.
pub struct Wiring {
    pub triggers: poller::Triggers,
    pub store_caches: StoreCacheWriters,
}

/// The controllers by the kind they reconcile, as readiness names them.
const EXTERNAL_SECRET: &str = "ExternalSecret";
const CLUSTER_EXTERNAL_SECRET: &str = "ClusterExternalSecret";

/// A store by kind, namespace and name: what has one AWS client, one poller and one rate limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreId {
    pub kind: StoreKind,
    /// A SecretStore's namespace; for a referent ClusterSecretStore, the namespace whose
    /// credentials this client uses (one client per namespace, never shared); else None.
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind, &self.namespace) {
            (StoreKind::SecretStore, ns) => {
                write!(f, "SecretStore {}/{}", ns.as_deref().unwrap_or_default(), self.name)
            }
            (StoreKind::ClusterSecretStore, None) => write!(f, "ClusterSecretStore {}", self.name),
            (StoreKind::ClusterSecretStore, Some(ns)) => {
                write!(f, "ClusterSecretStore {} (credentials of namespace {ns})", self.name)
            }
        }
    }
}

/// How the per-object metrics name an object of kind `K`.
fn object_key<K: kube::Resource<DynamicType = ()>>(obj: &K) -> crate::metrics::ObjectKey {
    let kind = match K::kind(&()).as_ref() {
        "SecretStore" => crate::metrics::SECRET_STORE,
        "ClusterSecretStore" => crate::metrics::CLUSTER_SECRET_STORE,
        _ => crate::metrics::EXTERNAL_SECRET,
    };
    crate::metrics::ObjectKey {
        kind,
        namespace: obj.meta().namespace.clone(),
        name: obj.meta().name.clone().unwrap_or_default(),
    }
}

impl Context {
    /// A context for a controller process. The caches of the controllers it will run are expected
    /// by `readiness` from here on.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        namespace: Option<String>,
        restart_debounce: Duration,
        rate: AwsRate,
    ) -> (Self, Wiring) {
        readiness.expect_cache(EXTERNAL_SECRET);
        readiness.expect_cache(store::controller_name(StoreKind::SecretStore));
        if namespace.is_none() {
            readiness.expect_cache(store::controller_name(StoreKind::ClusterSecretStore));
            readiness.expect_cache(CLUSTER_EXTERNAL_SECRET);
        }
        let (tx, triggers) = tokio::sync::mpsc::unbounded_channel();
        let fetcher = fetcher::Fetcher::new();
        let (stores, store_caches) = Stores::new(client.clone(), metrics.clone(), rate, fetcher.clone());
        let ctx = Self {
            pollers: poller::Pollers::new(tx, fetcher.clone(), metrics.clone()),
            fetcher,
            stores,
            recorder: recorder::Recorder::new(client.clone(), crate::MANAGER, std::env::var("POD_NAME").ok()),
            client,
            metrics,
            readiness,
            namespace,
            restart_debounce,
            restarts: restart::Debouncer::default(),
            backoff: backoff::Backoff::default(),
            template_readers: Default::default(),
        };
        (ctx, Wiring { triggers, store_caches })
    }

    /// The API of a namespaced kind in the scope this process watches (one namespace, or all).
    pub fn scoped<K>(&self) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// A controller on `api` whose cache reports to readiness when it holds its first full list.
    /// (The reflector's own `wait_until_ready` wakes only one waiter, the controller's runner.)
    ///
    /// The cache keeps objects without `managedFields`. A new generation (a spec change) or a
    /// change of labels or annotations (ESO's `kubectl annotate ... force-sync=...`) triggers a
    /// reconcile; our own status writes change none of them, so they do not cause another one.
    fn controller<K: watch::Watched>(&self, kind: &'static str, api: Api<K>) -> Controller<K> {
        let (reader, writer) = reflector::store();
        let (readiness, metrics, cache) = (self.readiness.clone(), self.metrics.clone(), reader.clone());
        let objects = watch::cached_watch(api, watcher::Config::default().any_semantic(), writer)
            .inspect(move |event| match event {
                Ok(watcher::Event::InitDone) => {
                    readiness.cache_synced(kind);
                    // A relist reports no deletions: the cache it left says what still exists.
                    let live: std::collections::BTreeSet<_> = cache.state().iter().map(|o| object_key(&**o)).collect();
                    metrics.retain_objects(kind, |key| live.contains(key));
                }
                Ok(watcher::Event::Delete(obj)) => metrics.forget_object(&object_key(obj)),
                _ => {}
            })
            .applied_objects()
            .predicate_filter(spec_or_metadata, PredicateConfig::default());
        Controller::for_stream(objects, reader)
    }
}

/// What a reconcile follows: the generation, the labels and the annotations of an object.
fn spec_or_metadata<K: kube::Resource>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    predicates::generation(obj).hash(&mut h);
    predicates::labels(obj).hash(&mut h);
    predicates::annotations(obj).hash(&mut h);
    Some(h.finish())
}
