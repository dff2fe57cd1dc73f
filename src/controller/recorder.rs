//! Kubernetes Events (`events.k8s.io/v1`) about the objects Lockstep reconciles. The same Event
//! again within six minutes becomes a series on the first one (one PATCH), as kube's and
//! client-go's recorders do. What is remembered for that is small and bounded: the Event's name
//! and count by a hash of what makes it the same, at most [`REMEMBERED`] of them. (kube's own
//! `Recorder` keeps every Event object it published for six minutes, about 3 KiB each: 3 MiB of
//! a cold start's 1,000 first Events, 30 MiB of 10,000.)

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Client};

use crate::lock;

/// How long a published Event can still get a series.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// At most this many Events are remembered for series (client-go's correlator keeps 4,096).
const REMEMBERED: usize = 4096;

/// What an Event says, about what.
pub struct Published<'a> {
    pub type_: EventType,
    pub reason: &'a str,
    pub action: &'a str,
    pub note: &'a str,
    pub regarding: &'a ObjectReference,
}

impl Published<'_> {
    /// What makes two Events the same one: type, reason, action, note and the object.
    fn key(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let r = self.regarding;
        (matches!(self.type_, EventType::Warning), self.reason, self.action, self.note).hash(&mut h);
        (&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid).hash(&mut h);
        h.finish()
    }
}

/// A published Event, as far as a series on it needs.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    name: String,
    count: i32,
    last: Timestamp,
}

/// PURE: the Events remembered for series.
#[derive(Default)]
struct Memory {
    seen: HashMap<u64, Seen>,
}

impl Memory {
    /// The Event to extend with a series at `now`: its name and new count; None for a new one.
    fn series(&self, key: u64, now: Timestamp) -> Option<(String, i32)> {
        let seen = self.seen.get(&key).filter(|s| s.last + SERIES_WINDOW > now)?;
        Some((seen.name.clone(), seen.count + 1))
    }

    /// Remember that `name` was published (or extended to `count`) at `now`; forgets what is past
    /// its window and, when full, the oldest.
    fn remember(&mut self, key: u64, name: String, count: i32, now: Timestamp) {
        if self.seen.len() >= REMEMBERED && !self.seen.contains_key(&key) {
            self.seen.retain(|_, s| s.last + SERIES_WINDOW > now);
            if self.seen.len() >= REMEMBERED
                && let Some(oldest) = self.seen.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| *k)
            {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(key, Seen { name, count, last: now });
    }
}

/// Publishes Events as `controller` (`reportingController`), from `instance` (the pod).
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    memory: Mutex<Memory>,
}

impl Recorder {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        let instance = instance.unwrap_or_else(|| controller.to_string());
        Self { client, controller: controller.to_string(), instance, memory: Mutex::default() }
    }

    /// Publish `ev` in the namespace of the object it is about ("default" for a cluster-scoped one).
    pub async fn publish(&self, ev: &Published<'_>) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = ev.key();
        let namespace = ev.regarding.namespace.as_deref().unwrap_or("default");
        let api = Api::<Event>::namespaced(self.client.clone(), namespace);
        let series = lock(&self.memory).series(key, now);
        if let Some((name, count)) = series {
            let patch = serde_json::json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    lock(&self.memory).remember(key, name, count, now);
                    return Ok(());
                }
                // Gone from the apiserver (Events live an hour there): a new one.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.event(ev, now);
        let name = event.metadata.name.clone().unwrap_or_default();
        api.create(&PostParams::default(), &event).await?;
        lock(&self.memory).remember(key, name, 1, now);
        Ok(())
    }

    fn event(&self, ev: &Published<'_>, now: Timestamp) -> Event {
        let about = ev.regarding.name.as_deref().unwrap_or(&self.controller);
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{about}.{:x}", now.as_nanosecond())),
                namespace: ev.regarding.namespace.clone(),
                ..Default::default()
            },
            action: Some(ev.action.to_string()),
            reason: Some(ev.reason.to_string()),
            note: Some(ev.note.to_string()),
            type_: Some(match ev.type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            event_time: Some(MicroTime(now)),
            regarding: Some(ev.regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("timestamp")
    }

    #[test]
    fn the_same_event_within_six_minutes_is_a_series_and_after_them_a_new_event() {
        let mut m = Memory::default();
        assert_eq!(m.series(1, at(0)), None);
        m.remember(1, "es.1".into(), 1, at(0));
        assert_eq!(m.series(1, at(60)), Some(("es.1".into(), 2)));
        m.remember(1, "es.1".into(), 2, at(60));
        assert_eq!(m.series(1, at(400)), Some(("es.1".into(), 3)), "the window runs from the last one");
        assert_eq!(m.series(2, at(60)), None, "another event is not a series of this one");
        assert_eq!(m.series(1, at(60 + 360)), None, "six minutes after the last, a new event");
    }

    #[test]
    fn what_is_remembered_stays_bounded_forgetting_the_expired_then_the_oldest() {
        let mut m = Memory::default();
        for k in 0..REMEMBERED as u64 {
            m.remember(k, format!("e{k}"), 1, at(k as i64 % 100));
        }
        assert_eq!(m.seen.len(), REMEMBERED);
        // Nothing expired yet: the oldest (second 0) goes.
        m.remember(u64::MAX, "new".into(), 1, at(200));
        assert_eq!(m.seen.len(), REMEMBERED);
        assert!(m.series(u64::MAX, at(201)).is_some());
        let at_zero = (0..REMEMBERED as u64).filter(|k| k % 100 == 0).count();
        assert_eq!(m.seen.values().filter(|s| s.last == at(0)).count(), at_zero - 1);
        // Later, every one past its window is forgotten at once.
        m.remember(u64::MAX - 1, "later".into(), 1, at(1000));
        assert_eq!(m.seen.len(), 1, "only the new one");
    }

    #[test]
    fn the_key_tells_apart_reason_note_type_and_object() {
        let r = ObjectReference { kind: Some("ExternalSecret".into()), name: Some("a".into()), ..Default::default() };
        let other = ObjectReference { name: Some("b".into()), ..r.clone() };
        let ev = |type_, reason, note, regarding| Published { type_, reason, action: "Sync", note, regarding };
        let base = ev(EventType::Normal, "SecretSynced", "in sync", &r).key();
        assert_eq!(base, ev(EventType::Normal, "SecretSynced", "in sync", &r).key());
        for k in [
            ev(EventType::Warning, "SecretSynced", "in sync", &r).key(),
            ev(EventType::Normal, "SecretNotFound", "in sync", &r).key(),
            ev(EventType::Normal, "SecretSynced", "other", &r).key(),
            ev(EventType::Normal, "SecretSynced", "in sync", &other).key(),
        ] {
            assert_ne!(base, k);
        }
    }
}
