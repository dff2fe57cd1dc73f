//! Change detection per store: one poller keeps the change metadata of every AWS secret that some
//! ExternalSecret references, refreshes it with the fewest calls (DescribeSecret for few secrets,
//! ListSecrets pages of 100 for many, chosen by the page count last measured), and triggers only the
//! ExternalSecrets whose sources moved to a new version id, at most once per their refreshInterval.
//!
//! Fetched values are shared through [`ValueCache`]: one GetSecretValue per (store, secret,
//! version) for every ExternalSecret that needs it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use tokio::sync::{OnceCell, mpsc};
use tracing::{debug, warn};

use super::StoreId;
use crate::api::ExternalSecret;
use crate::aws::StoreClient;
use crate::aws::metadata::{self, SecretMeta};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::render::{Fetched, SourceKey, VersionSel};

/// How long a fetched value may be shared before it is dropped from memory.
const VALUE_TTL: Duration = Duration::from_secs(60);
/// The shortest poll interval.
const MIN_POLL: Duration = Duration::from_secs(1);

/// An ExternalSecret to reconcile.
pub type EsRef = ObjectRef<ExternalSecret>;
/// The receiving end of the trigger channel.
pub type Triggers = mpsc::UnboundedReceiver<EsRef>;

struct RefState {
    stages: BTreeSet<String>,
    refresh: Duration,
    expires: Instant,
    last_trigger: Option<Instant>,
}

#[derive(Default)]
struct Watched {
    meta: Option<SecretMeta>,
    refs: HashMap<EsRef, RefState>,
}

struct StoreState {
    client: StoreClient,
    watched: HashMap<String, Watched>,
    /// ListSecrets pages a full poll took last time.
    list_pages: Option<u32>,
    running: bool,
    /// Why the last poll could not reach AWS, while it cannot.
    unavailable: Option<String>,
}

/// The pollers of every store, and the channel that triggers ExternalSecrets.
pub struct Pollers {
    stores: Mutex<HashMap<StoreId, Arc<Mutex<StoreState>>>>,
    trigger: mpsc::UnboundedSender<EsRef>,
    /// When a change was detected for ExternalSecrets whose sync is still to come.
    detected: Mutex<HashMap<EsRef, Instant>>,
    metrics: Arc<Metrics>,
}

impl Pollers {
    /// Pollers that send triggered ExternalSecrets into `trigger`.
    pub fn new(trigger: mpsc::UnboundedSender<EsRef>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { stores: Mutex::default(), trigger, detected: Mutex::default(), metrics })
    }

    /// Register (or refresh) what an ExternalSecret reads; starts the store's poll loop if needed.
    pub fn watch(
        self: &Arc<Self>,
        store: &StoreId,
        client: &StoreClient,
        es: EsRef,
        refresh: Duration,
        sources: &[SourceKey],
    ) {
        let state = {
            let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
            stores
                .entry(store.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(StoreState {
                        client: client.clone(),
                        watched: HashMap::new(),
                        list_pages: None,
                        running: false,
                        unavailable: None,
                    }))
                })
                .clone()
        };
        let start = {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            st.client = client.clone();
            let expires = Instant::now() + refresh * 2 + Duration::from_secs(30);
            let mut reads: HashMap<&str, BTreeSet<String>> = HashMap::new();
            for s in sources {
                if let VersionSel::Stage(stage) = &s.version {
                    reads.entry(s.key.as_str()).or_default().insert(stage.clone());
                }
            }
            // Update in place: `last_trigger` must outlive the reconcile it triggered.
            for (key, w) in st.watched.iter_mut() {
                if !reads.contains_key(key.as_str()) {
                    w.refs.remove(&es);
                }
            }
            for (key, stages) in reads {
                let w = st.watched.entry(key.to_string()).or_default();
                let r = w.refs.entry(es.clone()).or_insert_with(|| RefState {
                    stages: BTreeSet::new(),
                    refresh,
                    expires,
                    last_trigger: None,
                });
                r.stages = stages;
                r.refresh = refresh;
                r.expires = expires;
            }
            st.watched.retain(|_, w| !w.refs.is_empty());
            let start = !st.running && !st.watched.is_empty();
            st.running |= start;
            start
        };
        if start {
            let this = self.clone();
            let id = store.clone();
            tokio::spawn(async move { this.poll_loop(id, state).await });
        }
    }

    /// The version id that holds `stage` of `key`, as last seen.
    pub fn current(&self, store: &StoreId, key: &str, stage: &str) -> Option<String> {
        let state = self.stores.lock().unwrap_or_else(|e| e.into_inner()).get(store)?.clone();
        let st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.watched.get(key)?.meta.as_ref()?.stages.get(stage).cloned()
    }

    /// Why the store's change detection cannot reach AWS, while it cannot: its ExternalSecrets then
    /// report ProviderUnavailable and leave their Secrets as they are.
    pub fn unavailable(&self, store: &StoreId) -> Option<String> {
        let state = self.stores.lock().unwrap_or_else(|e| e.into_inner()).get(store)?.clone();
        let st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.unavailable.clone()
    }

    /// When a change that triggered `es` was detected (the earliest not yet synced), forgetting it.
    pub fn take_detected(&self, es: &EsRef) -> Option<Instant> {
        self.detected.lock().unwrap_or_else(|e| e.into_inner()).remove(es)
    }

    /// Forget which versions a store's secrets were seen at: the store's settings or credentials
    /// changed, so what it reads may be another endpoint or account. Its ExternalSecrets then
    /// fetch again instead of taking the fast path; what is registered stays.
    pub fn forget_versions(&self, store: &StoreId) {
        let Some(state) = self.stores.lock().unwrap_or_else(|e| e.into_inner()).get(store).cloned() else { return };
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        for w in st.watched.values_mut() {
            w.meta = None;
        }
    }

    /// Learn from a GetSecretValue answer which version holds a stage (saves a poll).
    pub fn seed(&self, store: &StoreId, source: &SourceKey, fetched: &Fetched) {
        let VersionSel::Stage(stage) = &source.version else { return };
        let Some(state) = self.stores.lock().unwrap_or_else(|e| e.into_inner()).get(store).cloned() else { return };
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = st.watched.get_mut(&source.key) {
            let meta = w.meta.get_or_insert_with(SecretMeta::default);
            meta.stages.entry(stage.clone()).or_insert_with(|| fetched.version_id.clone());
        }
    }

    async fn poll_loop(self: Arc<Self>, id: StoreId, state: Arc<Mutex<StoreState>>) {
        loop {
            let interval = {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                for w in st.watched.values_mut() {
                    w.refs.retain(|_, r| r.expires > now);
                }
                st.watched.retain(|_, w| !w.refs.is_empty());
                let min = st.watched.values().flat_map(|w| w.refs.values()).map(|r| r.refresh).min();
                match min {
                    Some(m) => m.max(MIN_POLL),
                    None => {
                        st.running = false;
                        return;
                    }
                }
            };
            tokio::time::sleep(interval).await;
            let result = self.poll_once(&id, &state).await;
            if let Err(e) = &result {
                warn!(store = %id, error = %e, "polling change metadata failed");
            }
            // AWS going away and coming back reaches every ExternalSecret of the store at once: their
            // conditions say so, and they sync again without waiting out their backoff.
            let flipped = {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                let was = st.unavailable.is_some();
                match result {
                    Ok(()) => st.unavailable = None,
                    Err(Error::ProviderUnavailable(why)) => st.unavailable = Some(why),
                    Err(_) => {}
                }
                match was != st.unavailable.is_some() {
                    true => st.watched.values().flat_map(|w| w.refs.keys().cloned()).collect::<HashSet<_>>(),
                    false => HashSet::new(),
                }
            };
            for es in flipped {
                let _ = self.trigger.send(es);
            }
        }
    }

    async fn poll_once(&self, id: &StoreId, state: &Arc<Mutex<StoreState>>) -> Result<()> {
        let (client, keys, list_pages) = {
            let st = state.lock().unwrap_or_else(|e| e.into_inner());
            (st.client.clone(), st.watched.keys().cloned().collect::<Vec<_>>(), st.list_pages)
        };
        let n = keys.len() as u32;
        let pages = list_pages.unwrap_or(n.div_ceil(100).max(1));
        let store = id.to_string();
        let mut fresh: HashMap<String, Option<SecretMeta>> = HashMap::new();
        if n <= pages {
            for key in &keys {
                client.limit.acquire().await;
                let r = metadata::describe(&client.sm, key).await;
                self.metrics.aws_call(&store, "DescribeSecret", r.as_ref().err());
                fresh.insert(key.clone(), r?);
            }
        } else {
            let prefix = metadata::common_prefix(keys.iter().map(String::as_str));
            let r = metadata::list(&client.sm, &client.limit, &prefix).await;
            let (all, calls) = match r {
                Ok(v) => v,
                Err(e) => {
                    self.metrics.aws_call(&store, "ListSecrets", Some(&e));
                    return Err(e);
                }
            };
            for _ in 0..calls {
                self.metrics.aws_call(&store, "ListSecrets", None);
            }
            state.lock().unwrap_or_else(|e| e.into_inner()).list_pages = Some(calls);
            for key in &keys {
                fresh.insert(key.clone(), all.iter().find(|m| m.is_named(key)).cloned());
            }
        }

        let now = Instant::now();
        let mut triggers = Vec::new();
        let mut detected = Vec::new();
        {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            for (key, new) in fresh {
                let Some(w) = st.watched.get_mut(&key) else { continue };
                let old = w.meta.take();
                for (es, r) in w.refs.iter_mut() {
                    let moved = match (&old, &new) {
                        (Some(o), Some(n)) => r.stages.iter().any(|s| o.stages.get(s) != n.stages.get(s)),
                        (Some(_), None) => true,
                        (None, Some(_)) | (None, None) => false,
                    };
                    if !moved {
                        continue;
                    }
                    // Timed even when the trigger waits: the next refresh then applies the change.
                    detected.push(es.clone());
                    if r.last_trigger.is_none_or(|t| now.duration_since(t) >= r.refresh) {
                        r.last_trigger = Some(now);
                        triggers.push(es.clone());
                    }
                }
                w.meta = new;
            }
        }
        if !detected.is_empty() {
            let mut at = self.detected.lock().unwrap_or_else(|e| e.into_inner());
            for es in detected {
                at.entry(es).or_insert(now);
            }
        }
        for es in triggers {
            debug!(store = %id, externalsecret = %es, "source changed");
            let _ = self.trigger.send(es);
        }
        Ok(())
    }
}

/// Values fetched once per (store, secret, version) and shared while they are fresh.
#[derive(Default)]
pub struct ValueCache {
    entries: Mutex<HashMap<(StoreId, SourceKey), SharedValue>>,
}

/// When a value was first asked for, and the value once fetched.
type SharedValue = (Instant, Arc<OnceCell<Fetched>>);

impl ValueCache {
    /// The value of `source`, fetched with `fetch` unless a fresh one is held or in flight. For a
    /// stage, a held value is reused only while `current` (the version the poller last saw behind
    /// the stage) confirms it; a version id never changes its value.
    pub async fn get<F, Fut>(
        &self,
        store: &StoreId,
        source: &SourceKey,
        current: Option<&str>,
        fetch: F,
    ) -> Result<Fetched>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Fetched>>,
    {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.retain(|_, (at, _)| at.elapsed() < VALUE_TTL);
            let key = (store.clone(), source.clone());
            let by_stage = matches!(source.version, VersionSel::Stage(_));
            let stale = entries.get(&key).is_some_and(|(_, cell)| {
                cell.get().is_some_and(|f| by_stage && current != Some(f.version_id.as_str()))
            });
            if stale {
                entries.remove(&key);
            }
            entries.entry(key).or_insert_with(|| (Instant::now(), Arc::new(OnceCell::new()))).1.clone()
        };
        cell.get_or_try_init(fetch).await.cloned()
    }

    /// A held value of `source` that `current` confirms (as in [`ValueCache::get`]), without fetching.
    pub fn peek(&self, store: &StoreId, source: &SourceKey, current: Option<&str>) -> Option<Fetched> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (at, cell) = entries.get(&(store.clone(), source.clone()))?;
        let f = cell.get().filter(|_| at.elapsed() < VALUE_TTL)?;
        let by_stage = matches!(source.version, VersionSel::Stage(_));
        (!by_stage || current == Some(f.version_id.as_str())).then(|| f.clone())
    }

    /// Drop every value held for a store (its settings or credentials changed).
    pub fn forget(&self, store: &StoreId) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).retain(|(s, _), _| s != store);
    }

    /// Hold a value fetched elsewhere (by a batch call), to share it like one fetched by `get`.
    pub fn put(&self, store: &StoreId, source: &SourceKey, fetched: Fetched) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert((store.clone(), source.clone()), (Instant::now(), Arc::new(OnceCell::new_with(Some(fetched)))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::StoreKind;

    fn client() -> StoreClient {
        let sm = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::Config::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:9")
                .build(),
        );
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::Config::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:9")
                .build(),
        );
        StoreClient { sm, sts, limit: Arc::new(crate::aws::limit::RateLimiter::new(1.0, 1)) }
    }

    fn stage(key: &str, stage: &str) -> SourceKey {
        SourceKey { key: key.into(), version: VersionSel::Stage(stage.into()) }
    }

    #[test]
    fn held_values_are_shared_while_the_version_confirms_them() {
        let cache = ValueCache::default();
        let store = StoreId { kind: StoreKind::SecretStore, namespace: Some("ns".into()), name: "s".into() };
        let source = stage("a", "AWSCURRENT");
        let value = Fetched {
            payload: crate::value::Payload::String(crate::value::SecretBytes::from("v".to_string())),
            version_id: "v1".into(),
            last_changed: None,
        };
        assert_eq!(cache.peek(&store, &source, Some("v1")), None);
        cache.put(&store, &source, value.clone());
        assert_eq!(cache.peek(&store, &source, Some("v1")), Some(value));
        assert_eq!(cache.peek(&store, &source, Some("v2")), None, "a moved stage is not served from memory");
        assert_eq!(cache.peek(&store, &source, None), None);
    }

    #[tokio::test]
    async fn a_changed_store_forgets_what_it_saw() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let pollers = Pollers::new(tx, Arc::new(Metrics::default()));
        let cache = ValueCache::default();
        let store = StoreId { kind: StoreKind::SecretStore, namespace: Some("ns".into()), name: "s".into() };
        let other = StoreId { name: "t".into(), ..store.clone() };
        let source = stage("a", "AWSCURRENT");
        let value = Fetched {
            payload: crate::value::Payload::String(crate::value::SecretBytes::from("v".to_string())),
            version_id: "v1".into(),
            last_changed: None,
        };
        let es = EsRef::new("es").within("ns");
        for id in [&store, &other] {
            pollers.watch(id, &client(), es.clone(), Duration::from_secs(3600), std::slice::from_ref(&source));
            pollers.seed(id, &source, &value);
            cache.put(id, &source, value.clone());
        }
        assert_eq!(pollers.current(&store, "a", "AWSCURRENT").as_deref(), Some("v1"));

        pollers.forget_versions(&store);
        cache.forget(&store);
        assert_eq!(pollers.current(&store, "a", "AWSCURRENT"), None, "the fast path cannot confirm the old version");
        assert_eq!(cache.peek(&store, &source, Some("v1")), None);
        assert_eq!(pollers.current(&other, "a", "AWSCURRENT").as_deref(), Some("v1"), "other stores keep theirs");
        assert_eq!(cache.peek(&other, &source, Some("v1")), Some(value));
    }

    #[tokio::test]
    async fn rewatching_keeps_the_trigger_time_and_replaces_what_is_read() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let pollers = Pollers::new(tx, Arc::new(Metrics::default()));
        let store = StoreId { kind: StoreKind::SecretStore, namespace: Some("ns".into()), name: "s".into() };
        let es = ObjectRef::new("es").within("ns");
        let refresh = Duration::from_secs(3600);
        let state = || pollers.stores.lock().unwrap_or_else(|e| e.into_inner()).get(&store).cloned();

        pollers.watch(&store, &client(), es.clone(), refresh, &[stage("a", "AWSCURRENT"), stage("b", "AWSCURRENT")]);
        let triggered = Instant::now();
        let st = state().unwrap_or_else(|| panic!("store state"));
        if let Some(r) =
            st.lock().unwrap_or_else(|e| e.into_inner()).watched.get_mut("a").and_then(|w| w.refs.get_mut(&es))
        {
            r.last_trigger = Some(triggered);
        }

        pollers.watch(&store, &client(), es.clone(), refresh, &[stage("a", "AWSPENDING")]);
        let st = state().unwrap_or_else(|| panic!("store state"));
        let st = st.lock().unwrap_or_else(|e| e.into_inner());
        let r = &st.watched["a"].refs[&es];
        assert_eq!(r.last_trigger, Some(triggered), "the trigger time outlives the reconcile it caused");
        assert_eq!(r.stages, BTreeSet::from(["AWSPENDING".to_string()]), "stages are replaced, not accumulated");
        assert!(!st.watched.contains_key("b"), "a secret no longer read is no longer watched");
    }
}
