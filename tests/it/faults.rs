//! Faults: AWS going away mid-run (change detection failing marks every ExternalSecret of the store
//! ProviderUnavailable and its recovery syncs them at once), throttling of a share of calls, the
//! operator killed during a burst, the apiserver restarted mid-run (a control plane of the test's
//! own, stopped and started again on the same port and etcd data) and the apiserver unreachable
//! mid-run (a TCP relay cuts the operator's connections, which then hang rather than fail).

use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::ListParams;
use lockstep_rig::http::Metrics;
use lockstep_rig::{ControlPlane, Emulator, Fault, FaultProxy, Rig, TcpCut};

use crate::common::*;

/// Key `k` of the Secret holds AWS secret `key`, refreshed every `refresh`.
fn spec(key: &str, refresh: &str) -> Es {
    es("aws").refresh(refresh).key("k", key)
}

#[tokio::test]
async fn aws_going_away_keeps_the_secrets_and_recovers_within_one_backoff() -> anyhow::Result<()> {
    let w = World::new("outage").await?;
    let proxy = FaultProxy::start(&Rig::get().emulator.endpoint)?;
    w.store(secret_store("aws", &proxy.endpoint)).await?;
    let names = ["a", "b"];
    for n in names {
        let key = w.create_aws(n, &format!("value-{n}")).await?;
        w.external_secret(n, spec(&key, "1s")).await?;
    }
    let mut before = Vec::new();
    for n in names {
        w.wait_reason(n, "SecretSynced").await?;
        before.push(w.wait_value(n, "k", &format!("value-{n}")).await?);
    }

    let down = Instant::now();
    proxy.set(Fault::Drop);
    for n in names {
        let msg = w.wait_reason(n, "ProviderUnavailable").await?;
        assert!(msg.contains("unavailable: could not reach the endpoint: "), "{msg}");
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let check_untouched = async |when: &str| -> anyhow::Result<()> {
        for (n, b) in names.iter().zip(&before) {
            let s = w.secrets().get(n).await?;
            assert_eq!(s.data, b.data, "{when}: Secret {n} changed");
            assert_eq!(s.metadata.resource_version, b.metadata.resource_version, "{when}: Secret {n} was written");
        }
        Ok(())
    };
    check_untouched("during the outage").await?;

    // Back: every ExternalSecret is in sync again within the backoff period it was in. Failures
    // back off 2 s, 4 s, 8 s ... (+20% jitter), so after an outage of D seconds the period running
    // is at most 2 (D + 2) s long.
    let outage = down.elapsed();
    proxy.set(Fault::Pass);
    let up = Instant::now();
    for n in names {
        w.wait_reason(n, "SecretSynced").await?;
    }
    let took = up.elapsed();
    eprintln!("outage: down {outage:?}, back in sync {took:?} after it returned");
    let period = (outage + Duration::from_secs(2)).mul_f64(2.0 * 1.2) + Duration::from_secs(2);
    assert!(took <= period, "recovered after {took:?}, over one backoff period ({period:?}) after {outage:?} down");
    check_untouched("after the outage").await?;
    Ok(())
}

#[tokio::test]
async fn throttling_a_share_of_calls_converges_without_a_retry_storm() -> anyhow::Result<()> {
    let emu = Emulator::dedicated()?;
    let proxy = FaultProxy::start(&emu.endpoint)?;
    let w = World::new("throttle").await?;
    const N: usize = 8;
    for i in 0..N {
        emu.client().create_secret().name(format!("t/{i}")).secret_string(format!("v{i}")).send().await?;
    }
    let throttled = |metrics: &Metrics| metrics.sum("lockstep_aws_calls_total", &[("outcome", "Throttled")]);
    // Every call is throttled until the SDK's own three attempts are not enough and the operator
    // sees (and counts) a throttled call; then every other call. Throttling only a share from the
    // start is not deterministic: concurrent operations can share the passing calls so that each
    // one gets through, and with refreshInterval 1h nothing more is called.
    proxy.set(Fault::Throttle);
    w.store(secret_store("aws", &proxy.endpoint)).await?;
    for i in 0..N {
        w.external_secret(&format!("es-{i}"), spec(&format!("t/{i}"), "1h")).await?;
    }
    w.eventually("a throttled call counted", || {
        let counted = w.operator.metrics().is_ok_and(|m| throttled(&m) >= 1.0);
        async move { counted.then_some(()) }
    })
    .await?;
    proxy.set(Fault::ThrottleAllBut(2));
    for i in 0..N {
        w.wait_value(&format!("es-{i}"), "k", &format!("v{i}")).await?;
        w.wait_reason(&format!("es-{i}"), "SecretSynced").await?;
    }
    let converged = proxy.requests();
    // Bounded: each ExternalSecret needs a fetch and the store a validation, no call passes until
    // one is counted (then one in two) and the SDK tries three times per operation; a storm would
    // be hundreds a second.
    assert!(converged <= 4 * 3 * (N + 4), "{converged} requests to converge {N} ExternalSecrets");
    // And quiet once in sync (refreshInterval 1h: only change detection polls).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = proxy.requests() - converged;
    eprintln!("throttling: {converged} requests to converge, {idle} in the 3 s after");
    assert!(idle <= 4 * 3, "{idle} requests in 3 s after convergence");
    let metrics = w.operator.metrics()?;
    assert!(throttled(&metrics) >= 1.0, "the throttled calls are counted: {}", metrics.text());
    Ok(())
}

#[tokio::test]
async fn the_operator_killed_during_a_burst_converges_to_the_same_secrets() -> anyhow::Result<()> {
    let mut w = World::new("sigkill").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    const N: usize = 30;
    let mut keys = Vec::new();
    for i in 0..N {
        keys.push(w.create_aws(&format!("s{i}"), &format!("v{i}")).await?);
    }
    for (i, key) in keys.iter().enumerate() {
        w.external_secret(&format!("es-{i}"), spec(key, "1h")).await?;
    }
    // Kill it once some, not all, Secrets are written.
    let secrets = w.secrets();
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=lockstep");
    w.eventually("a first Secret", || {
        let secrets = secrets.clone();
        let managed = managed.clone();
        async move { (!secrets.list(&managed).await.ok()?.items.is_empty()).then_some(()) }
    })
    .await?;
    w.operator.kill();
    let written = secrets.list(&managed).await?.items.len();
    eprintln!("sigkill: {written} of {N} Secrets written before the kill");
    w.operator = Operator::watching(LOCKSTEP, w.ns(), &[])?;
    for i in 0..N {
        w.wait_value(&format!("es-{i}"), "k", &format!("v{i}")).await?;
        w.wait_reason(&format!("es-{i}"), "SecretSynced").await?;
    }
    let list = w.managed_secrets().await?;
    let names: Vec<_> = list.iter().map(|s| s.name_any()).collect();
    let mut want: Vec<_> = (0..N).map(|i| format!("es-{i}")).collect();
    want.sort();
    assert_eq!(names, want, "exactly one Secret per ExternalSecret ({written} written before the kill)");
    for s in &list {
        assert_eq!(s.owner_references().len(), 1, "{}: one owner", s.name_any());
    }
    Ok(())
}

#[tokio::test]
async fn the_apiserver_unreachable_mid_run_is_survived() -> anyhow::Result<()> {
    let rig = Rig::get();
    let env = rig.test_env("apicut").await?;
    // The operator reaches the apiserver through a relay that can cut it off.
    let kubeconfig = std::fs::read_to_string(&rig.kubeconfig)?;
    let upstream = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .ok_or_else(|| anyhow::anyhow!("no server in the rig's kubeconfig"))?
        .to_string();
    let relay = TcpCut::start(&upstream)?;
    let cut_kubeconfig = rig.dir.join(format!("kubeconfig-cut-{}", lockstep_rig::unique()));
    std::fs::write(&cut_kubeconfig, kubeconfig.replace(&upstream, &relay.addr))?;
    let ns = env.ns.clone();
    let w = World::on(env, &cut_kubeconfig, &["--namespace", &ns]).await?;
    w.store(secret_store("aws", &rig.emulator.endpoint)).await?;
    let a = w.create_aws("a", "a1").await?;
    w.external_secret("a", spec(&a, "1s")).await?;
    w.wait_value("a", "k", "a1").await?;

    // Cut off: a rotation and a new ExternalSecret arrive meanwhile.
    relay.cut();
    w.env.aws.put_secret_value().secret_id(&a).secret_string("a2").send().await?;
    let b = w.create_aws("b", "b1").await?;
    w.external_secret("b", spec(&b, "1s")).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(text(&w.secrets().get("a").await?, "k"), "a1", "nothing is written while cut off");

    // Back: the operator reconnects and converges.
    relay.restore();
    w.wait_value_within(RECONNECT, "a", "k", "a2").await?;
    w.wait_value_within(RECONNECT, "b", "k", "b1").await?;
    synced_without_loss_or_doubles(&w).await?;
    Ok(())
}

#[tokio::test]
async fn the_apiserver_restarted_mid_run_is_survived() -> anyhow::Result<()> {
    let rig = Rig::get();
    let mut cp = ControlPlane::start(&rig.dir.join(format!("restart-{}", lockstep_rig::unique())))?;
    let env = cp.test_env(&rig.emulator, "restart").await?;
    let ns = env.ns.clone();
    let mut w = World::on(env, &cp.kubeconfig, &["--namespace", &ns]).await?;
    w.store(secret_store("aws", &rig.emulator.endpoint)).await?;
    let a = w.create_aws("a", "a1").await?;
    w.external_secret("a", spec(&a, "1s")).await?;
    let uid = w.wait_value("a", "k", "a1").await?.uid();

    // The apiserver stops; a rotation happens while it is down; it comes back on the same data.
    cp.stop();
    w.env.aws.put_secret_value().secret_id(&a).secret_string("a2").send().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cp.restart()?;
    let back = std::time::Instant::now();
    assert!(w.operator.running(), "the operator outlives the apiserver restart:\n{}", w.operator.logs());

    // The rotation made while it was down and a new ExternalSecret arrive.
    let b = w.create_aws("b", "b1").await?;
    w.external_secret("b", spec(&b, "1s")).await?;
    assert_eq!(
        w.wait_value_within(RECONNECT, "a", "k", "a2").await?.uid(),
        uid,
        "the Secret was updated, not recreated"
    );
    w.wait_value_within(RECONNECT, "b", "k", "b1").await?;
    eprintln!("apiserver restart: in sync {:?} after it was back", back.elapsed());
    synced_without_loss_or_doubles(&w).await?;
    assert!(w.operator.running(), "the operator is still running");
    Ok(())
}

/// How long to wait for the operator to catch up after an apiserver fault. Its watches retry to
/// reconnect at most 15 s apart, and after a restart relist once more (their resource version is
/// too old for the new watch cache); a busy machine adds its share.
const RECONNECT: Duration = Duration::from_secs(90);

/// After an apiserver fault: ExternalSecrets `a` and `b` synced, with exactly their two Secrets.
async fn synced_without_loss_or_doubles(w: &World) -> anyhow::Result<()> {
    for n in ["a", "b"] {
        w.wait_reason(n, "SecretSynced").await?;
    }
    let names: Vec<_> = w.managed_secrets().await?.iter().map(|s| s.name_any()).collect();
    assert_eq!(names, ["a", "b"], "no Secret lost or doubled");
    Ok(())
}
