//! Watches: retried on their own backoff, their objects cached without `managedFields`.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde::de::DeserializeOwned;
use tracing::warn;

/// What a watched, cached object is.
pub trait Watched:
    kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static
{
}
impl<K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static> Watched
    for K
{
}

/// A watch on `api` that keeps its objects in `writer`'s cache, without `managedFields` (a large
/// JSON tree per object that nothing here reads). Each event reaches the cache before the stream
/// yields it.
pub fn cached_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
) -> impl Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Watched,
{
    retried(api, config).modify(|obj: &mut K| obj.meta_mut().managed_fields = None).reflect(writer)
}

/// The resource version of each object a [`versions_watch`] has seen, by namespace and name: all
/// that says whether an object changed since it was read. One small entry per object (about 200
/// bytes, where a reflector's cached metadata costs about 800: 6 MiB over 10,000 Secrets).
#[derive(Clone, Default)]
pub struct Versions {
    inner: Arc<std::sync::RwLock<VersionsInner>>,
}

/// Resource versions by namespace and name.
type VersionMap = std::collections::HashMap<(Box<str>, Box<str>), Box<str>>;

#[derive(Default)]
struct VersionsInner {
    current: VersionMap,
    /// A relist under way: the objects it has listed so far, which replace `current` once it is
    /// done (as a reflector's store does: a relist reports no deletions).
    relist: Option<VersionMap>,
}

/// An object's key in a [`VersionMap`], and its resource version.
type VersionEntry = ((Box<str>, Box<str>), Box<str>);

fn version_entry<K: kube::Resource>(obj: &K) -> Option<VersionEntry> {
    let meta = obj.meta();
    let (name, version) = (meta.name.as_deref()?, meta.resource_version.as_deref()?);
    Some(((meta.namespace.as_deref().unwrap_or_default().into(), name.into()), version.into()))
}

impl Versions {
    /// The resource version the watch last showed for `namespace`/`name`; `None` while the watch
    /// has not listed yet, or does not hold the object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        let inner = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key: (Box<str>, Box<str>) = (namespace.into(), name.into());
        inner.current.get(&key).map(|v| v.to_string())
    }

    /// Take in one watch event.
    pub fn apply<K: kube::Resource>(&self, event: &watcher::Event<K>) {
        let mut inner = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            watcher::Event::Apply(obj) => {
                if let Some((key, version)) = version_entry(obj) {
                    inner.current.insert(key, version);
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some((key, _)) = version_entry(obj) {
                    inner.current.remove(&key);
                }
            }
            watcher::Event::Init => inner.relist = Some(Default::default()),
            watcher::Event::InitApply(obj) => {
                if let (Some(relist), Some((key, version))) = (inner.relist.as_mut(), version_entry(obj)) {
                    relist.insert(key, version);
                }
            }
            watcher::Event::InitDone => {
                if let Some(mut listed) = inner.relist.take() {
                    listed.shrink_to_fit();
                    inner.current = listed;
                }
            }
        }
    }
}

/// A watch of metadata that keeps in `versions` only what says whether an object changed: its
/// namespace, name and resource version. The objects it yields keep their name, namespace, uid
/// and resource version only. Each event reaches `versions` before the stream yields it.
pub fn versions_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    versions: Versions,
) -> impl Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Watched,
{
    retried(api, config)
        .modify(|obj: &mut K| {
            let meta = obj.meta_mut();
            let kept = kube::api::ObjectMeta {
                name: meta.name.take(),
                namespace: meta.namespace.take(),
                resource_version: meta.resource_version.take(),
                uid: meta.uid.take(),
                ..Default::default()
            };
            *meta = kept;
        })
        .inspect_ok(move |event| versions.apply(event))
}

/// A watch on `api` that retries on its own [`WatchBackoff`], relists at once the first time its
/// resource version has expired (410 Gone, as after an apiserver restart), and logs its errors
/// instead of yielding them: a yielded error would pause the controller's merged trigger stream
/// (the controller's own backoff) for every watch, so each watch retries on its own instead.
fn retried<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Watched,
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

/// The objects of `api` on every change, content included (ConfigMaps and Secrets have no
/// generation), retried like the other watches; metadata only on an `Api<PartialObjectMeta<_>>`
/// (the managed Secrets the controller owns, the ConfigMaps `templateFrom` names).
pub fn every_change<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: Watched,
{
    retried(api, config).touched_objects()
}

/// The objects of `api` when they are created or deleted, or their generation, labels or
/// annotations change (not on status writes, which would make whatever they trigger follow every
/// sync), retried like the other watches. On an `Api<PartialObjectMeta<_>>` it is a metadata-only
/// watch.
pub fn spec_changes<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: Watched,
{
    let mut seen = std::collections::HashMap::new();
    retried(api, config).filter_map(move |event| {
        let changed = match event {
            Ok(watcher::Event::Delete(obj)) => {
                seen.remove(&ObjectRef::from_obj(&obj));
                Some(Ok(obj))
            }
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                let hash = super::spec_or_metadata(&obj);
                (seen.insert(ObjectRef::from_obj(&obj), hash) != Some(hash)).then_some(Ok(obj))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        std::future::ready(changed)
    })
}

/// How a watch retries after an error: 0.5 s doubling to 10 s, each delay plus up to half again,
/// and from 0.5 s again once anything arrives. Shorter than client-go's (0.8 s doubling to 30 s,
/// each up to doubled), which kube-runtime copies, because after an apiserver restart a watch
/// fails once more than the outage needs (its resource version is too old for the new watch
/// cache, so it relists) and both waits delay new ExternalSecrets. A few watches of one leader
/// retrying every 10 to 15 s cost an apiserver little. The relist after an expired resource
/// version goes at once (0.5 s), but not twice in a row.
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
        Some(base + base.mul_f64(super::backoff::jitter_fraction("watch", self.failures) * 0.5))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
        self.relisted = false;
    }
}

/// The objects of `api` as they change, each one already in `writer`'s cache when it arrives.
pub fn changes_cached_in<K>(
    writer: reflector::store::Writer<K>,
    api: Api<K>,
) -> impl Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: Watched,
{
    cached_watch(api, watcher::Config::default(), writer).touched_objects()
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
}
