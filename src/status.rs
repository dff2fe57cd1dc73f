//! PURE: the Ready condition with stable transition times, and what a reconcile does next.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::controller::Action;

/// The condition type Lockstep reports.
pub const READY: &str = "Ready";

/// Reasons of the Ready condition (the README's troubleshooting table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The Secret holds the current data.
    SecretSynced,
    /// An AWS secret, stage or version does not exist (or is scheduled for deletion).
    SecretNotFound,
    /// A JSON property does not exist.
    PropertyNotFound,
    /// A value cannot be used as asked.
    InvalidValue,
    /// AWS denied access.
    AccessDenied,
    /// AWS throttled us.
    Throttled,
    /// AWS could not be reached.
    ProviderUnavailable,
    /// The store is missing or its credentials do not resolve.
    StoreNotReady,
    /// The ClusterSecretStore does not admit the namespace.
    StoreNotAllowed,
    /// The target Secret is not ours to write.
    TargetConflict,
    /// The Secret would exceed 1 MiB.
    TargetTooLarge,
    /// A template does not render, or the Secret type lacks a required key.
    InvalidTemplate,
    /// Two AWS secrets (or JSON keys) map to the same Secret key.
    KeyConflict,
    /// The Kubernetes API refused or failed the write.
    ApplyFailed,
    /// A store's credentials resolve and AWS answers (stores only).
    Valid,
    /// Every namespace a ClusterExternalSecret selects has its ExternalSecret.
    NamespacesProvisioned,
    /// A ClusterExternalSecret could not create (or remove) its ExternalSecret in some namespace.
    NamespacesFailed,
}

impl Reason {
    /// Every reason, in the README's order.
    pub const ALL: [Reason; 17] = [
        Reason::SecretSynced,
        Reason::SecretNotFound,
        Reason::PropertyNotFound,
        Reason::InvalidValue,
        Reason::AccessDenied,
        Reason::Throttled,
        Reason::ProviderUnavailable,
        Reason::StoreNotReady,
        Reason::StoreNotAllowed,
        Reason::TargetConflict,
        Reason::TargetTooLarge,
        Reason::InvalidTemplate,
        Reason::KeyConflict,
        Reason::ApplyFailed,
        Reason::Valid,
        Reason::NamespacesProvisioned,
        Reason::NamespacesFailed,
    ];

    /// The reason as written in the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SecretSynced => "SecretSynced",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::PropertyNotFound => "PropertyNotFound",
            Reason::InvalidValue => "InvalidValue",
            Reason::AccessDenied => "AccessDenied",
            Reason::Throttled => "Throttled",
            Reason::ProviderUnavailable => "ProviderUnavailable",
            Reason::StoreNotReady => "StoreNotReady",
            Reason::StoreNotAllowed => "StoreNotAllowed",
            Reason::TargetConflict => "TargetConflict",
            Reason::TargetTooLarge => "TargetTooLarge",
            Reason::InvalidTemplate => "InvalidTemplate",
            Reason::KeyConflict => "KeyConflict",
            Reason::ApplyFailed => "ApplyFailed",
            Reason::Valid => "Valid",
            Reason::NamespacesProvisioned => "NamespacesProvisioned",
            Reason::NamespacesFailed => "NamespacesFailed",
        }
    }

    /// Whether this reason means the object is Ready.
    pub fn is_ready(self) -> bool {
        matches!(self, Reason::SecretSynced | Reason::Valid | Reason::NamespacesProvisioned)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Conditions after setting Ready to `reason` / `message`. The transition time moves only when the
/// status flips, so an unchanged outcome yields identical conditions (and no status write).
pub fn set_ready(
    previous: &[Condition],
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    let status = if reason.is_ready() { "True" } else { "False" };
    let old = previous.iter().find(|c| c.type_ == READY);
    let last_transition_time = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now,
    };
    let ready = Condition {
        type_: READY.into(),
        status: status.into(),
        reason: reason.as_str().into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    };
    let mut out: Vec<Condition> = previous.iter().filter(|c| c.type_ != READY).cloned().collect();
    out.insert(0, ready);
    out
}

/// The condition a store with `provider.aws.events` carries beside Ready.
pub const EVENTS_READY: &str = "EventsReady";
/// Its reasons (not Ready reasons: a store whose queue fails still works, by polling).
pub const EVENTS_RECEIVING: &str = "EventsReceiving";
pub const EVENTS_UNAVAILABLE: &str = "EventsUnavailable";
pub const EVENTS_PENDING: &str = "EventsPending";

/// How a store's event queue is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventsStatus {
    /// Its last ReceiveMessage answered.
    Receiving { queue: String },
    /// Its last ReceiveMessage failed, for this reason.
    Unavailable { queue: String, why: String },
}

/// Conditions after setting EventsReady: gone when the store reads no queue (`configured`
/// false); Unknown until the queue first answers or fails (the loop starts with the first
/// ExternalSecret that reads the store). The transition time moves only when the status flips.
pub fn set_events(
    previous: &[Condition],
    configured: bool,
    events: Option<&EventsStatus>,
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous.iter().filter(|c| c.type_ != EVENTS_READY).cloned().collect();
    if !configured {
        return out;
    }
    let (status, reason, message) = match events {
        None => (
            "Unknown",
            EVENTS_PENDING,
            "the event queue is read once an ExternalSecret reads this store; until it answers, polling follows refreshInterval".to_string(),
        ),
        Some(EventsStatus::Receiving { queue }) => (
            "True",
            EVENTS_RECEIVING,
            format!("long-polling {queue}; change metadata is still polled every fallbackInterval as the safety net"),
        ),
        Some(EventsStatus::Unavailable { why, .. }) => {
            ("False", EVENTS_UNAVAILABLE, format!("{why}; polling follows refreshInterval until the queue answers"))
        }
    };
    let last_transition_time = match previous.iter().find(|c| c.type_ == EVENTS_READY) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now,
    };
    out.push(Condition {
        type_: EVENTS_READY.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    });
    out
}

/// The Ready reason currently recorded, if any.
pub fn ready_reason(conditions: &[Condition]) -> Option<&str> {
    conditions.iter().find(|c| c.type_ == READY).map(|c| c.reason.as_str())
}

/// How a sync ended, as far as the next reconcile is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The Secret is in sync; a rollout restart may be waiting out its quiet period.
    Synced { restart_in: Option<Duration> },
    /// A failure that waits for a change (an invalid spec, a missing secret, a conflict).
    Permanent,
    /// A failure that retries (throttled, unavailable, an apiserver error) after `backoff`.
    Transient { backoff: Duration },
}

/// A transient failure never retries sooner than this because of a short refreshInterval.
const MIN_RETRY: Duration = Duration::from_secs(5);

/// When to reconcile again. `refresh`: the refreshInterval (`None`: sync once, then only on
/// changes). A transient failure retries after its backoff, or sooner at refreshInterval (but not
/// under [`MIN_RETRY`]); a waiting restart is looked at again when its quiet period ends.
pub fn next_action(next: Next, refresh: Option<Duration>) -> Action {
    let at_refresh = || refresh.map_or_else(Action::await_change, Action::requeue);
    match next {
        Next::Synced { restart_in: Some(wait) } => Action::requeue(refresh.map_or(wait, |r| wait.min(r))),
        Next::Synced { restart_in: None } | Next::Permanent => at_refresh(),
        Next::Transient { backoff } => Action::requeue(refresh.map_or(backoff, |r| backoff.min(r.max(MIN_RETRY)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap_or_default())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let a = set_ready(&[], Reason::SecretSynced, "ok", Some(1), t(10));
        assert_eq!(a[0].last_transition_time, t(10));
        let b = set_ready(&a, Reason::SecretSynced, "ok", Some(1), t(20));
        assert_eq!(a, b, "unchanged outcome must give identical conditions");
        let c = set_ready(&b, Reason::Throttled, "slow down", Some(1), t(30));
        assert_eq!(c[0].status, "False");
        assert_eq!(c[0].last_transition_time, t(30));
        let d = set_ready(&c, Reason::SecretNotFound, "gone", Some(2), t(40));
        assert_eq!(d[0].last_transition_time, t(30), "False -> False keeps the time");
        assert_eq!(d[0].reason, "SecretNotFound");
        assert_eq!(d[0].observed_generation, Some(2));
    }

    #[test]
    fn next_action_for_every_outcome() {
        let s = Duration::from_secs;
        let (hour, second) = (Some(s(3600)), Some(s(1)));
        let rows: &[(Next, Option<Duration>, Action)] = &[
            (Next::Synced { restart_in: None }, hour, Action::requeue(s(3600))),
            (Next::Synced { restart_in: None }, None, Action::await_change()),
            (Next::Synced { restart_in: Some(s(3)) }, hour, Action::requeue(s(3))),
            (Next::Synced { restart_in: Some(s(3)) }, second, Action::requeue(s(1))),
            (Next::Synced { restart_in: Some(s(3)) }, None, Action::requeue(s(3))),
            (Next::Permanent, hour, Action::requeue(s(3600))),
            (Next::Permanent, None, Action::await_change()),
            (Next::Transient { backoff: s(8) }, hour, Action::requeue(s(8))),
            (Next::Transient { backoff: s(8) }, None, Action::requeue(s(8))),
            (Next::Transient { backoff: s(300) }, Some(s(60)), Action::requeue(s(60))),
            (Next::Transient { backoff: s(8) }, second, Action::requeue(s(5))),
        ];
        for (next, refresh, want) in rows {
            assert_eq!(&next_action(*next, *refresh), want, "{next:?} at refresh {refresh:?}");
        }
    }

    #[test]
    fn every_failure_reason_has_its_next_action() {
        use crate::error::Error;
        let hour = Some(Duration::from_secs(3600));
        let errors = [
            Error::SecretNotFound { key: "k".into(), detail: None },
            Error::SecretScheduledForDeletion { key: "k".into() },
            Error::PropertyNotFound { key: "k".into(), property: "p".into() },
            Error::InvalidValue(String::new()),
            Error::InvalidTemplate(String::new()),
            Error::KeyConflict(String::new()),
            Error::AccessDenied(None),
            Error::Throttled,
            Error::ProviderUnavailable(String::new()),
            Error::StoreNotReady(String::new()),
            Error::StoreNotAllowed(String::new()),
            Error::TargetConflict(String::new()),
            Error::TargetTooLarge { size: 0 },
            Error::Kube(kube::Error::Api(Box::new(kube::core::Status::failure("x", "y").with_code(500)))),
        ];
        let transient = [Reason::Throttled, Reason::ProviderUnavailable, Reason::ApplyFailed];
        for e in errors {
            let next =
                if e.is_transient() { Next::Transient { backoff: Duration::from_secs(2) } } else { Next::Permanent };
            let want = if transient.contains(&e.reason()) {
                Action::requeue(Duration::from_secs(2))
            } else {
                Action::requeue(Duration::from_secs(3600))
            };
            assert_eq!(next_action(next, hour), want, "{}", e.reason());
        }
    }

    #[test]
    fn other_conditions_are_kept() {
        let other = Condition {
            type_: "Other".into(),
            status: "True".into(),
            reason: "X".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: t(1),
        };
        let out = set_ready(std::slice::from_ref(&other), Reason::SecretSynced, "ok", None, t(2));
        assert_eq!(out.len(), 2);
        assert!(out.contains(&other));
        assert_eq!(ready_reason(&out), Some("SecretSynced"));
    }

    #[test]
    fn the_events_condition_follows_the_queue_and_leaves_ready_alone() {
        let ready = set_ready(&[], Reason::Valid, "ok", Some(1), t(10));
        let get = |c: &[Condition]| c.iter().find(|c| c.type_ == EVENTS_READY).cloned();
        let pending = set_events(&ready, true, None, Some(1), t(10));
        assert_eq!(get(&pending).map(|c| (c.status, c.reason)), Some(("Unknown".into(), EVENTS_PENDING.into())));
        let receiving = EventsStatus::Receiving { queue: "q".into() };
        let up = set_events(&pending, true, Some(&receiving), Some(1), t(20));
        assert_eq!(get(&up).map(|c| (c.status, c.last_transition_time)), Some(("True".into(), t(20))));
        assert_eq!(set_events(&up, true, Some(&receiving), Some(1), t(30)), up, "unchanged: identical");
        let down = EventsStatus::Unavailable { queue: "q".into(), why: "QueueDoesNotExist".into() };
        let failed = set_events(&up, true, Some(&down), Some(1), t(40));
        let c = get(&failed).expect("a condition");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", EVENTS_UNAVAILABLE));
        assert!(c.message.contains("QueueDoesNotExist") && c.message.contains("refreshInterval"), "{}", c.message);
        assert_eq!(ready_reason(&failed), Some("Valid"), "the store still works by polling");
        assert_eq!(set_events(&failed, false, Some(&down), Some(2), t(50)), ready, "no queue: no condition");
    }
}
