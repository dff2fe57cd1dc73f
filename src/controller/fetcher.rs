//! The one way values are fetched: [`Fetcher::fetch`] answers "the values of these sources" for a
//! store. It knows which version is live (what the poller last saw behind each stage, seeded by
//! fetches, or what this sync's listing saw), shares each value once per (store, secret,
//! version) while it is fresh, and gathers AWSCURRENT fetches that arrive together (a cold start,
//! a rotation that triggers many ExternalSecrets at once) into BatchGetSecretValue calls of up to
//! 20 ids; a lone one goes as GetSecretValue.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, oneshot};

use super::StoreId;
use crate::api::AWSCURRENT;
use crate::aws::{BATCH_MAX, StoreClient};
use crate::error::{Error, Result};
use crate::lock;
use crate::source::{Fetched, SourceRef, Sources, Version};

/// How long a fetched value may be shared before it is dropped from memory.
const VALUE_TTL: Duration = Duration::from_secs(60);
/// A forced sync reads AWS afresh, but shares a value fetched this recently (the reconciles one
/// change causes in a row).
const FRESH_ENOUGH: Duration = Duration::from_secs(5);
/// How long a prefetched value waits for the sync that wants it: a cold start of many
/// ExternalSecrets claims its values in no particular order. A value older than its stage's
/// version (as the poller sees it) is never used; a value claimed stale is corrected by the first
/// poll (the claim records its version, the poll sees the stage moved).
const PREFETCH_TTL: Duration = Duration::from_secs(300);
/// How often held values are checked for expiry.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// How long the first AWSCURRENT fetch of a batch waits for company.
const WINDOW: Duration = Duration::from_millis(10);

/// Stage -> version id of one AWS secret; `None` until anything was seen.
pub type Stages = Option<crate::aws::metadata::StageMap>;

type Waiter = (String, oneshot::Sender<Result<Fetched>>);

/// A value shared between the syncs that read it.
struct SharedValue {
    /// When it was first asked for (or prefetched).
    at: Instant,
    cell: Arc<OnceCell<Fetched>>,
    /// How long it is held from `at`: [`PREFETCH_TTL`] when it was fetched ahead of any sync
    /// asking (see [`Fetcher::want`]), else [`VALUE_TTL`]. Claiming it does not shorten it: the
    /// second reader of a secret two ExternalSecrets read may come minutes into a cold start.
    ttl: Duration,
    /// Fetched ahead and not asked for by any sync yet.
    unclaimed: bool,
}

impl SharedValue {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) >= self.ttl
    }
}

/// Whether a sync may take a held value rather than read AWS: not `expired`, not `forced` (a
/// forced sync shares only what is younger than [`FRESH_ENOUGH`]) and, for a stage, not held at
/// another version than the one known `live`. With nothing known, only a value fetched ahead and
/// not claimed yet is taken (a cold start: the first reader's fetch then records its version for
/// the others); otherwise nothing known means a poll saw the secret gone, or forgot it, and AWS
/// is asked.
fn reusable(
    expired: bool,
    forced: bool,
    by_stage: bool,
    held: Option<&str>,
    live: Option<&str>,
    unclaimed: bool,
) -> bool {
    let Some(held) = held else { return !expired }; // Being fetched: wait for it.
    let moved = by_stage && live.map_or(!unclaimed, |live| live != held);
    !expired && !forced && !moved
}

/// The AWSCURRENT fetches of a store waiting to go out together, and the keys wanted soon that
/// fill the rest of a batch.
struct Pending {
    client: StoreClient,
    waiting: Vec<Waiter>,
    wanted: BTreeSet<String>,
}

/// The values held, and when the expired ones were last dropped.
#[derive(Default)]
struct Values {
    held: HashMap<(StoreId, SourceRef), SharedValue>,
    pruned: Option<Instant>,
}

impl Values {
    /// Drop what is past [`VALUE_TTL`], at most once per [`PRUNE_EVERY`]: a scan per fetch would
    /// make a cold start of N ExternalSecrets O(N x values held).
    fn prune(&mut self, now: Instant) {
        if self.pruned.is_some_and(|at| now.saturating_duration_since(at) < PRUNE_EVERY) {
            return;
        }
        self.held.retain(|_, v| !v.expired(now));
        self.pruned = Some(now);
    }
}

/// Values and version knowledge of every store.
#[derive(Default)]
pub struct Fetcher {
    /// The versions behind the stages of the secrets the poller watches (its keys are exactly
    /// those), by store.
    polled: Mutex<HashMap<StoreId, HashMap<String, Stages>>>,
    values: Mutex<Values>,
    /// AWSCURRENT fetches waiting to go out together, by store.
    pending: Mutex<HashMap<StoreId, Pending>>,
}

impl Fetcher {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The values of every source in `sources`, each fetched at most once however many
    /// ExternalSecrets ask at the same time. `fresh`: read AWS even for values held in memory (a
    /// forced sync).
    pub async fn fetch(
        self: &Arc<Self>,
        store: &StoreId,
        client: &StoreClient,
        sources: &Sources,
        fresh: bool,
    ) -> BTreeMap<SourceRef, Result<Fetched>> {
        let all = sources.all();
        let fetches = all.iter().map(|s| self.fetch_one(store, client, s, sources, fresh));
        let results = futures::future::join_all(fetches).await;
        all.into_iter().zip(results).collect()
    }

    /// The version id live behind `source` as far as is known: a version id is itself; a stage is
    /// what this sync's listing saw (AWSCURRENT of a found secret), else what the poller last saw.
    pub fn live(&self, store: &StoreId, source: &SourceRef, sources: &Sources) -> Option<String> {
        let stage = match &source.version {
            Version::Id(id) => return Some(id.clone()),
            Version::Stage(stage) => stage,
            Version::Tags => return None,
        };
        if stage == AWSCURRENT
            && let Some(listed) = sources.listed.get(&source.key)
        {
            return Some(listed.clone());
        }
        lock(&self.polled).get(store)?.get(&source.key)?.as_ref()?.get(stage).cloned()
    }

    /// Start keeping the versions of `key` (the poller watches it from now on).
    pub fn track(&self, store: &StoreId, key: &str) {
        lock(&self.polled).entry(store.clone()).or_default().entry(key.to_string()).or_insert(None);
    }

    /// Stop keeping the versions of `key` (no ExternalSecret reads it any more).
    pub fn untrack(&self, store: &StoreId, key: &str) {
        let mut polled = lock(&self.polled);
        if let Some(keys) = polled.get_mut(store) {
            keys.remove(key);
            if keys.is_empty() {
                polled.remove(store);
            }
        }
    }

    /// Record what a poll saw of a watched `key` (`None`: it is gone); returns what was known
    /// before. Keys not watched are left alone.
    pub fn observe(&self, store: &StoreId, key: &str, seen: Stages) -> Option<Stages> {
        let mut polled = lock(&self.polled);
        let known = polled.get_mut(store)?.get_mut(key)?;
        Some(std::mem::replace(known, seen))
    }

    /// Forget every version and value of a store: its settings or credentials changed, so what it
    /// reads may be another endpoint or account. What is watched stays watched.
    pub fn forget(&self, store: &StoreId) {
        if let Some(keys) = lock(&self.polled).get_mut(store) {
            keys.values_mut().for_each(|stages| *stages = None);
        }
        lock(&self.values).held.retain(|(s, _), _| s != store);
        if let Some(p) = lock(&self.pending).get_mut(store) {
            p.wanted.clear();
        }
    }

    /// The AWSCURRENT values of `keys` will be asked for soon (a cold start's ExternalSecrets): they
    /// fill the free places of the store's next batches, so a cold start of M secrets costs about
    /// M / 20 BatchGetSecretValue calls rather than one call per handful of syncs that happen to
    /// arrive together.
    pub fn want(&self, store: &StoreId, client: &StoreClient, keys: impl IntoIterator<Item = String>) {
        let held: BTreeSet<String> = {
            let values = lock(&self.values);
            let of_store = values.held.keys().filter(|(s, r)| s == store && r.stage() == Some(AWSCURRENT));
            of_store.map(|(_, r)| r.key.clone()).collect()
        };
        let mut pending = lock(&self.pending);
        let p = pending.entry(store.clone()).or_insert_with(|| Pending::new(client));
        p.client = client.clone();
        p.wanted.extend(keys.into_iter().filter(|k| !held.contains(k)));
    }

    async fn fetch_one(
        self: &Arc<Self>,
        store: &StoreId,
        client: &StoreClient,
        source: &SourceRef,
        sources: &Sources,
        fresh: bool,
    ) -> Result<Fetched> {
        if source.version == Version::Tags {
            // Tags move without a new version: read at every sync, never shared.
            return client.get_value(source).await;
        }
        let live = self.live(store, source, sources);
        let cell = self.cell(store, source, live.as_deref(), fresh);
        let fetched = cell
            .get_or_try_init(|| async {
                match source.stage() {
                    Some(AWSCURRENT) => self.fetch_current(store, client, &source.key, live.as_deref()).await,
                    _ => client.get_value(source).await,
                }
            })
            .await
            .cloned();
        if let Ok(f) = &fetched {
            self.seed(store, source, f);
        }
        fetched
    }

    /// The shared slot of a value: a held one is reused while [`reusable`]; one being fetched is
    /// waited for.
    fn cell(&self, store: &StoreId, source: &SourceRef, live: Option<&str>, refetch: bool) -> Arc<OnceCell<Fetched>> {
        let mut values = lock(&self.values);
        let now = Instant::now();
        values.prune(now);
        let key = (store.clone(), source.clone());
        let by_stage = source.stage().is_some();
        let stale = values.held.get(&key).is_some_and(|v| {
            let forced = refetch && now.saturating_duration_since(v.at) >= FRESH_ENOUGH;
            let held = v.cell.get().map(|f| f.version_id.as_str());
            !reusable(v.expired(now), forced, by_stage, held, live, v.unclaimed)
        });
        if stale {
            values.held.remove(&key);
        }
        let new = || SharedValue { at: now, cell: Arc::default(), ttl: VALUE_TTL, unclaimed: false };
        let v = values.held.entry(key).or_insert_with(new);
        v.unclaimed = false;
        v.cell.clone()
    }

    /// Learn from a fetch which version holds a stage of a watched secret, when no poll has said.
    fn seed(&self, store: &StoreId, source: &SourceRef, fetched: &Fetched) {
        let Some(stage) = source.stage() else { return };
        let mut polled = lock(&self.polled);
        if let Some(known) = polled.get_mut(store).and_then(|keys| keys.get_mut(&source.key)) {
            let known = known.get_or_insert_default();
            if known.get(stage).is_none() {
                known.insert(stage.to_string(), fetched.version_id.clone());
            }
        }
    }

    /// The AWSCURRENT value of `key`, in a batch with the other AWSCURRENT fetches of the store that
    /// arrive within [`WINDOW`]. When `expected` is known and the batch answered another version
    /// (it moved in between), the value is fetched again by stage.
    async fn fetch_current(
        self: &Arc<Self>,
        store: &StoreId,
        client: &StoreClient,
        key: &str,
        expected: Option<&str>,
    ) -> Result<Fetched> {
        let (tx, rx) = oneshot::channel();
        let flush_in = {
            let mut pending = lock(&self.pending);
            let p = pending.entry(store.clone()).or_insert_with(|| Pending::new(client));
            p.client = client.clone();
            p.waiting.push((key.to_string(), tx));
            match p.waiting.len() {
                1 => Some(WINDOW),
                n if n >= BATCH_MAX => Some(Duration::ZERO),
                _ => None,
            }
        };
        if let Some(wait) = flush_in {
            let this = self.clone();
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                this.flush(&store).await;
            });
        }
        let fetched = rx.await.unwrap_or_else(|_| Err(dropped()))?;
        match expected {
            Some(v) if v != fetched.version_id => client.get_value(&SourceRef::current(key)).await,
            _ => Ok(fetched),
        }
    }

    /// Send what waits, filled up to [`BATCH_MAX`] with keys wanted soon (their values are held
    /// as prefetched). A lone key with nothing wanted goes as GetSecretValue.
    async fn flush(&self, store: &StoreId) {
        let (client, waiting, extra) = {
            let mut pending = lock(&self.pending);
            let Some(p) = pending.get_mut(store) else { return };
            let waiting = std::mem::take(&mut p.waiting);
            if waiting.is_empty() {
                return;
            }
            for (key, _) in &waiting {
                p.wanted.remove(key);
            }
            let room = BATCH_MAX.saturating_sub(waiting.len() % BATCH_MAX) % BATCH_MAX;
            let extra: Vec<String> = std::iter::from_fn(|| p.wanted.pop_first()).take(room).collect();
            (p.client.clone(), waiting, extra)
        };
        // Claimable while in flight: a sync that asks for one of these meanwhile waits for this
        // batch rather than fetching it again.
        let (ahead, inits): (Vec<_>, Vec<_>) = self
            .hold_ahead(store, &extra)
            .into_iter()
            .map(|cell| {
                let (tx, rx) = oneshot::channel::<Result<Fetched>>();
                let init = async move {
                    let got = || async move { rx.await.unwrap_or_else(|_| Err(dropped())) };
                    let _ = cell.get_or_try_init(got).await;
                };
                (tx, init)
            })
            .unzip();
        let (mut keys, senders): (Vec<String>, Vec<_>) = waiting.into_iter().unzip();
        let asked = keys.len();
        keys.extend(extra);
        let call = async {
            let mut results = match keys.as_slice() {
                [key] => vec![client.get_value(&SourceRef::current(key)).await],
                _ => client.batch_get(&keys).await,
            };
            let prefetched = results.split_off(asked.min(results.len()));
            for (tx, r) in senders.into_iter().zip(results) {
                let _ = tx.send(r);
            }
            for (tx, r) in ahead.into_iter().zip(prefetched) {
                let _ = tx.send(r);
            }
        };
        // The cells are claimed for initialisation first, then the call goes out.
        futures::future::join(futures::future::join_all(inits), call).await;
    }

    /// Hold a slot for [`PREFETCH_TTL`] for each key fetched ahead that has none; a failed fetch
    /// leaves its slot empty, and the sync that wants it asks again and reports what it gets.
    fn hold_ahead(&self, store: &StoreId, keys: &[String]) -> Vec<Arc<OnceCell<Fetched>>> {
        let mut values = lock(&self.values);
        let now = Instant::now();
        let mut cells = Vec::with_capacity(keys.len());
        for key in keys {
            let slot = values.held.entry((store.clone(), SourceRef::current(key)));
            let v = slot.or_insert_with(|| SharedValue {
                at: now,
                cell: Arc::default(),
                ttl: PREFETCH_TTL,
                unclaimed: true,
            });
            cells.push(v.cell.clone());
        }
        cells
    }
}

fn dropped() -> Error {
    Error::ProviderUnavailable("the fetch was dropped".into())
}

impl Pending {
    fn new(client: &StoreClient) -> Self {
        Self { client: client.clone(), waiting: Vec::new(), wanted: BTreeSet::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::StoreKind;
    use crate::aws::fake::FakeAws;
    use crate::aws::{Calls, StoreClient};
    use crate::metrics::Metrics;

    fn store() -> StoreId {
        StoreId { kind: StoreKind::SecretStore, namespace: Some("ns".into()), name: "s".into() }
    }

    fn client(aws: &Arc<FakeAws>) -> StoreClient {
        StoreClient::new(aws.clone(), Calls::new(Arc::new(Metrics::default()), "s".into(), 1000.0, 1000))
    }

    fn named(keys: &[&str]) -> Sources {
        Sources { named: keys.iter().map(|k| SourceRef::current(k)).collect(), ..Default::default() }
    }

    fn value(r: &Result<Fetched>) -> String {
        let f = r.as_ref().expect("fetched");
        String::from_utf8(f.payload.bytes().expose().to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn values_arriving_together_share_one_batch_and_repeat_from_memory() {
        let aws = Arc::new(FakeAws::default());
        for k in ["a", "b", "c"] {
            aws.put(k, &format!("{k}-1"));
        }
        let fetcher = Fetcher::new();
        let (store, client) = (store(), client(&aws));
        for k in ["a", "b", "c"] {
            fetcher.track(&store, k);
        }
        let sources = named(&["a", "b", "c"]);
        let (one, two) = tokio::join!(
            fetcher.fetch(&store, &client, &sources, false),
            fetcher.fetch(&store, &client, &sources, false)
        );
        assert_eq!(value(&one[&SourceRef::current("b")]), "b-1");
        assert_eq!(value(&two[&SourceRef::current("c")]), "c-1");
        assert_eq!(aws.calls(), [("BatchGetSecretValue", 1)].into(), "three values, two asking, one call");

        fetcher.fetch(&store, &client, &sources, false).await;
        assert_eq!(aws.calls(), [("BatchGetSecretValue", 1)].into(), "a confirmed value comes from memory");
        assert_eq!(fetcher.live(&store, &SourceRef::current("a"), &sources).as_deref(), Some("v1"), "seeded");
    }

    #[tokio::test]
    async fn wanted_values_fill_the_batches_of_a_cold_start_one_by_one() {
        let aws = Arc::new(FakeAws::default());
        let keys: Vec<String> = (0..45).map(|i| format!("k{i:02}")).collect();
        for k in &keys {
            aws.put(k, &format!("{k}-1"));
        }
        let fetcher = Fetcher::new();
        let (store, client) = (store(), client(&aws));
        fetcher.want(&store, &client, keys.iter().cloned());
        // Syncs come one at a time, in another order than the keys: each is in a batch already
        // fetched, or fills a new one.
        for k in keys.iter().rev() {
            fetcher.track(&store, k);
            let got = fetcher.fetch(&store, &client, &named(&[k]), false).await;
            assert_eq!(value(&got[&SourceRef::current(k)]), format!("{k}-1"));
        }
        assert_eq!(aws.calls(), [("BatchGetSecretValue", 3)].into(), "45 values, ceil(45 / 20) calls");
    }

    #[tokio::test]
    async fn a_cold_start_of_concurrent_syncs_behind_the_rate_limit_costs_about_one_call_per_20_values() {
        let aws = Arc::new(FakeAws::default());
        let keys: Vec<String> = (0..400).map(|i| format!("k{i:03}")).collect();
        for k in &keys {
            aws.put(k, "v");
        }
        let fetcher = Fetcher::new();
        let store = store();
        // The operator's defaults: 20 calls a second, a burst of 40.
        let client = StoreClient::new(aws.clone(), Calls::new(Arc::new(Metrics::default()), "s".into(), 20.0, 40));
        fetcher.want(&store, &client, keys.iter().cloned());
        // 16 syncs at a time, 500 in all (a fifth of the secrets read twice), in another order.
        let syncs = (0..500).map(|i| keys[(i * 7) % keys.len()].clone());
        let started = Instant::now();
        futures::StreamExt::for_each_concurrent(futures::stream::iter(syncs), 16, |k: String| {
            let (fetcher, store, client) = (fetcher.clone(), store.clone(), client.clone());
            async move {
                fetcher.track(&store, &k); // as a sync registers its keys before it fetches
                let got = fetcher.fetch(&store, &client, &named(&[&k]), false).await;
                assert_eq!(value(&got[&SourceRef::current(&k)]), "v");
            }
        })
        .await;
        let calls: usize = aws.calls().values().sum();
        assert!(calls <= 20, "{calls} calls for 400 values ({:?}, {:?})", aws.calls(), started.elapsed());
    }

    #[tokio::test]
    async fn a_prefetched_value_is_not_used_once_its_stage_moved_and_a_failed_one_is_asked_again() {
        let aws = Arc::new(FakeAws::default());
        aws.put("a", "one");
        aws.put("b", "b");
        let fetcher = Fetcher::new();
        let (store, client) = (store(), client(&aws));
        fetcher.want(&store, &client, ["b".to_string(), "gone".to_string()]);
        fetcher.track(&store, "a");
        fetcher.fetch(&store, &client, &named(&["a"]), false).await;
        assert_eq!(aws.calls(), [("BatchGetSecretValue", 1)].into(), "a lone fetch took the wanted along");

        fetcher.track(&store, "b");
        let v2 = aws.put("b", "b2");
        let mut stages = crate::aws::metadata::StageMap::default();
        stages.insert(AWSCURRENT.to_string(), v2);
        fetcher.observe(&store, "b", Some(stages));
        let got = fetcher.fetch(&store, &client, &named(&["b"]), false).await;
        assert_eq!(value(&got[&SourceRef::current("b")]), "b2", "the poll saw b move after the prefetch");

        let got = fetcher.fetch(&store, &client, &named(&["gone"]), false).await;
        assert!(got[&SourceRef::current("gone")].is_err(), "the sync's own fetch reports the failure");
        assert_eq!(aws.calls(), [("BatchGetSecretValue", 1), ("GetSecretValue", 2)].into());
    }

    #[tokio::test]
    async fn every_reader_of_a_prefetched_value_shares_it_before_any_poll() {
        let aws = Arc::new(FakeAws::default());
        aws.put("a", "a");
        aws.put("b", "b");
        let fetcher = Fetcher::new();
        let (store, client) = (store(), client(&aws));
        fetcher.want(&store, &client, ["a".to_string(), "b".to_string()]);
        // Two ExternalSecrets read each; a sync registers its keys with the poller before it
        // fetches, so the first reader's claim records the version for the second.
        for k in ["a", "a", "b", "b"] {
            fetcher.track(&store, k);
            let got = fetcher.fetch(&store, &client, &named(&[k]), false).await;
            assert_eq!(value(&got[&SourceRef::current(k)]), k);
        }
        assert_eq!(aws.calls(), [("BatchGetSecretValue", 1)].into());
        let got = fetcher.fetch(&store, &client, &named(&["a"]), true).await;
        assert_eq!(value(&got[&SourceRef::current("a")]), "a");
        assert_eq!(aws.calls(), [("BatchGetSecretValue", 1)].into(), "a forced sync shares what is a moment old");
    }

    #[test]
    fn a_held_value_is_kept_for_its_own_time_whoever_claimed_it() {
        let at = Instant::now();
        let held = |ttl| SharedValue { at, cell: Arc::default(), ttl, unclaimed: false };
        // (held for, age, expired)
        let table = [
            (VALUE_TTL, 0, false),
            (VALUE_TTL, 59, false),
            (VALUE_TTL, 60, true),
            // A cold start's second reader of a secret, minutes after the batch that fetched it.
            (PREFETCH_TTL, 90, false),
            (PREFETCH_TTL, 299, false),
            (PREFETCH_TTL, 300, true),
        ];
        for (ttl, age, expired) in table {
            let now = at + Duration::from_secs(age);
            assert_eq!(held(ttl).expired(now), expired, "held {ttl:?}, {age} s old");
        }
        assert!(!held(VALUE_TTL).expired(at - Duration::from_secs(1)), "a clock read before `at`");
    }

    #[test]
    fn when_a_held_value_is_reused() {
        // (expired, forced, by stage, held version (None: in flight), live, unclaimed, reused)
        let table = [
            (false, false, true, Some("v1"), Some("v1"), false, true),
            (false, false, true, Some("v1"), Some("v1"), true, true),
            // Nothing known: a cold start's prefetch is taken; a claimed value is not (a poll saw
            // the secret gone, or the store was forgotten).
            (false, false, true, Some("v1"), None, true, true),
            (false, false, true, Some("v1"), None, false, false),
            (false, false, true, Some("v1"), Some("v2"), false, false),
            (false, false, true, Some("v1"), Some("v2"), true, false),
            (false, false, false, Some("v1"), Some("v2"), false, true),
            (false, false, false, Some("v1"), None, false, true),
            (false, true, true, Some("v1"), Some("v1"), false, false),
            (true, false, true, Some("v1"), Some("v1"), false, false),
            (true, false, true, Some("v1"), Some("v1"), true, false),
            (false, false, true, None, Some("v2"), false, true),
            (false, true, true, None, None, false, true),
            (true, false, true, None, None, true, false),
        ];
        for (expired, forced, by_stage, held, live, unclaimed, reused) in table {
            let case = format!(
                "expired {expired}, forced {forced}, by stage {by_stage}, held {held:?}, live {live:?}, unclaimed {unclaimed}"
            );
            assert_eq!(reusable(expired, forced, by_stage, held, live, unclaimed), reused, "{case}");
        }
    }

    #[tokio::test]
    async fn a_secret_a_poll_saw_gone_is_asked_for_again_not_served_from_memory() {
        let aws = Arc::new(FakeAws::default());
        aws.put("a", "a");
        let fetcher = Fetcher::new();
        let (store, client) = (store(), client(&aws));
        fetcher.track(&store, "a");
        fetcher.fetch(&store, &client, &named(&["a"]), false).await;
        aws.delete("a");
        assert!(fetcher.observe(&store, "a", None).is_some(), "a watched key");
        let got = fetcher.fetch(&store, &client, &named(&["a"]), false).await;
        assert!(matches!(got[&SourceRef::current("a")], Err(Error::SecretNotFound { .. })), "{got:?}");
    }

    #[tokio::test]
    async fn a_moved_stage_is_fetched_again_and_a_changed_store_forgets() {
        let aws = Arc::new(FakeAws::default());
        aws.put("a", "one");
        let fetcher = Fetcher::new();
        let (store, client) = (store(), client(&aws));
        fetcher.track(&store, "a");
        let sources = named(&["a"]);
        fetcher.fetch(&store, &client, &sources, false).await;
        let v2 = aws.put("a", "two");
        let mut stages = crate::aws::metadata::StageMap::default();
        stages.insert(AWSCURRENT.to_string(), v2);
        assert!(fetcher.observe(&store, "a", Some(stages)).is_some(), "a watched key");
        let got = fetcher.fetch(&store, &client, &sources, false).await;
        assert_eq!(value(&got[&SourceRef::current("a")]), "two");
        assert_eq!(aws.calls(), [("GetSecretValue", 2)].into(), "a lone fetch goes as GetSecretValue");

        fetcher.forget(&store);
        assert_eq!(fetcher.live(&store, &SourceRef::current("a"), &sources), None);
        fetcher.fetch(&store, &client, &sources, false).await;
        assert_eq!(aws.calls()["GetSecretValue"], 3, "nothing held survives a store change");
    }

    #[tokio::test]
    async fn a_listing_says_what_is_live_for_found_secrets_and_failures_stay_per_source() {
        let aws = Arc::new(FakeAws::default());
        let v1 = aws.put("found", "x");
        let fetcher = Fetcher::new();
        let (store, client) = (store(), client(&aws));
        let mut sources = named(&["missing"]);
        sources.found.insert(0, vec!["found".into()]);
        sources.listed.insert("found".into(), v1.clone());
        assert_eq!(fetcher.live(&store, &SourceRef::current("found"), &sources), Some(v1));
        let got = fetcher.fetch(&store, &client, &sources, false).await;
        assert_eq!(value(&got[&SourceRef::current("found")]), "x");
        assert!(matches!(got[&SourceRef::current("missing")], Err(Error::SecretNotFound { .. })));
    }
}
