//! Spec changes on live ExternalSecrets, as a user makes them: every pair of creation policies
//! and a target rename, each applied to a synced ExternalSecret that is then deleted, with the
//! Secrets that must be left (or gone) afterwards. Garbage collection is the real
//! kube-controller-manager's.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use lockstep::api::ExternalSecret;
use lockstep_rig::Rig;
use serde_json::json;

use crate::common::*;

/// Each row's ExternalSecret, Secret and AWS secret are named after it.
struct Row {
    from: &'static str,
    to: &'static str,
    /// Ready reason once the new policy is applied.
    reason: &'static str,
    /// After the transition: the Secret exists, carries an owner reference, carries our label.
    exists: bool,
    owned: bool,
    labelled: bool,
    /// After the ExternalSecret is deleted: the Secret is still there.
    kept: bool,
}

const fn row(from: &'static str, to: &'static str, reason: &'static str, state: (bool, bool, bool), kept: bool) -> Row {
    Row { from, to, reason, exists: state.0, owned: state.1, labelled: state.2, kept }
}

const SYNCED: &str = "SecretSynced";
const CONFLICT: &str = "TargetConflict";
/// (exists, owned, labelled)
const OWNED: (bool, bool, bool) = (true, true, true);
const ORPHANED: (bool, bool, bool) = (true, false, true);
const MERGED: (bool, bool, bool) = (true, false, false);
const NONE: (bool, bool, bool) = (false, false, false);

const ROWS: &[Row] = &[
    row("Owner", "Owner", SYNCED, OWNED, false),
    // Orphan keeps the Secret: the owner reference goes, or deleting the ExternalSecret deletes it.
    row("Owner", "Orphan", SYNCED, ORPHANED, true),
    // Merge only adds keys to a Secret it does not own: ownership and our label go.
    row("Owner", "Merge", SYNCED, MERGED, true),
    // None touches nothing: the Secret stays owned and goes with the ExternalSecret.
    row("Owner", "None", SYNCED, OWNED, false),
    row("Orphan", "Owner", SYNCED, OWNED, false),
    row("Orphan", "Orphan", SYNCED, ORPHANED, true),
    row("Orphan", "Merge", SYNCED, MERGED, true),
    row("Orphan", "None", SYNCED, ORPHANED, true),
    // A Merge target is the user's Secret: Owner and Orphan never take it over.
    row("Merge", "Owner", CONFLICT, MERGED, true),
    row("Merge", "Orphan", CONFLICT, MERGED, true),
    row("Merge", "Merge", SYNCED, MERGED, true),
    row("Merge", "None", SYNCED, MERGED, true),
    row("None", "Owner", SYNCED, OWNED, false),
    row("None", "Orphan", SYNCED, ORPHANED, true),
    row("None", "Merge", CONFLICT, NONE, false),
    row("None", "None", SYNCED, NONE, false),
];

fn name(r: &Row) -> String {
    format!("{}-{}", r.from, r.to).to_lowercase()
}

fn spec(src: &str, policy: &str, target: &str) -> Es {
    es("aws").refresh("1h").target(json!({"name": target, "creationPolicy": policy})).key("k", src)
}

async fn secret(w: &World, name: &str) -> anyhow::Result<Option<Secret>> {
    Ok(w.secrets().get_opt(name).await?)
}

fn owned(s: &Secret) -> bool {
    s.metadata.owner_references.as_ref().is_some_and(|o| !o.is_empty())
}

fn labelled(s: &Secret) -> bool {
    s.metadata.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/managed-by")).map(String::as_str)
        == Some("lockstep")
}

async fn set_policy(w: &World, es: &str, policy: &str) -> anyhow::Result<()> {
    let patch = json!({"spec": {"target": {"creationPolicy": policy}}});
    w.api::<ExternalSecret>().patch(es, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Wait until `es` reports `reason` for its current generation.
async fn settled(w: &World, es: &str, reason: &str) -> anyhow::Result<()> {
    w.wait_reason(es, reason).await.map(drop)
}

#[tokio::test]
async fn every_creation_policy_transition_then_deletion_leaves_the_right_secrets() -> anyhow::Result<()> {
    let w = World::new("transitions").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    for r in ROWS {
        let n = name(r);
        let src = w.create_aws(&n, &format!("value-{n}")).await?;
        if r.from == "Merge" {
            w.plain_secret(&n, &[("user", "theirs")]).await?;
        }
        w.external_secret(&n, spec(&src, r.from, &n)).await?;
    }
    for r in ROWS {
        let n = name(r);
        settled(&w, &n, SYNCED).await?;
        set_policy(&w, &n, r.to).await?;
    }
    for r in ROWS {
        let n = name(r);
        settled(&w, &n, r.reason).await.map_err(|e| anyhow::anyhow!("{n}: {e}"))?;
        let s = secret(&w, &n).await?;
        let state = s.as_ref().map_or((false, false, false), |s| (true, owned(s), labelled(s)));
        assert_eq!(state, (r.exists, r.owned, r.labelled), "{n}: (exists, owned, labelled) after the transition");
        if let Some(s) = &s {
            assert_eq!(text(s, "k"), format!("value-{n}"), "{n}: the data is there");
            if r.from == "Merge" {
                assert_eq!(text(s, "user"), "theirs", "{n}: the user's keys stay");
            }
        }
    }
    for r in ROWS {
        w.api::<ExternalSecret>().delete(&name(r), &DeleteParams::default()).await?;
    }
    for r in ROWS.iter().filter(|r| !r.kept) {
        let n = name(r);
        w.eventually(&format!("{n}: Secret garbage-collected"), || async {
            secret(&w, &n).await.ok()?.is_none().then_some(())
        })
        .await?;
    }
    // What garbage collection deletes is gone by now; what it keeps must still be there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for r in ROWS.iter().filter(|r| r.kept) {
        let n = name(r);
        let s = secret(&w, &n).await?.ok_or_else(|| anyhow::anyhow!("{n}: the Secret meant to be kept is gone"))?;
        assert!(s.data.as_ref().is_some_and(|d| !d.is_empty()), "{n}: kept with its data");
    }
    Ok(())
}

#[tokio::test]
async fn renaming_the_target_retires_the_old_secret_under_owner_and_keeps_it_under_orphan() -> anyhow::Result<()> {
    let w = World::new("rename").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    for policy in ["Owner", "Orphan"] {
        let name = policy.to_lowercase();
        let (old, new) = (format!("{policy}-old").to_lowercase(), format!("{policy}-new").to_lowercase());
        let src = w.create_aws(&name, "v1").await?;
        w.external_secret(&name, spec(&src, policy, &old)).await?;
        w.wait_value(&old, "k", "v1").await?;
        w.external_secret(&name, spec(&src, policy, &new)).await?;
        w.wait_value(&new, "k", "v1").await?;
        settled(&w, &name, SYNCED).await?;
        let status = w.api::<ExternalSecret>().get(&name).await?.status.expect("a status");
        assert_eq!(status.binding.map(|b| b.name).as_deref(), Some(new.as_str()), "status names the new Secret");
        if policy == "Owner" {
            w.eventually("the old Secret retired", || async { secret(&w, &old).await.ok()?.is_none().then_some(()) })
                .await?;
        } else {
            let kept = secret(&w, &old).await?.ok_or_else(|| anyhow::anyhow!("Orphan keeps the old Secret"))?;
            assert_eq!(text(&kept, "k"), "v1");
        }
    }
    let events = w.api::<Event>().list(&ListParams::default()).await?.items;
    let deleted = events.iter().any(|e| {
        e.reason.as_deref() == Some("Deleted") && e.message.as_deref().is_some_and(|n| n.contains("\"owner-old\""))
    });
    assert!(deleted, "an Event says the old Secret was deleted: {events:?}");
    Ok(())
}

/// A rollout restart still waiting out its quiet period when the operator stops (SIGTERM, or a
/// kill -9) happens after the operator comes back: the workload's record says its pods run with
/// older data than the Secret holds.
#[tokio::test]
async fn a_restart_pending_when_the_operator_stops_happens_after_it_comes_back() -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    for stop in ["term", "kill"] {
        // A quiet period far longer than the test waits: only the next operator can restart.
        let mut w =
            World::with_env(&format!("pending-{stop}"), &[("LOCKSTEP_RESTART_DEBOUNCE_SECONDS", "600")]).await?;
        w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
        w.deployment("api").await?;
        let src = w.create_aws("env", "v1").await?;
        w.external_secret("es", es("aws").refresh("1s").restart("Deployment", "api").key("k", &src)).await?;
        let first = w.wait_value("es", "k", "v1").await?;
        let deployments = w.api::<Deployment>();
        let annotation = |d: &Deployment, on_template: bool| {
            let meta = if on_template { d.spec.template.metadata.as_ref()? } else { &d.metadata };
            meta.annotations.as_ref()?.get("lockstep.dev/restarted-for").cloned()
        };
        let hash = |s: &Secret| s.metadata.annotations.as_ref().and_then(|a| a.get("lockstep.dev/data-hash")).cloned();
        let recorded = hash(&first);
        w.eventually("the first sync recorded without a restart", || async {
            let d = deployments.get("api").await.ok()?;
            (annotation(&d, false) == recorded && annotation(&d, true).is_none()).then_some(())
        })
        .await?;

        w.env.aws.put_secret_value().secret_id(&src).secret_string("v2").send().await?;
        let changed = hash(&w.wait_value("es", "k", "v2").await?);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let d = deployments.get("api").await?;
        assert_eq!(annotation(&d, true), None, "{stop}: still inside the quiet period");
        match stop {
            "term" => anyhow::ensure!(w.operator.terminate().await?.success(), "a clean exit on SIGTERM"),
            _ => w.operator.kill(),
        }

        w.operator = Operator::watching(LOCKSTEP, w.ns(), &[("LOCKSTEP_RESTART_DEBOUNCE_SECONDS", "1")])?;
        w.eventually(&format!("{stop}: the restart after the operator came back"), || async {
            let d = deployments.get("api").await.ok()?;
            (annotation(&d, true) == changed && annotation(&d, false) == changed).then_some(())
        })
        .await?;
    }
    Ok(())
}
