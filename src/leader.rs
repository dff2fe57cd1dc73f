//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only one writes.
//!
//! Every candidate reads the Lease each `retry` period. The holder renews it; the others take it when
//! its holder is empty (released on shutdown) or when the Lease has not changed for its duration, as
//! measured on the candidate's own clock (so clock skew between nodes does not matter). Every write
//! is a replace carrying the `resourceVersion` that was read, so of two candidates that race only
//! one succeeds; the other gets 409 Conflict and stays a follower.
//!
//! A leader that cannot renew within `renew_deadline`, or that finds another holder, has lost the
//! Lease: [`Elector::run`] returns [`Error::Lost`] and the process exits, so that no second writer
//! ever runs and Kubernetes restarts it as a follower.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::Readiness;
use crate::metrics::Metrics;

/// Why leader election stopped.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// This process held the Lease and does not any more.
    #[error("lost the leader Lease {lease}: {why}")]
    Lost {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What happened.
        why: String,
    },
    /// The API server refused or failed a call.
    #[error("Lease {lease}: {source}")]
    Kube {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The error.
        source: kube::Error,
    },
    /// The timings let a leader keep writing after others may take over.
    #[error(
        "leader election needs retry ({retry:?}) < renew deadline ({renew_deadline:?}) < lease duration \
         ({lease_duration:?}): a leader must give up before others may take over"
    )]
    Timing {
        /// `retry`.
        retry: Duration,
        /// `renew_deadline`.
        renew_deadline: Duration,
        /// `lease_duration`.
        lease_duration: Duration,
    },
}

/// Settings of one election. [`Config::new`] checks the timings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// Who this process is (`holderIdentity`).
    pub identity: String,
    /// How long a Lease that stopped changing stays held.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long gives up.
    pub renew_deadline: Duration,
    /// How often candidates try and leaders renew.
    pub retry: Duration,
}

impl Config {
    /// Settings whose timings are safe: a candidate tries more often than a leader may go without
    /// renewing, and a leader gives up before the Lease expires for the others
    /// (`retry < renew_deadline < lease_duration`).
    pub fn new(
        name: String,
        namespace: String,
        identity: String,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry: Duration,
    ) -> Result<Self, Error> {
        if !(retry < renew_deadline && renew_deadline < lease_duration) {
            return Err(Error::Timing { retry, renew_deadline, lease_duration });
        }
        Ok(Self { name, namespace, identity, lease_duration, renew_deadline, retry })
    }
}

/// What this process knows about its part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not known yet (the Lease has not been read).
    Unknown,
    /// Another process holds the Lease.
    Follower,
    /// This process holds the Lease.
    Leader,
}

/// What to do with a Lease that was read.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// It is ours: write a new renewTime.
    Renew,
    /// It is free or expired: take it.
    Take,
    /// Someone else holds it.
    Held(String),
}

/// Decide from the Lease spec and how long it has been unchanged (as this process observed it).
pub fn decide(spec: &LeaseSpec, me: &str, unchanged_for: Duration, default_duration: Duration) -> Decision {
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Take;
    }
    if holder == me {
        return Decision::Renew;
    }
    let duration =
        spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).map_or(default_duration, Duration::from_secs);
    if unchanged_for >= duration { Decision::Take } else { Decision::Held(holder.to_string()) }
}

/// The spec to write after a decision to renew or take.
pub fn next_spec(current: &LeaseSpec, me: &str, duration: Duration, now: jiff::Timestamp, take: bool) -> LeaseSpec {
    let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX).max(1);
    let transitions = current.lease_transitions.unwrap_or(0);
    let changes_hands = take && current.holder_identity.as_deref().is_some_and(|h| !h.is_empty() && h != me);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(seconds),
        renew_time: Some(MicroTime(now)),
        acquire_time: if take { Some(MicroTime(now)) } else { current.acquire_time.clone() },
        lease_transitions: Some(if changes_hands { transitions.saturating_add(1) } else { transitions }),
        ..current.clone()
    }
}

/// The Lease as last seen: its resourceVersion and when it was first seen with it.
struct Observed {
    resource_version: String,
    since: Instant,
}

/// One candidate in an election.
pub struct Elector {
    api: Api<Lease>,
    config: Config,
    role: watch::Sender<Role>,
}

impl Elector {
    /// A candidate; nothing is written until [`Elector::run`].
    pub fn new(client: Client, config: Config) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self { api, config, role: watch::Sender::new(Role::Unknown) }
    }

    /// This process's role as it changes.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn kube(&self, source: kube::Error) -> Error {
        Error::Kube { lease: self.lease(), source }
    }

    /// Take part until `stop` resolves (Ok, the Lease still held if it was) or leadership is lost.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        tokio::pin!(stop);
        let mut observed: Option<Observed> = None;
        let mut renewed = Instant::now();
        loop {
            let leading = *self.role.borrow() == Role::Leader;
            match self.try_acquire_or_renew(&mut observed).await {
                Ok(true) => {
                    renewed = Instant::now();
                    if !leading {
                        info!(lease = %self.lease(), identity = %self.config.identity, "became the leader");
                    }
                    self.role.send_replace(Role::Leader);
                }
                Ok(false) if leading => {
                    return Err(Error::Lost { lease: self.lease(), why: "another candidate holds it".into() });
                }
                Ok(false) => {
                    self.role.send_if_modified(|r| std::mem::replace(r, Role::Follower) != Role::Follower);
                }
                Err(e) if leading && renewed.elapsed() >= self.config.renew_deadline => {
                    return Err(Error::Lost {
                        lease: self.lease(),
                        why: format!("not renewed for {:?}: {e}", self.config.renew_deadline),
                    });
                }
                Err(e) => warn!(error = %e, "leader election: cannot read or write the Lease"),
            }
            tokio::select! {
                () = &mut stop => return Ok(()),
                () = tokio::time::sleep(self.config.retry) => {}
            }
        }
    }

    /// One round: `true` when this process holds the Lease afterwards.
    async fn try_acquire_or_renew(&self, observed: &mut Option<Observed>) -> Result<bool, Error> {
        let now = jiff::Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await.map_err(|e| self.kube(e))? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.config.name.clone()), ..ObjectMeta::default() },
                spec: Some(next_spec(
                    &LeaseSpec::default(),
                    &self.config.identity,
                    self.config.lease_duration,
                    now,
                    true,
                )),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(self.kube(e)),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let since = match observed {
            Some(o) if o.resource_version == rv => o.since,
            _ => {
                let since = Instant::now();
                *observed = Some(Observed { resource_version: rv, since });
                since
            }
        };
        let spec = lease.spec.take().unwrap_or_default();
        let take = match decide(&spec, &self.config.identity, since.elapsed(), self.config.lease_duration) {
            Decision::Held(_) => return Ok(false),
            Decision::Renew => false,
            Decision::Take => true,
        };
        lease.spec = Some(next_spec(&spec, &self.config.identity, self.config.lease_duration, now, take));
        // resourceVersion is kept: the replace fails with 409 if anyone wrote in between.
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(self.kube(e)),
        }
    }

    /// Give the Lease up (after the controllers stopped), so that a follower takes over at once.
    pub async fn release(&self) -> Result<(), Error> {
        if *self.role.borrow() != Role::Leader {
            return Ok(());
        }
        let Some(mut lease) = self.api.get_opt(&self.config.name).await.map_err(|e| self.kube(e))? else {
            return Ok(());
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        lease.spec = Some(spec);
        self.api.replace(&self.config.name, &PostParams::default(), &lease).await.map_err(|e| self.kube(e))?;
        self.role.send_replace(Role::Follower);
        info!(lease = %self.lease(), "released the leader Lease");
        Ok(())
    }
}

/// Run `work` (the controllers) only while this process leads, until `stop` resolves, and mirror
/// the role into `readiness` and the leader metric.
///
/// Without an elector the process leads from the start. With one, `work` starts once the Lease is
/// held and is never paused: a lost Lease returns [`Error::Lost`] at once, dropping `work`
/// mid-flight, and the caller must end the process so that nothing writes after another leader
/// may have taken over. After `stop`, once `work` has returned, the Lease is released so that a
/// follower takes over without waiting for it to expire.
pub async fn gate(
    elector: Option<&Elector>,
    readiness: &Readiness,
    metrics: &Metrics,
    work: impl Future<Output = ()>,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    let Some(elector) = elector else {
        readiness.set_role(Role::Leader);
        metrics.set_leader(true);
        work.await;
        return Ok(());
    };
    let stop = stop.shared();
    let election = async {
        tokio::select! {
            r = elector.run(stop.clone()) => r,
            () = mirror(elector.role(), readiness, metrics) => Ok(()),
        }
    };
    let led = async {
        let mut role = elector.role();
        tokio::select! {
            r = role.wait_for(|r| *r == Role::Leader) => if r.is_err() { return },
            () = stop.clone() => return,
        }
        work.await;
    };
    tokio::pin!(election, led);
    tokio::select! {
        r = &mut election => {
            r?;
            led.await;
        }
        () = &mut led => election.await?,
    }
    if let Err(e) = elector.release().await {
        warn!(error = %e, "cannot release the leader Lease; a follower takes over when it expires");
    }
    Ok(())
}

/// Keep readiness and the leader metric equal to `role` while the elector lives.
async fn mirror(mut role: watch::Receiver<Role>, readiness: &Readiness, metrics: &Metrics) {
    loop {
        let r = *role.borrow_and_update();
        readiness.set_role(r);
        metrics.set_leader(r == Role::Leader);
        if role.changed().await.is_err() {
            return;
        }
    }
}

/// The Lease's namespace when none is given: the pod's own (`POD_NAMESPACE`), else the watched
/// namespace, else `default`.
pub fn default_namespace(watched: Option<&str>) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| watched.map(String::from))
        .unwrap_or_else(|| "default".into())
}

/// This process's identity: `POD_NAME` in a pod, else `<hostname>-<pid>`.
pub fn identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "lockstep".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn held_by(holder: Option<&str>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec { holder_identity: holder.map(String::from), lease_duration_seconds: seconds, ..LeaseSpec::default() }
    }

    #[test]
    fn timings_must_let_a_leader_give_up_before_others_take_over() {
        let s = Duration::from_secs;
        let config =
            |duration, deadline, retry| Config::new("l".into(), "ns".into(), "a".into(), duration, deadline, retry);
        assert!(config(s(15), s(10), s(2)).is_ok());
        for (duration, deadline, retry) in
            [(s(10), s(10), s(2)), (s(15), s(10), s(10)), (s(5), s(10), s(2)), (s(15), s(2), s(10))]
        {
            let r = config(duration, deadline, retry);
            assert!(matches!(r, Err(Error::Timing { .. })), "{duration:?} {deadline:?} {retry:?}: {r:?}");
        }
    }

    #[test]
    fn a_free_lease_is_taken_and_an_own_lease_renewed() {
        assert_eq!(decide(&held_by(None, None), "a", Duration::ZERO, D), Decision::Take);
        assert_eq!(decide(&held_by(Some(""), Some(1)), "a", Duration::ZERO, D), Decision::Take);
        assert_eq!(decide(&held_by(Some("a"), Some(15)), "a", Duration::from_secs(60), D), Decision::Renew);
    }

    #[test]
    fn another_holder_keeps_it_until_it_stops_changing_for_its_duration() {
        let spec = held_by(Some("b"), Some(15));
        assert_eq!(decide(&spec, "a", Duration::from_secs(14), D), Decision::Held("b".into()));
        assert_eq!(decide(&spec, "a", Duration::from_secs(15), D), Decision::Take);
        // The Lease's own duration wins over ours; a missing one falls back to ours.
        assert_eq!(decide(&held_by(Some("b"), Some(5)), "a", Duration::from_secs(6), D), Decision::Take);
        assert_eq!(decide(&held_by(Some("b"), None), "a", Duration::from_secs(6), D), Decision::Held("b".into()));
    }

    #[test]
    fn taking_from_another_holder_counts_a_transition() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let mut current = held_by(Some("b"), Some(15));
        current.lease_transitions = Some(2);
        let taken = next_spec(&current, "a", D, now, true);
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.lease_duration_seconds, Some(15));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        let renewed = next_spec(&taken, "a", D, jiff::Timestamp::MAX, false);
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(now)));
        assert_eq!(renewed.renew_time, Some(MicroTime(jiff::Timestamp::MAX)));
        let released = held_by(None, Some(1));
        assert_eq!(next_spec(&released, "a", D, now, true).lease_transitions, Some(0));
    }
}
