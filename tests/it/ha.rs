//! High availability: two operator processes, one Lease; only the leader writes, a SIGKILLed leader
//! is replaced within the lease duration, SIGTERM releases the Lease at once, and a leader that
//! finds another holder exits.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use lockstep_rig::{Rig, eventually};

use crate::common::*;

/// Short timings so the test is quick: lease 4 s, renew deadline 3 s, retry 1 s.
const LEASE_SECONDS: u64 = 4;
const RETRY_SECONDS: u64 = 1;

fn candidate(ns: &str) -> anyhow::Result<Operator> {
    let lease = LEASE_SECONDS.to_string();
    let retry = RETRY_SECONDS.to_string();
    Operator::start(
        LOCKSTEP,
        &Rig::get().kubeconfig,
        &[
            "--namespace",
            ns,
            "--leader-elect",
            "--lease-name",
            "lockstep",
            "--lease-duration-seconds",
            &lease,
            "--lease-renew-deadline-seconds",
            "3",
            "--lease-retry-seconds",
            &retry,
        ],
        &[],
    )
}

/// The value of `name`'s first sample in `op`'s metrics.
fn metric(op: &Operator, name: &str) -> Option<f64> {
    op.metrics().ok()?.value(name, &[])
}

/// Wait until `op` is ready and reports `lockstep_leader` 1 (`leading`) or 0.
async fn wait_leading(op: &Operator, leading: bool) -> anyhow::Result<()> {
    let want = f64::from(u8::from(leading));
    eventually(WAIT, &format!("lockstep_leader {want}"), || {
        let got = metric(op, "lockstep_leader");
        let ready = op.get("/readyz").is_ok_and(|r| r.status == 200);
        async move { (got == Some(want) && ready).then_some(()) }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", op.logs()))
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get("lockstep").await.ok()?.spec?.holder_identity
}

#[tokio::test]
async fn only_the_leader_writes_and_a_killed_leader_hands_over() -> anyhow::Result<()> {
    let env = Rig::get().test_env("ha").await?;
    install_crds(&env.kube).await?;
    let ns = env.ns.clone();
    let leases = Api::<Lease>::namespaced(env.kube.clone(), &ns);

    let first = candidate(&ns)?;
    wait_leading(&first, true).await?;
    let second = candidate(&ns)?;
    wait_leading(&second, false).await?;
    assert!(holder(&leases).await.is_some_and(|h| h.ends_with(&format!("-{}", first.pid()))));

    // The leader syncs; the follower reconciles nothing (its metrics count no reconcile).
    let w = World { env, operator: first };
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    let src = w.create_aws("db", "v1").await?;
    w.external_secret("db", es("aws").refresh("1s").key("k", &src)).await?;
    w.wait_value("db", "k", "v1").await?;
    assert!(metric(&w.operator, "lockstep_reconciles_total").is_some());
    assert_eq!(metric(&second, "lockstep_reconciles_total"), None, "the follower reconciled:\n{}", second.logs());
    assert!(!second.logs().contains("reconcile"), "{}", second.logs());

    // SIGKILL: no release; the follower takes over once the Lease has not changed for its duration.
    let World { env, operator: mut first } = w;
    first.kill();
    let killed = Instant::now();
    wait_leading(&second, true).await?;
    let handover = killed.elapsed();
    eprintln!("leader handover after SIGKILL: {handover:?}");
    // The follower times the lease from when it first saw the last renewal (up to a retry late) and
    // acts at its next retry; a second of slack for a busy machine.
    assert!(
        handover <= Duration::from_secs(LEASE_SECONDS + 2 * RETRY_SECONDS + 2),
        "handover took {handover:?} with a {LEASE_SECONDS} s lease"
    );
    assert!(holder(&leases).await.is_some_and(|h| h.ends_with(&format!("-{}", second.pid()))));

    // The new leader does the job: a rotation reaches the Secret.
    let w = World { env, operator: second };
    w.env.aws.put_secret_value().secret_id(&src).secret_string("v2").send().await?;
    w.wait_value("db", "k", "v2").await?;

    // SIGTERM: a clean exit that leaves the Lease free for the next candidate at once.
    let World { env: _env, operator: mut second } = w;
    let status = second.terminate().await?;
    assert!(status.success(), "exit status {status:?}\n{}", second.logs());
    let lease = leases.get("lockstep").await?.spec.expect("the Lease has a spec");
    assert_eq!(lease.holder_identity, None, "{lease:?}");
    let third = candidate(&ns)?;
    let started = Instant::now();
    wait_leading(&third, true).await?;
    assert!(started.elapsed() < Duration::from_secs(LEASE_SECONDS), "a released Lease is taken at once");

    // A leader that finds another holder has lost the Lease: it exits non-zero at once.
    let mut third = third;
    eventually(WAIT, "the intruder's write (retried on a conflict with a renewal)", || {
        let leases = leases.clone();
        async move {
            let mut lease = leases.get("lockstep").await.ok()?;
            lease.spec.as_mut()?.holder_identity = Some("intruder".into());
            leases.replace("lockstep", &Default::default(), &lease).await.ok().map(drop)
        }
    })
    .await?;
    let status = third.wait_exit().await?;
    assert_eq!(status.code(), Some(1), "{}", third.logs());
    assert!(third.logs().contains("leadership lost"), "{}", third.logs());
    Ok(())
}
