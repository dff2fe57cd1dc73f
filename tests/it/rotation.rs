//! Change detection: unchanged secrets are not fetched again, shared sources are fetched once.

use std::time::Duration;

use lockstep_rig::Emulator;

use crate::common::*;

#[tokio::test]
async fn rotation_fetches_only_what_changed_and_shares_fetches() -> anyhow::Result<()> {
    let emu = Emulator::dedicated()?;
    let aws = emu.client();
    for (name, value) in [("rot/a", "a1"), ("rot/b", "b1"), ("rot/c", "c1")] {
        aws.create_secret().name(name).secret_string(value).send().await?;
    }
    let w = World::new("rotation").await?;
    w.store(secret_store("aws", &emu.endpoint)).await?;
    // one and three share rot/a; two reads rot/b; four reads rot/c.
    for (name, key) in [("one", "rot/a"), ("two", "rot/b"), ("three", "rot/a"), ("four", "rot/c")] {
        w.external_secret(name, es("aws").refresh("1s").key("k", key)).await?;
    }
    for (name, v) in [("one", "a1"), ("two", "b1"), ("three", "a1"), ("four", "c1")] {
        w.wait_value(name, "k", v).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Steady state: several refreshes, no value fetched.
    emu.start_recording()?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let steady = emu.recorded()?;
    assert_eq!(steady.get("GetSecretValue"), None, "unchanged secrets must not be fetched: {steady:?}");
    let polls = steady.get("DescribeSecret").copied().unwrap_or(0) + steady.get("ListSecrets").copied().unwrap_or(0);
    assert!(polls >= 1, "change metadata is polled: {steady:?}");

    // Rotate the shared secret: both readers follow, with one GetSecretValue.
    emu.start_recording()?;
    aws.put_secret_value().secret_id("rot/a").secret_string("a2").send().await?;
    w.wait_value("one", "k", "a2").await?;
    w.wait_value("three", "k", "a2").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = emu.stop_recording()?;
    assert_eq!(calls.get("GetSecretValue"), Some(&1), "one fetch for the shared, changed source: {calls:?}");
    Ok(())
}

#[tokio::test]
async fn a_wave_of_syncs_is_fetched_in_batches_and_stage_moves_are_followed() -> anyhow::Result<()> {
    let emu = Emulator::dedicated()?;
    let aws = emu.client();
    let n = 30;
    for i in 0..n {
        aws.create_secret().name(format!("wave/{i:02}")).secret_string(format!("v1-{i}")).send().await?;
    }
    let w = World::new("wave").await?;
    emu.start_recording()?;
    w.store(secret_store("aws", &emu.endpoint)).await?;
    for i in 0..n {
        w.external_secret(&format!("es-{i:02}"), es("aws").refresh("1s").key("k", &format!("wave/{i:02}"))).await?;
    }
    for i in 0..n {
        w.wait_value(&format!("es-{i:02}"), "k", &format!("v1-{i}")).await?;
    }
    let calls = emu.stop_recording()?;
    let fetches =
        calls.get("GetSecretValue").copied().unwrap_or(0) + calls.get("BatchGetSecretValue").copied().unwrap_or(0);
    assert!(calls.contains_key("BatchGetSecretValue"), "fetches that arrive together are batched: {calls:?}");
    assert!(fetches < n, "fewer fetch calls than secrets: {calls:?}");

    // AWSCURRENT moves to a staged version on eight secrets at once (UpdateSecretVersionStage): the
    // poller sees the new version ids and the Secrets follow.
    for i in 2..10 {
        let id = format!("wave/{i:02}");
        let old = aws.describe_secret().secret_id(&id).send().await?;
        let current = old
            .version_ids_to_stages()
            .and_then(|m| m.iter().find(|(_, s)| s.iter().any(|s| s == "AWSCURRENT")).map(|(v, _)| v.clone()))
            .ok_or_else(|| anyhow::anyhow!("no AWSCURRENT"))?;
        let staged = aws
            .put_secret_value()
            .secret_id(&id)
            .secret_string(format!("v2-{i}"))
            .version_stages("AWSPENDING")
            .send()
            .await?;
        aws.update_secret_version_stage()
            .secret_id(&id)
            .version_stage("AWSCURRENT")
            .move_to_version_id(staged.version_id().expect("PutSecretValue answers with the version id"))
            .remove_from_version_id(current)
            .send()
            .await?;
    }
    for i in 2..10 {
        w.wait_value(&format!("es-{i:02}"), "k", &format!("v2-{i}")).await?;
    }
    Ok(())
}

/// The Secrets the apiserver served: its own request counter, GETs of `secrets`.
async fn secret_gets(kube: &kube::Client) -> anyhow::Result<f64> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = kube.request_text(request).await?;
    Ok(lockstep_rig::http::Metrics::parse(text)
        .sum("apiserver_request_total", &[("resource", "secrets"), ("verb", "GET")]))
}

/// A refresh where nothing moved reads no Secret from the apiserver: the credential Secret and the
/// target are known unchanged from the watch of Secrets (same resource version as last read).
/// Counted by the apiserver of a control plane of this test's own: before, two GETs per sync (the
/// credential Secret's and the target's), then one (the target's), now none.
#[tokio::test]
async fn a_refresh_where_nothing_moved_reads_no_secret() -> anyhow::Result<()> {
    use lockstep_rig::{ControlPlane, Rig};
    let rig = Rig::get();
    let cp = ControlPlane::start(&rig.dir.join(format!("reads-{}", lockstep_rig::unique())))?;
    let env = cp.test_env(&rig.emulator, "reads").await?;
    let ns = env.ns.clone();
    let w = World::on(env, &cp.kubeconfig, &["--namespace", &ns]).await?;
    w.store(secret_store("aws", &rig.emulator.endpoint)).await?;
    for i in 0..5 {
        let key = w.create_aws(&format!("s{i}"), &format!("v{i}")).await?;
        w.external_secret(&format!("es-{i}"), es("aws").refresh("1s").key("k", &key)).await?;
    }
    for i in 0..5 {
        w.wait_value(&format!("es-{i}"), "k", &format!("v{i}")).await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let syncs = |m: &lockstep_rig::http::Metrics| m.sum("lockstep_reconciles_total", &[("kind", "ExternalSecret")]);
    let (gets0, syncs0) = (secret_gets(&w.env.kube).await?, syncs(&w.operator.metrics()?));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (gets1, syncs1) = (secret_gets(&w.env.kube).await?, syncs(&w.operator.metrics()?));
    let (gets, synced) = (gets1 - gets0, syncs1 - syncs0);
    assert!(synced >= 20.0, "five ExternalSecrets refreshed every second: {synced} syncs");
    assert!(gets <= 2.0, "{gets} GETs of Secrets for {synced} syncs where nothing moved");
    eprintln!("{gets} GETs of Secrets for {synced} syncs");
    Ok(())
}
