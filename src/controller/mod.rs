//! The controllers: ExternalSecrets (write Secrets) and stores (validate access).

mod batcher;
mod external_secret;
mod poller;
pub mod restart;
mod run;
mod store;
pub mod target;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{PredicateConfig, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::admin::Readiness;
use crate::api::{AwsProvider, ClusterSecretStore, SecretKeySelector, SecretStore, StoreKind};
use crate::aws::{CallCounter, StaticKeys, StoreClient, StoreConfig};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

pub use external_secret::run as run_external_secrets;
pub use run::run;
pub use store::{run_cluster_stores, run_stores};

/// Shared state of the controllers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Event recorder (one per process).
    pub recorder: Recorder,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// `--namespace`: watch only this namespace.
    pub namespace: Option<String>,
    /// Quiet period after the last data change before rollout restarts run.
    pub restart_debounce: Duration,
    /// AWS calls per second per store, and the burst allowed.
    pub aws_rate: (f64, u32),
    /// Readiness of the process: each controller reports when its cache has synced.
    pub readiness: Arc<Readiness>,
    /// Data changes waiting for their rollout restart.
    pub restarts: restart::Debouncer,
    /// Change detection per store.
    pub pollers: Arc<poller::Pollers>,
    /// Values shared between ExternalSecrets.
    pub values: poller::ValueCache,
    /// AWSCURRENT fetches gathered into batches.
    pub batcher: Arc<batcher::Batcher>,
    /// Caches of the stores, filled by the ExternalSecret controller's store watches: resolving a
    /// store reads them instead of the apiserver (a GET only when the cache does not hold it).
    secret_stores: OnceLock<reflector::Store<SecretStore>>,
    cluster_secret_stores: OnceLock<reflector::Store<ClusterSecretStore>>,
    triggers: Mutex<Option<poller::Triggers>>,
    clients: Mutex<HashMap<StoreId, (StoreConfig, StoreClient)>>,
    failures: Mutex<HashMap<String, u32>>,
}

/// The controllers by the kind they reconcile, as readiness names them.
const EXTERNAL_SECRET: &str = "ExternalSecret";
const SECRET_STORE: &str = "SecretStore";
const CLUSTER_SECRET_STORE: &str = "ClusterSecretStore";

/// A store by kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreId {
    /// SecretStore or ClusterSecretStore.
    pub kind: StoreKind,
    /// Namespace of a SecretStore; None for a ClusterSecretStore.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "SecretStore {ns}/{}", self.name),
            None => write!(f, "ClusterSecretStore {}", self.name),
        }
    }
}

/// A store resolved for one ExternalSecret.
pub struct ResolvedStore {
    /// Which store.
    pub id: StoreId,
    /// Its clients.
    pub client: StoreClient,
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
        aws_rate: (f64, u32),
    ) -> Self {
        readiness.expect_cache(EXTERNAL_SECRET);
        readiness.expect_cache(SECRET_STORE);
        if namespace.is_none() {
            readiness.expect_cache(CLUSTER_SECRET_STORE);
        }
        let reporter = Reporter { controller: crate::MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Self {
            pollers: poller::Pollers::new(tx, metrics.clone()),
            values: poller::ValueCache::default(),
            batcher: batcher::Batcher::new(metrics.clone()),
            secret_stores: OnceLock::new(),
            cluster_secret_stores: OnceLock::new(),
            triggers: Mutex::new(Some(rx)),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            readiness,
            namespace,
            restart_debounce,
            aws_rate,
            restarts: restart::Debouncer::default(),
            clients: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// A controller on `api` whose cache reports to readiness when it holds its first full list.
    /// (The reflector's own `wait_until_ready` wakes only one waiter, the controller's runner.)
    ///
    /// The cache keeps objects without `managedFields` (a large JSON tree per object that nothing
    /// here reads), and only a new generation (a spec change) triggers a reconcile: our own status
    /// writes do not cause another one.
    fn controller<K>(&self, kind: &'static str, api: Api<K>) -> Controller<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
    {
        let (reader, writer) = reflector::store();
        let readiness = self.readiness.clone();
        let objects = cached_watch(api, watcher::Config::default().any_semantic(), writer)
            .inspect(move |event| {
                if matches!(event, Ok(watcher::Event::InitDone)) {
                    readiness.cache_synced(kind);
                }
            })
            .applied_objects()
            .predicate_filter(predicates::generation, PredicateConfig::default());
        Controller::for_stream(objects, reader)
    }

    /// The stream of ExternalSecrets whose sources changed (taken once, by the controller).
    pub fn take_triggers(&self) -> Option<poller::Triggers> {
        self.triggers.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Backoff for the n-th consecutive transient failure of an object: 2s, 4s, ... capped at 5 min,
    /// with up to 20% jitter.
    pub fn backoff(&self, key: &str) -> Duration {
        let n = {
            let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = f.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let base = Duration::from_secs(2u64.saturating_pow(n.min(9))).min(Duration::from_secs(300));
        let jitter = base.mul_f64(jitter_fraction(key, n) * 0.2);
        base + jitter
    }

    /// Forget the failures of an object after a success.
    pub fn reset_backoff(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// The clients for a store, built once and reused until the store's settings or its
    /// credentials change.
    pub async fn store_client(&self, id: &StoreId, aws: &AwsProvider, cred_ns: Option<&str>) -> Result<StoreClient> {
        let keys = match aws.auth.as_ref().and_then(|a| a.secret_ref.as_ref()) {
            None => None,
            Some(r) => {
                // The keys usually live in one Secret: read each Secret once.
                let mut read = HashMap::new();
                let mut key = async |sel: &SecretKeySelector| {
                    let ns = credential_namespace(sel, cred_ns)?;
                    self.read_key(sel, ns, &mut read).await
                };
                let access_key_id = key(&r.access_key_id_secret_ref).await?;
                let secret_access_key = key(&r.secret_access_key_secret_ref).await?;
                let session_token = match &r.session_token_secret_ref {
                    Some(sel) => Some(key(sel).await?),
                    None => None,
                };
                Some(StaticKeys { access_key_id, secret_access_key, session_token })
            }
        };
        let cfg = StoreConfig::new(aws, keys);
        // The rate limit outlives a rebuild: new credentials are still the same store to AWS.
        let (limit, changed) = match self.clients.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            Some((known, client)) if *known == cfg => return Ok(client.clone()),
            Some((_, client)) => (client.limit.clone(), true),
            None => (Arc::new(crate::aws::limit::RateLimiter::new(self.aws_rate.0, self.aws_rate.1)), false),
        };
        let counter = CallCounter { metrics: self.metrics.clone(), store: id.to_string() };
        let client = StoreClient::build(&cfg, limit, counter).await?;
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), (cfg, client.clone()));
        if changed {
            // What was seen through the old settings says nothing about the new ones.
            self.pollers.forget_versions(id);
            self.values.forget(id);
        }
        Ok(client)
    }

    async fn read_key(
        &self,
        sel: &SecretKeySelector,
        ns: Option<String>,
        read: &mut HashMap<(String, String), Secret>,
    ) -> Result<String> {
        let Some(ns) = ns else {
            return Err(Error::StoreNotReady(format!(
                "credential Secret {:?} needs a namespace in a ClusterSecretStore",
                sel.name
            )));
        };
        let id = (ns.clone(), sel.name.clone());
        let secret = match read.get(&id) {
            Some(s) => s,
            None => {
                let s = Api::<Secret>::namespaced(self.client.clone(), &ns)
                    .get_opt(&sel.name)
                    .await
                    .map_err(|e| Error::StoreNotReady(format!("cannot read credential Secret {ns}/{}: {e}", sel.name)))?
                    .ok_or_else(|| Error::StoreNotReady(format!("credential Secret {ns}/{} not found", sel.name)))?;
                read.entry(id).or_insert(s)
            }
        };
        let bytes = secret.data.as_ref().and_then(|d| d.get(&sel.key)).map(|b| b.0.clone()).ok_or_else(|| {
            Error::StoreNotReady(format!("credential Secret {ns}/{} has no key {:?}", sel.name, sel.key))
        })?;
        String::from_utf8(bytes).map(|s| s.trim().to_string()).map_err(|_| {
            Error::StoreNotReady(format!("key {:?} of credential Secret {ns}/{} is not UTF-8", sel.key, sel.name))
        })
    }

    /// Find the store an ExternalSecret names and check it may use it.
    pub async fn resolve_store(&self, namespace: &str, kind: StoreKind, name: &str) -> Result<ResolvedStore> {
        match kind {
            StoreKind::SecretStore => {
                let api = Api::<SecretStore>::namespaced(self.client.clone(), namespace);
                let store =
                    cached_or_get(&self.secret_stores, api, ObjectRef::new(name).within(namespace)).await?.ok_or_else(
                        || Error::StoreNotReady(format!("SecretStore {name:?} not found in namespace {namespace:?}")),
                    )?;
                let id = StoreId { kind, namespace: Some(namespace.into()), name: name.into() };
                let client = self.store_client(&id, &store.spec.aws, Some(namespace)).await?;
                Ok(ResolvedStore { id, client })
            }
            StoreKind::ClusterSecretStore => {
                let api = Api::<ClusterSecretStore>::all(self.client.clone());
                let store = cached_or_get(&self.cluster_secret_stores, api, ObjectRef::new(name))
                    .await?
                    .ok_or_else(|| Error::StoreNotReady(format!("ClusterSecretStore {name:?} not found")))?;
                if !store.spec.conditions.is_empty() {
                    let ns = Api::<Namespace>::all(self.client.clone()).get(namespace).await?;
                    let labels = ns.metadata.labels.unwrap_or_default();
                    if !store.spec.allows(namespace, &labels) {
                        return Err(Error::StoreNotAllowed(format!(
                            "ClusterSecretStore {name:?} does not allow namespace {namespace:?}: add it to the store's spec.conditions"
                        )));
                    }
                }
                let id = StoreId { kind, namespace: None, name: name.into() };
                let client = self.store_client(&id, &store.spec.aws, None).await?;
                Ok(ResolvedStore { id, client })
            }
        }
    }
}

/// The object `key` from the cache `slot` holds, or from `api` (its scope matching `key`) when the
/// cache does not hold it (not filled yet, or the object is newer than the watch).
async fn cached_or_get<K>(
    slot: &OnceLock<reflector::Store<K>>,
    api: Api<K>,
    key: ObjectRef<K>,
) -> Result<Option<Arc<K>>>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    if let Some(cached) = slot.get().and_then(|c| c.get(&key)) {
        return Ok(Some(cached));
    }
    Ok(api.get_opt(&key.name).await?.map(Arc::new))
}

/// A watch on `api` that keeps its objects in `writer`'s cache, without `managedFields` (a large
/// JSON tree per object that nothing here reads). Each event reaches the cache before the stream
/// yields it.
fn cached_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
) -> impl Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    retried(api, config).modify(|obj: &mut K| obj.meta_mut().managed_fields = None).reflect(writer)
}

/// A watch on `api` that retries on its own [`WatchBackoff`], relists at once the first time its
/// resource version has expired (410 Gone, as after an apiserver restart), and logs its errors
/// instead of yielding them. Yielded, each would also pause the controller's merged trigger stream
/// (the controller's own backoff), one watch's error after another, so that after an apiserver
/// restart the watches relisted one by one, 10 to 15 s apart, instead of each on its own.
fn retried<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    let backoff = WatchBackoff::default();
    let expired = backoff.expired.clone();
    watcher::watcher(api, config)
        .inspect(move |event| {
            if let Err(watcher::Error::WatchError(status)) = event
                && status.code == 410
            {
                expired.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .backoff(backoff)
        .filter_map(|event| {
            let kept = match event {
                Ok(event) => Some(Ok(event)),
                Err(e) => {
                    warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                    None
                }
            };
            std::future::ready(kept)
        })
}

/// The managed Secrets' metadata as they change (the controller's owned objects), retried like
/// the other watches.
fn owned_secret_changes(
    api: Api<PartialObjectMeta<Secret>>,
    config: watcher::Config,
) -> impl Stream<Item = std::result::Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    retried(api, config).touched_objects()
}

/// How a watch retries after an error: 0.5 s doubling to 10 s, each delay plus up to half again,
/// and from 0.5 s again once anything arrives. Shorter than client-go's (0.8 s doubling to 30 s,
/// each up to doubled), which kube-runtime copies: after an apiserver restart a watch fails once
/// more than the outage needs (its resource version is too old for the new watch cache, so it
/// relists), and with client-go's numbers the two waits kept new ExternalSecrets unseen for up to
/// two minutes. A few watches of one leader retrying every 10 to 15 s cost an apiserver little.
/// That relist after an expired resource version goes at once (0.5 s), but not twice in a row.
#[derive(Clone, Debug, Default)]
struct WatchBackoff {
    failures: u32,
    /// Set by the watch when its resource version expired: it relists next.
    expired: Arc<std::sync::atomic::AtomicBool>,
    /// The last delay was the short one for a relist.
    relisted: bool,
}

const WATCH_RETRY_MIN: Duration = Duration::from_millis(500);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(10);

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = WATCH_RETRY_MIN.saturating_mul(1 << self.failures.min(8)).min(WATCH_RETRY_MAX);
        self.failures = self.failures.saturating_add(1);
        let expired = self.expired.swap(false, std::sync::atomic::Ordering::Relaxed);
        self.relisted = expired && !self.relisted;
        if self.relisted {
            return Some(WATCH_RETRY_MIN);
        }
        Some(base + base.mul_f64(jitter_fraction("watch", self.failures) * 0.5))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
        self.relisted = false;
    }
}

/// The objects of `api` as they change, each one already in the cache `slot` then holds.
fn changes_cached_in<K>(
    slot: &OnceLock<reflector::Store<K>>,
    api: Api<K>,
) -> impl Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (cache, writer) = reflector::store();
    let _ = slot.set(cache);
    cached_watch(api, watcher::Config::default(), writer).touched_objects()
}

/// The namespace a credential Secret is read from. A SecretStore (`own` is its namespace) reads its
/// own namespace only: admission refuses `namespace` on its secretRef, and this refuses it again
/// should a CRD without that rule be installed. A ClusterSecretStore (`own` None) names it.
fn credential_namespace(sel: &SecretKeySelector, own: Option<&str>) -> Result<Option<String>> {
    match (own, sel.namespace.as_deref()) {
        (Some(own), Some(other)) if other != own => Err(Error::StoreNotReady(format!(
            "a SecretStore reads credentials from its own namespace: credential Secret {:?} names namespace {other:?}; remove namespace from aws.auth.secretRef",
            sel.name
        ))),
        (Some(own), _) => Ok(Some(own.to_string())),
        (None, named) => Ok(named.map(String::from)),
    }
}

/// A fraction in [0, 1) that differs between objects and attempts (no RNG needed).
fn jitter_fraction(key: &str, n: u32) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(key.as_bytes());
    h.write_u32(n);
    (h.finish() % 1000) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_retries_sooner_than_client_go_and_starts_over_after_a_success() {
        use kube::runtime::utils::Backoff;
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = b.by_ref().take(12).collect();
        let bases = [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000, 10_000, 10_000, 10_000, 10_000];
        for (d, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(*d >= base && *d <= base.mul_f64(1.5), "{d:?} for {base:?}");
        }
        // Two retries at the cap, as after an apiserver restart, stay within 30 s.
        assert!(delays[10] + delays[11] <= Duration::from_secs(30));
        b.reset();
        assert!(b.next().is_some_and(|d| d < Duration::from_millis(750)));
    }

    #[test]
    fn an_expired_watch_relists_at_once_but_not_twice_in_a_row() {
        let mut b = WatchBackoff::default();
        let outage: Vec<Duration> = b.by_ref().take(6).collect();
        assert!(outage[5] >= WATCH_RETRY_MAX);
        b.expired.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(b.next(), Some(WATCH_RETRY_MIN), "the first relist after a 410 goes at once");
        b.expired.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(b.next().is_some_and(|d| d >= WATCH_RETRY_MAX), "a second 410 in a row waits");
        b.expired.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(b.next(), Some(WATCH_RETRY_MIN));
        assert!(b.next().is_some_and(|d| d >= WATCH_RETRY_MAX), "other errors keep the backoff");
    }

    #[test]
    fn a_secret_store_never_reads_credentials_of_another_namespace() {
        let sel =
            |ns: Option<&str>| SecretKeySelector { name: "c".into(), key: "k".into(), namespace: ns.map(String::from) };
        assert_eq!(credential_namespace(&sel(None), Some("team")).ok(), Some(Some("team".into())));
        assert_eq!(credential_namespace(&sel(Some("team")), Some("team")).ok(), Some(Some("team".into())));
        let err = credential_namespace(&sel(Some("kube-system")), Some("team")).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("own namespace") && e.contains("kube-system")));
        // A ClusterSecretStore names the namespace (None is refused later, with its own message).
        assert_eq!(credential_namespace(&sel(Some("ops")), None).ok(), Some(Some("ops".into())));
        assert_eq!(credential_namespace(&sel(None), None).ok(), Some(None));
    }
}
