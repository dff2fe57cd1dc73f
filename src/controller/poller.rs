//! Change detection per store: one poller keeps the change metadata of every AWS secret that some
//! ExternalSecret references, refreshes it with the fewest calls (DescribeSecret for few secrets,
//! ListSecrets pages of 100 for many, chosen by the page count last measured), and triggers only the
//! ExternalSecrets whose sources moved to a new version id, at most once per their refreshInterval.
//!
//! What was seen is kept by the [`Fetcher`], which also serves it as "the version that is live".
//!
//! A store with an event queue (`provider.aws.events`) also long-polls it ([`events`]): an event
//! naming a watched secret costs one DescribeSecret of that secret, and while the queue answers
//! the poll interval stretches to the store's fallback interval.

mod events;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Notify, broadcast, mpsc};
use tracing::{debug, warn};

use super::StoreId;
use super::fetcher::{Fetcher, Stages};
use crate::api::ExternalSecret;
use crate::aws::StoreClient;
use crate::aws::metadata::{SecretMeta, common_prefix, name_prefix};
use crate::error::{Error, Result};
use crate::lock;
use crate::source::SourceRef;
use crate::status::EventsStatus;

/// The shortest poll interval: the shortest refreshInterval there is.
const MIN_POLL: Duration = crate::api::MIN_REFRESH;

/// An ExternalSecret to reconcile.
pub type EsRef = ObjectRef<ExternalSecret>;
/// The receiving end of the trigger channel.
pub type Triggers = mpsc::UnboundedReceiver<EsRef>;

/// A few names (stages, keys), sorted, each once: what one ExternalSecret reads of a secret or of
/// a store is one or two names, so a vector (about 100 bytes) rather than a B-tree set (a 280
/// byte node each, two per ExternalSecret: 6 MiB at 10,000).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Names(Vec<String>);

impl Names {
    fn insert(&mut self, name: &str) {
        if let Err(at) = self.0.binary_search_by(|n| n.as_str().cmp(name)) {
            self.0.insert(at, name.to_string());
        }
    }

    fn remove(&mut self, name: &str) {
        self.0.retain(|n| n != name);
    }

    fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Names {
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Self {
        let mut set = Names::default();
        for n in names {
            set.insert(n.as_ref());
        }
        set
    }
}

struct RefState {
    stages: Names,
    refresh: Duration,
    expires: Instant,
    last_trigger: Option<Instant>,
}

/// The ExternalSecrets reading one AWS secret, and what each reads of it.
#[derive(Default)]
struct Watched {
    refs: Refs,
}

/// Readers past which a secret's readers go into a hash map.
const FEW_READERS: usize = 8;

/// What each ExternalSecret reading one AWS secret reads of it: a vector of exactly its length
/// while few read it (one or two, as a rule: about 170 bytes each, where a hash map starts at
/// about 700, so 5 MiB at 10,000), a hash map once many do (a secret that every namespace
/// reads), so that a register stays O(1) rather than a scan of thousands.
enum Refs {
    Few(Vec<(EsRef, RefState)>),
    Many(HashMap<EsRef, RefState>),
}

impl Default for Refs {
    fn default() -> Self {
        Refs::Few(Vec::new())
    }
}

impl Refs {
    #[cfg(test)]
    fn get_mut(&mut self, es: &EsRef) -> Option<&mut RefState> {
        match self {
            Refs::Few(v) => v.iter_mut().find(|(e, _)| e == es).map(|(_, r)| r),
            Refs::Many(m) => m.get_mut(es),
        }
    }

    #[cfg(test)]
    fn get(&self, es: &EsRef) -> Option<&RefState> {
        match self {
            Refs::Few(v) => v.iter().find(|(e, _)| e == es).map(|(_, r)| r),
            Refs::Many(m) => m.get(es),
        }
    }

    /// The entry of `es`, made by `new` if it has none.
    fn get_or_insert_with(&mut self, es: &EsRef, new: impl FnOnce() -> RefState) -> &mut RefState {
        if let Refs::Few(v) = self
            && v.len() >= FEW_READERS
            && !v.iter().any(|(e, _)| e == es)
        {
            *self = Refs::Many(std::mem::take(v).into_iter().collect());
        }
        match self {
            Refs::Few(v) => {
                let at = match v.iter().position(|(e, _)| e == es) {
                    Some(at) => at,
                    None => {
                        v.reserve_exact(1);
                        v.push((es.clone(), new()));
                        v.len() - 1
                    }
                };
                &mut v[at].1
            }
            Refs::Many(m) => m.entry(es.clone()).or_insert_with(new),
        }
    }

    fn remove(&mut self, es: &EsRef) {
        match self {
            Refs::Few(v) => {
                v.retain(|(e, _)| e != es);
                v.shrink_to_fit();
            }
            Refs::Many(m) => {
                m.remove(es);
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Refs::Few(v) => v.is_empty(),
            Refs::Many(m) => m.is_empty(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&EsRef, &RefState)> {
        let (few, many) = match self {
            Refs::Few(v) => (Some(v.iter().map(|(e, r)| (e, r))), None),
            Refs::Many(m) => (None, Some(m.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&EsRef, &mut RefState)> {
        let (few, many) = match self {
            Refs::Few(v) => (Some(v.iter_mut().map(|(e, r)| (&*e, r))), None),
            Refs::Many(m) => (None, Some(m.iter_mut())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    fn keys(&self) -> impl Iterator<Item = &EsRef> {
        self.iter().map(|(e, _)| e)
    }

    fn values(&self) -> impl Iterator<Item = &RefState> {
        self.iter().map(|(_, r)| r)
    }
}

struct StoreState {
    client: StoreClient,
    watched: HashMap<String, Watched>,
    /// The keys each ExternalSecret reads (the reverse of `watched`), so a register touches only
    /// its own keys, never every key of the store.
    reads: HashMap<EsRef, Names>,
    /// ListSecrets pages a full poll took last time.
    list_pages: Option<u32>,
    running: bool,
    /// Why the last poll could not reach AWS, while it cannot.
    unavailable: Option<String>,
    /// Wakes the poll loop when its interval changes (the event queue's health flipped).
    wake: Arc<Notify>,
    events: EventsState,
}

/// The event loop of a store.
#[derive(Default)]
struct EventsState {
    running: bool,
    /// The queue read, and whether its last ReceiveMessage answered (else why not); `None` before
    /// the first answer.
    health: Option<(String, std::result::Result<(), String>)>,
}

/// The pollers of every store, and the channel that triggers ExternalSecrets.
pub struct Pollers {
    stores: Mutex<HashMap<StoreId, Arc<Mutex<StoreState>>>>,
    trigger: mpsc::UnboundedSender<EsRef>,
    /// When a change was detected for ExternalSecrets whose sync is still to come.
    detected: Mutex<HashMap<EsRef, Instant>>,
    fetcher: Arc<Fetcher>,
    /// Stores whose status has news (their event queue's health flipped).
    store_news: broadcast::Sender<StoreId>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Pollers {
    /// Pollers that keep what they see in `fetcher` and send triggered ExternalSecrets into
    /// `trigger`.
    pub fn new(
        trigger: mpsc::UnboundedSender<EsRef>,
        fetcher: Arc<Fetcher>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        let (store_news, _) = broadcast::channel(64);
        Arc::new(Self { stores: Mutex::default(), trigger, detected: Mutex::default(), fetcher, store_news, metrics })
    }

    /// The stores whose status should be written again, as they come.
    pub fn store_news(&self) -> broadcast::Receiver<StoreId> {
        self.store_news.subscribe()
    }

    /// How the store's event queue is doing, if it reads one and it has answered or failed.
    pub fn events_status(&self, store: &StoreId) -> Option<EventsStatus> {
        let state = lock(&self.stores).get(store)?.clone();
        let st = lock(&state);
        st.client.events()?;
        match st.events.health.clone()? {
            (queue, Ok(())) => Some(EventsStatus::Receiving { queue }),
            (queue, Err(why)) => Some(EventsStatus::Unavailable { queue, why }),
        }
    }

    /// Register (or refresh) what an ExternalSecret reads; starts the store's poll loop if needed.
    pub fn register(
        self: &Arc<Self>,
        store: &StoreId,
        client: &StoreClient,
        es: EsRef,
        refresh: Duration,
        sources: &[SourceRef],
    ) {
        let state = {
            let mut stores = lock(&self.stores);
            stores
                .entry(store.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(StoreState {
                        client: client.clone(),
                        watched: HashMap::new(),
                        reads: HashMap::new(),
                        list_pages: None,
                        running: false,
                        unavailable: None,
                        wake: Arc::new(Notify::new()),
                        events: EventsState::default(),
                    }))
                })
                .clone()
        };
        let start = {
            let mut st = lock(&state);
            st.client = client.clone();
            let expires = Instant::now() + refresh * 2 + Duration::from_secs(30);
            let mut reads: HashMap<&str, Names> = HashMap::new();
            for s in sources {
                if let Some(stage) = s.stage() {
                    reads.entry(s.key.as_str()).or_default().insert(stage);
                }
            }
            // Update in place: `last_trigger` must outlive the reconcile it triggered.
            let before = st.reads.remove(&es).unwrap_or_default();
            for key in before.iter().filter(|k| !reads.contains_key(k.as_str())) {
                self.unwatch(store, &mut st, &es, key);
            }
            let mut now_read = Names::default();
            for (key, stages) in reads {
                if !st.watched.contains_key(key) {
                    self.fetcher.track(store, key);
                }
                let w = st.watched.entry(key.to_string()).or_default();
                let r = w.refs.get_or_insert_with(&es, || RefState {
                    stages: Names::default(),
                    refresh,
                    expires,
                    last_trigger: None,
                });
                r.stages = stages;
                r.refresh = refresh;
                r.expires = expires;
                now_read.insert(key);
            }
            if !now_read.is_empty() {
                st.reads.insert(es.clone(), now_read);
            }
            let start = !st.running && !st.watched.is_empty();
            st.running |= start;
            let start_events = !st.events.running && !st.watched.is_empty() && client.events().is_some();
            st.events.running |= start_events;
            (start, start_events)
        };
        if start.0 {
            let this = self.clone();
            let (id, state) = (store.clone(), state.clone());
            tokio::spawn(async move { this.poll_loop(id, state).await });
        }
        if start.1 {
            let this = self.clone();
            let id = store.clone();
            tokio::spawn(async move { this.events_loop(id, state).await });
        }
    }

    /// `es` no longer reads `key`; the key stops being watched when nobody reads it.
    fn unwatch(&self, store: &StoreId, st: &mut StoreState, es: &EsRef, key: &str) {
        let Some(w) = st.watched.get_mut(key) else { return };
        w.refs.remove(es);
        if w.refs.is_empty() {
            st.watched.remove(key);
            self.fetcher.untrack(store, key);
        }
    }

    /// Forget the ExternalSecrets that did not register again in time (deleted, or moved to
    /// another store): one pass over what is read, once per poll.
    fn drop_expired(&self, store: &StoreId, st: &mut StoreState, now: Instant) {
        let expired: Vec<(EsRef, String)> = st
            .watched
            .iter()
            .flat_map(|(key, w)| {
                w.refs.iter().filter(|(_, r)| r.expires <= now).map(|(es, _)| (es.clone(), key.clone()))
            })
            .collect();
        for (es, key) in expired {
            self.unwatch(store, st, &es, &key);
            if let Some(keys) = st.reads.get_mut(&es) {
                keys.remove(&key);
                if keys.is_empty() {
                    st.reads.remove(&es);
                }
            }
        }
    }

    /// Why the store's change detection cannot reach AWS, while it cannot: its ExternalSecrets then
    /// report ProviderUnavailable and leave their Secrets as they are.
    pub fn unavailable(&self, store: &StoreId) -> Option<String> {
        let state = lock(&self.stores).get(store)?.clone();
        let st = lock(&state);
        st.unavailable.clone()
    }

    /// When a change that triggered `es` was detected (the earliest not yet synced), forgetting it.
    pub fn take_detected(&self, es: &EsRef) -> Option<Instant> {
        lock(&self.detected).remove(es)
    }

    async fn poll_loop(self: Arc<Self>, id: StoreId, state: Arc<Mutex<StoreState>>) {
        let mut last = Instant::now();
        loop {
            let (interval, wake) = {
                let mut st = lock(&state);
                self.drop_expired(&id, &mut st, Instant::now());
                let min = st.watched.values().flat_map(|w| w.refs.values()).map(|r| r.refresh).min();
                let Some(min) = min else {
                    st.running = false;
                    return;
                };
                (poll_interval(min, &st), st.wake.clone())
            };
            let due = last + interval;
            if Instant::now() < due {
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    () = wake.notified() => continue,
                }
            }
            last = Instant::now();
            let result = self.poll_once(&id, &state).await;
            if let Err(e) = &result {
                warn!(store = %id, error = %e, "polling change metadata failed");
            }
            // AWS going away and coming back reaches every ExternalSecret of the store at once: their
            // conditions say so, and they sync again without waiting out their backoff.
            let flipped = {
                let mut st = lock(&state);
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

    /// One poll of the stages of each key (`None`: gone), with the fewest calls: DescribeSecret each
    /// when that is no more calls than listing them, else ListSecrets pages under their common
    /// prefix. A move a page shows is applied as the page arrives, so how soon a rotation is seen
    /// does not grow with the listing's length (at 8,000 secrets the 80 pages took seconds); a key
    /// the whole listing did not show is applied as gone at its end.
    async fn poll_once(&self, id: &StoreId, state: &Arc<Mutex<StoreState>>) -> Result<()> {
        let (client, keys, list_pages) = {
            let st = lock(state);
            (st.client.clone(), st.watched.keys().cloned().collect::<Vec<_>>(), st.list_pages)
        };
        let n = keys.len() as u32;
        let seen_now = |found: Vec<(String, Stages)>| {
            let now = Instant::now();
            self.apply(id, state, found.into_iter().map(|(key, seen)| (key, seen, now)), Trigger::AtMostEveryRefresh);
        };
        if n <= list_pages.unwrap_or(n.div_ceil(100).max(1)) {
            let mut fresh = Vec::with_capacity(keys.len());
            for key in keys {
                let seen = client.describe(&key).await?.map(|m| m.stages);
                fresh.push((key, seen));
            }
            seen_now(fresh);
            return Ok(());
        }
        let prefix = common_prefix(keys.iter().map(String::as_str));
        let mut wanted = Wanted::new(keys);
        let mut listed = 0u32;
        client
            .list_each(&name_prefix(&prefix), |page| {
                listed += page.len() as u32;
                seen_now(wanted.found_in(page));
            })
            .await?;
        lock(state).list_pages = Some(listed.div_ceil(100).max(1));
        seen_now(wanted.finish());
        Ok(())
    }

    /// Record what AWS holds now (`(key, stages, when the change happened)`), and trigger the
    /// ExternalSecrets whose stages moved.
    fn apply(
        &self,
        id: &StoreId,
        state: &Mutex<StoreState>,
        fresh: impl IntoIterator<Item = (String, Stages, Instant)>,
        rule: Trigger,
    ) {
        let now = Instant::now();
        let mut triggers = Vec::new();
        let mut detected = Vec::new();
        {
            let mut st = lock(state);
            for (key, seen, changed_at) in fresh {
                let Some(w) = st.watched.get_mut(&key) else { continue };
                let Some(before) = self.fetcher.observe(id, &key, seen.clone()) else { continue };
                for (es, r) in w.refs.iter_mut() {
                    if !moved(&before, &seen, &r.stages) {
                        continue;
                    }
                    // Timed even when the trigger waits: the next refresh then applies the change.
                    detected.push((es.clone(), changed_at));
                    let due = match rule {
                        Trigger::AtMostEveryRefresh => {
                            r.last_trigger.is_none_or(|t| now.duration_since(t) >= r.refresh)
                        }
                        Trigger::Now => true,
                    };
                    if due {
                        r.last_trigger = Some(now);
                        triggers.push(es.clone());
                    }
                }
            }
        }
        if !detected.is_empty() {
            let mut at = lock(&self.detected);
            for (es, changed_at) in detected {
                at.entry(es).or_insert(changed_at);
            }
        }
        for es in triggers {
            debug!(store = %id, externalsecret = %es, "source changed");
            let _ = self.trigger.send(es);
        }
    }
}

/// The keys a poll looks for in a listing, found page by page as a scan of the whole listing
/// would find them: a name or a full ARN when its page arrives (O(1) per listed secret); a key
/// starting `arn:` that no secret had exactly (a partial ARN, no random suffix) at the end, as the
/// first listed secret whose ARN it begins. A poll of K keys over L listed secrets is O(K + L),
/// plus a scan of the listing per partial ARN.
struct Wanted {
    unseen: HashSet<String>,
    /// The listing so far, kept only when a key may be a partial ARN.
    listed: Option<Vec<SecretMeta>>,
}

impl Wanted {
    fn new(keys: Vec<String>) -> Self {
        let listed = keys.iter().any(|k| k.starts_with("arn:")).then(Vec::new);
        Self { unseen: keys.into_iter().collect(), listed }
    }

    /// The keys `page` names exactly (by name or ARN), each once over the whole listing.
    fn found_in(&mut self, page: Vec<SecretMeta>) -> Vec<(String, Stages)> {
        let mut found = Vec::new();
        for m in &page {
            for exact in [m.name.as_str(), m.arn.as_str()] {
                if !exact.is_empty()
                    && let Some(key) = self.unseen.take(exact)
                {
                    found.push((key, Some(m.stages.clone())));
                }
            }
        }
        if let Some(listed) = &mut self.listed {
            listed.extend(page);
        }
        found
    }

    /// At the listing's end: each key no secret named exactly, with the stages of the secret its
    /// partial ARN matched (`None`: the secret is gone).
    fn finish(self) -> Vec<(String, Stages)> {
        let listed = self.listed.unwrap_or_default();
        let partial = |key: &str| key.starts_with("arn:").then(|| listed.iter().find(|m| m.is_named(key))).flatten();
        self.unseen
            .into_iter()
            .map(|key| {
                let stages = partial(&key).map(|m| m.stages.clone());
                (key, stages)
            })
            .collect()
    }
}

/// When a detected move triggers its ExternalSecrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// A poll: at most once per refreshInterval (a later move waits for the next refresh).
    AtMostEveryRefresh,
    /// An event: at once (the store asked for events to be followed).
    Now,
}

/// How long the poll loop waits: the shortest refreshInterval of what it watches, stretched to the
/// store's fallback interval while its event queue answers.
fn poll_interval(min_refresh: Duration, st: &StoreState) -> Duration {
    let min = min_refresh.max(MIN_POLL);
    match (st.client.events(), &st.events.health) {
        (Some(events), Some((_, Ok(())))) => min.max(events.fallback),
        _ => min,
    }
}

/// Whether a secret moved for an ExternalSecret that reads `stages` of it: a stage it reads now
/// holds another version, or the secret is gone. The first sight of a secret is no move.
fn moved(before: &Stages, now: &Stages, stages: &Names) -> bool {
    match (before, now) {
        (Some(b), Some(n)) => stages.iter().any(|s| b.get(s) != n.get(s)),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::StoreKind;
    use crate::aws::Calls;
    use crate::aws::fake::FakeAws;
    use crate::metrics::Metrics;
    use proptest::prelude::*;

    fn client() -> StoreClient {
        StoreClient::new(Arc::new(FakeAws::default()), Calls::new(Arc::new(Metrics::default()), "s".into(), 1.0, 1))
    }

    fn stage(key: &str, stage: &str) -> SourceRef {
        SourceRef { key: key.into(), version: crate::source::Version::Stage(stage.into()) }
    }

    #[test]
    fn what_counts_as_a_move() {
        let at = |pairs: &[(&str, &str)]| -> Stages {
            Some(pairs.iter().map(|(s, v)| (s.to_string(), v.to_string())).collect::<crate::aws::metadata::StageMap>())
        };
        let current = Names::from_iter(["AWSCURRENT"]);
        let previous = Names::from_iter(["AWSPREVIOUS"]);
        assert!(!moved(&None, &at(&[("AWSCURRENT", "v1")]), &current), "first sight");
        assert!(!moved(&at(&[("AWSCURRENT", "v1")]), &at(&[("AWSCURRENT", "v1"), ("AWSPREVIOUS", "v0")]), &current));
        assert!(moved(&at(&[("AWSCURRENT", "v1")]), &at(&[("AWSCURRENT", "v1"), ("AWSPREVIOUS", "v0")]), &previous));
        assert!(moved(&at(&[("AWSCURRENT", "v1")]), &at(&[("AWSCURRENT", "v2")]), &current));
        assert!(moved(&at(&[("AWSCURRENT", "v1")]), &None, &current), "deleted");
    }

    #[tokio::test]
    async fn reregistering_keeps_the_trigger_time_and_replaces_what_is_read() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let fetcher = Fetcher::new();
        let pollers = Pollers::new(tx, fetcher.clone(), Arc::new(Metrics::default()));
        let store = StoreId { kind: StoreKind::SecretStore, namespace: Some("ns".into()), name: "s".into() };
        let es = ObjectRef::new("es").within("ns");
        let refresh = Duration::from_secs(3600);
        let state = || lock(&pollers.stores).get(&store).cloned().expect("store state");

        pollers.register(&store, &client(), es.clone(), refresh, &[stage("a", "AWSCURRENT"), stage("b", "AWSCURRENT")]);
        let triggered = Instant::now();
        if let Some(r) = lock(&state()).watched.get_mut("a").and_then(|w| w.refs.get_mut(&es)) {
            r.last_trigger = Some(triggered);
        }
        assert!(fetcher.observe(&store, "b", None).is_some(), "the fetcher keeps what is watched");

        pollers.register(&store, &client(), es.clone(), refresh, &[stage("a", "AWSPENDING")]);
        let st = state();
        let st = lock(&st);
        let Some(r) = st.watched["a"].refs.get(&es) else { panic!("a is read by the ExternalSecret") };
        assert_eq!(r.last_trigger, Some(triggered), "the trigger time outlives the reconcile it caused");
        assert_eq!(r.stages, Names::from_iter(["AWSPENDING"]), "stages are replaced, not accumulated");
        assert!(!st.watched.contains_key("b"), "a secret no longer read is no longer watched");
        assert!(fetcher.observe(&store, "b", None).is_none(), "nor kept by the fetcher");
    }

    #[test]
    fn names_are_a_sorted_set() {
        let mut n = Names::from_iter(["b", "a", "b"]);
        assert_eq!(n.iter().map(String::as_str).collect::<Vec<_>>(), ["a", "b"]);
        n.insert("a");
        n.insert("c");
        n.remove("b");
        n.remove("zz");
        assert_eq!(n, Names::from_iter(["c", "a"]));
        n.remove("a");
        n.remove("c");
        assert!(n.is_empty());
    }

    /// `reads` is exactly the reverse of `watched`, and no key is watched that nobody reads.
    fn assert_indexed(st: &StoreState) {
        let mut reverse: HashMap<EsRef, Names> = HashMap::new();
        for (key, w) in &st.watched {
            assert!(!w.refs.is_empty(), "{key} watched but read by nobody");
            for es in w.refs.keys() {
                reverse.entry(es.clone()).or_default().insert(key);
            }
        }
        assert_eq!(reverse, st.reads);
    }

    #[tokio::test]
    async fn the_reverse_index_follows_every_register_and_expiry() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let fetcher = Fetcher::new();
        let pollers = Pollers::new(tx, fetcher.clone(), Arc::new(Metrics::default()));
        let store = StoreId { kind: StoreKind::SecretStore, namespace: Some("ns".into()), name: "s".into() };
        let (one, two) = (ObjectRef::new("one").within("ns"), ObjectRef::new("two").within("ns"));
        let refresh = Duration::from_secs(3600);
        let state = || lock(&pollers.stores).get(&store).cloned().expect("store state");
        let steps: &[(&EsRef, &[&str])] =
            &[(&one, &["a", "b"]), (&two, &["b", "c"]), (&one, &["c"]), (&two, &[]), (&two, &["a"]), (&one, &[])];
        for (es, keys) in steps {
            let reads: Vec<SourceRef> = keys.iter().map(|k| stage(k, "AWSCURRENT")).collect();
            pollers.register(&store, &client(), (*es).clone(), refresh, &reads);
            assert_indexed(&lock(&state()));
        }
        assert_eq!(lock(&state()).watched.keys().collect::<Vec<_>>(), ["a"]);

        pollers.register(&store, &client(), one.clone(), refresh, &[stage("b", "AWSCURRENT")]);
        let st = state();
        let mut st = lock(&st);
        let past = Instant::now();
        for w in st.watched.values_mut() {
            if let Some(r) = w.refs.get_mut(&two) {
                r.expires = past;
            }
        }
        pollers.drop_expired(&store, &mut st, past);
        assert_indexed(&st);
        assert_eq!(st.watched.keys().collect::<Vec<_>>(), ["b"], "two expired, one still reads b");
    }

    #[test]
    fn keys_found_page_by_page_are_what_a_scan_of_the_listing_finds() {
        // Each secret's stages name it, so what a key was matched to can be told from them.
        let meta = |name: &str, arn: &str| SecretMeta {
            name: name.into(),
            arn: arn.into(),
            stages: [("AWSCURRENT".to_string(), name.to_string())].into_iter().collect(),
            ..Default::default()
        };
        let arn = |name: &str| format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf");
        let partial = |name: &str| format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}");
        let listed = [
            meta("app/db-x", &arn("app/db-x")),
            meta("app/db", &arn("app/db")),
            meta("app/api", &arn("app/api")),
            meta("bare", ""),
            meta("late", &arn("late")),
        ];
        let keys = [
            "app/db".to_string(),
            arn("app/api"),
            partial("app/db"),
            partial("late"),
            partial("nope"),
            arn("app/db-x"),
            "bare".to_string(),
            "missing".to_string(),
            String::new(),
        ];
        // A scan of the whole listing: an exact name or ARN first, else the first partial match.
        let scan = |key: &str| {
            let exact = listed.iter().find(|m| m.name == key || (!m.arn.is_empty() && m.arn == key));
            exact.or_else(|| listed.iter().find(|m| m.is_named(key))).map(|m| m.name.clone())
        };
        let name = |stages: Stages| stages.map(|s| s["AWSCURRENT"].clone());
        for keys in [keys.to_vec(), keys.iter().filter(|k| !k.starts_with("arn:")).cloned().collect()] {
            for page in 1..=listed.len() {
                let mut wanted = Wanted::new(keys.clone());
                let mut got: HashMap<String, Option<String>> = HashMap::new();
                for chunk in listed.chunks(page) {
                    let found = wanted.found_in(chunk.to_vec());
                    for (key, stages) in found {
                        assert!(
                            got.insert(key.clone(), name(stages)).is_none(),
                            "{key} found twice with pages of {page}"
                        );
                    }
                }
                for (key, stages) in wanted.finish() {
                    assert!(got.insert(key.clone(), name(stages)).is_none(), "{key} found twice with pages of {page}");
                }
                for key in &keys {
                    assert_eq!(got.get(key), Some(&scan(key)), "{key} with pages of {page}");
                }
                assert_eq!(got.len(), keys.len(), "every key answered once with pages of {page}");
            }
        }
    }

    proptest! {
        /// `Refs` answers as a hash map would through any run of registers and removals, on
        /// either side of the switch from a vector to a map.
        #[test]
        fn refs_behave_as_a_map(ops in proptest::collection::vec((any::<bool>(), 0u8..20, 1u64..5), 0..200)) {
            let mut refs = Refs::default();
            let mut model: HashMap<EsRef, u64> = HashMap::new();
            let state = |secs: u64| RefState {
                stages: Names::default(),
                refresh: Duration::from_secs(secs),
                expires: Instant::now(),
                last_trigger: None,
            };
            for (insert, n, secs) in ops {
                let es = EsRef::new(&format!("es-{n}")).within("ns");
                if insert {
                    refs.get_or_insert_with(&es, || state(secs)).refresh = Duration::from_secs(secs);
                    model.insert(es.clone(), secs);
                } else {
                    refs.remove(&es);
                    model.remove(&es);
                }
                prop_assert_eq!(refs.is_empty(), model.is_empty());
                prop_assert_eq!(refs.get(&es).map(|r| r.refresh.as_secs()), model.get(&es).copied());
                let mut seen: Vec<(String, u64)> = refs.iter().map(|(e, r)| (e.name.clone(), r.refresh.as_secs())).collect();
                let mut want: Vec<(String, u64)> = model.iter().map(|(e, s)| (e.name.clone(), *s)).collect();
                seen.sort();
                want.sort();
                prop_assert_eq!(seen, want);
            }
            for (_, r) in refs.iter_mut() {
                r.refresh = Duration::ZERO;
            }
            prop_assert!(refs.values().all(|r| r.refresh.is_zero()));
            prop_assert_eq!(refs.keys().count(), model.len());
        }
    }
}
