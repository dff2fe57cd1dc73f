//! ClusterExternalSecret: one ExternalSecret per selected namespace, following the namespaces. The
//! operator watches every namespace, so the test has a control plane of its own (with a
//! kube-controller-manager, whose garbage collection removes the Secrets of the ExternalSecrets
//! that go).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use lockstep::api::{ClusterExternalSecret, ExternalSecret};
use lockstep_rig::{ControlPlane, Rig, unique};
use serde_json::json;

use crate::common::*;

/// The AWS secret's value (never in the operator's log).
const VALUE: &str = "ces-value-5e1f";

/// The label this test selects namespaces by.
const TENANT: &str = "lockstep.test/tenant";

async fn namespace(kube: &kube::Client, name: &str, tenant: &str) -> anyhow::Result<()> {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.into());
    ns.metadata.labels = Some([(TENANT.to_string(), tenant.to_string())].into());
    Api::<Namespace>::all(kube.clone()).create(&PostParams::default(), &ns).await?;
    Ok(())
}

/// The status's provisioned and failed namespaces once Ready's reason is `reason` and the
/// provisioned ones are `provisioned`.
async fn wait_status(
    w: &World,
    name: &str,
    reason: &str,
    provisioned: &[&str],
) -> anyhow::Result<BTreeMap<String, String>> {
    let api = Api::<ClusterExternalSecret>::all(w.env.kube.clone());
    let mut want: Vec<&str> = provisioned.to_vec();
    want.sort();
    let waited = w
        .eventually(&format!("ClusterExternalSecret {name}: {reason}, provisioned in {want:?}"), || {
            let api = api.clone();
            let want = want.clone();
            async move {
                let status = api.get(name).await.ok()?.status?;
                let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
                (ready.reason == reason && status.provisioned_namespaces == want).then(|| {
                    status.failed_namespaces.into_iter().map(|f| (f.namespace, f.reason.unwrap_or_default())).collect()
                })
            }
        })
        .await;
    if waited.is_err() {
        let now = api.get(name).await.ok().and_then(|c| c.status);
        anyhow::bail!("ClusterExternalSecret {name} status at the end: {now:?}");
    }
    waited
}

async fn wait_value_in(w: &World, ns: &str, name: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let secrets = Api::<Secret>::namespaced(w.env.kube.clone(), ns);
    w.eventually(&format!("Secret {ns}/{name} {key}={value}"), || {
        let secrets = secrets.clone();
        async move { (text(&secrets.get(name).await.ok()?, key) == value).then_some(()) }
    })
    .await
}

async fn wait_gone<K>(w: &World, api: Api<K>, what: &str, name: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    w.eventually(&format!("{what} gone"), || {
        let api = api.clone();
        async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
    })
    .await
}

/// Three selected namespaces get the ExternalSecret (and its Secret); one relabelled out loses
/// both (the ExternalSecret deleted by the operator, the Secret by garbage collection under
/// creationPolicy Owner); one created later gets one; an ExternalSecret of the same name that is
/// not the ClusterExternalSecret's is never taken over, and its namespace is listed as failed.
#[tokio::test]
async fn a_cluster_external_secret_follows_namespace_labels_and_creation() -> anyhow::Result<()> {
    let rig = Rig::get();
    let cp = ControlPlane::with_controller_manager(&rig.dir.join(format!("ces-{}", unique())))?;
    let w = World::on(cp.test_env(&rig.emulator, "ces").await?, &cp.kubeconfig, &[]).await?;
    let kube = w.env.kube.clone();
    let src = w.create_aws("db", VALUE).await?;
    w.apply(creds()).await?;
    let store = format!("shared-{}", unique());
    w.apply(cluster_store(&store, &rig.emulator.endpoint).creds_in(w.ns())).await?;

    let tenant = format!("t-{}", unique());
    let [a, b, c, taken, later] = ["a", "b", "c", "taken", "later"].map(|n| format!("ces-{n}-{}", unique()));
    for ns in [&a, &b, &c, &taken] {
        namespace(&kube, ns, &tenant).await?;
    }
    // Someone else's ExternalSecret of the same name, in a selected namespace.
    let theirs = object("ExternalSecret", "db", es(&store).kind("ClusterSecretStore").refresh("1h").key("k", &src));
    lockstep_rig::apply(&kube, Some(&taken), theirs).await?;
    let theirs_before = Api::<ExternalSecret>::namespaced(kube.clone(), &taken).get("db").await?;

    let spec = json!({
        "namespaceSelectors": [{"matchLabels": {TENANT: tenant}}],
        "externalSecretName": "db",
        "externalSecretMetadata": {"labels": {"team": "payments"}},
        // Namespace changes are followed at once: this refresh is not what the test waits for.
        "refreshTime": "1h",
        "externalSecretSpec": serde_json::Value::from(es(&store).kind("ClusterSecretStore").refresh("1h").key("k", &src)),
    });
    w.apply(object("ClusterExternalSecret", "shared-db", spec)).await?;

    let failed = wait_status(&w, "shared-db", "NamespacesFailed", &[&a, &b, &c]).await?;
    let why = failed.get(&taken).map(String::as_str).unwrap_or_default();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(why.contains("not owned by this ClusterExternalSecret"), "{why}");
    for ns in [&a, &b, &c] {
        wait_value_in(&w, ns, "db", "k", VALUE).await?;
    }
    let made = Api::<ExternalSecret>::namespaced(kube.clone(), &a).get("db").await?;
    let owner = made.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        owner.iter().any(|o| o.kind == "ClusterExternalSecret" && o.name == "shared-db" && o.controller == Some(true))
    );
    let labels = made.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("lockstep.dev/cluster-external-secret").map(String::as_str), Some("shared-db"));
    assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
    let theirs_after = Api::<ExternalSecret>::namespaced(kube.clone(), &taken).get("db").await?;
    // Not taken over (its own sync writes its status, so the resource version moves).
    assert_eq!(theirs_after.metadata.generation, theirs_before.metadata.generation, "the spec untouched");
    assert_eq!(theirs_after.metadata.labels, theirs_before.metadata.labels);
    assert!(theirs_after.metadata.owner_references.is_none());

    // b relabelled out: its ExternalSecret goes, and with it (creationPolicy Owner) its Secret.
    let relabel = json!({"metadata": {"labels": {TENANT: "someone-else"}}});
    Api::<Namespace>::all(kube.clone()).patch(&b, &PatchParams::default(), &Patch::Merge(relabel)).await?;
    wait_gone(
        &w,
        Api::<ExternalSecret>::namespaced(kube.clone(), &b),
        "ExternalSecret in the relabelled namespace",
        "db",
    )
    .await?;
    wait_gone(&w, Api::<Secret>::namespaced(kube.clone(), &b), "Secret in the relabelled namespace", "db").await?;
    wait_status(&w, "shared-db", "NamespacesFailed", &[&a, &c]).await?;

    // One of its ExternalSecrets deleted by hand comes back at once (not at refreshTime).
    let in_a = Api::<ExternalSecret>::namespaced(kube.clone(), &a);
    let old_uid = in_a.get("db").await?.metadata.uid;
    in_a.delete("db", &Default::default()).await?;
    w.eventually("the deleted ExternalSecret re-created", || {
        let in_a = in_a.clone();
        let old_uid = old_uid.clone();
        async move { (in_a.get_opt("db").await.ok()??.metadata.uid != old_uid).then_some(()) }
    })
    .await?;

    // A namespace created later gets one.
    namespace(&kube, &later, &tenant).await?;
    wait_value_in(&w, &later, "db", "k", VALUE).await?;
    wait_status(&w, "shared-db", "NamespacesFailed", &[&a, &c, &later]).await?;

    // Their ExternalSecret gone, the ClusterExternalSecret provisions that namespace too (at the
    // latest at refreshTime; here the spec change triggers it) and is Ready.
    Api::<ExternalSecret>::namespaced(kube.clone(), &taken).delete("db", &Default::default()).await?;
    wait_gone(&w, Api::<ExternalSecret>::namespaced(kube.clone(), &taken), "their ExternalSecret", "db").await?;
    let faster = json!({"apiVersion": "lockstep.dev/v1alpha1", "kind": "ClusterExternalSecret",
        "metadata": {"name": "shared-db"}, "spec": {"refreshTime": "1m"}});
    Api::<ClusterExternalSecret>::all(kube.clone())
        .patch("shared-db", &PatchParams::default(), &Patch::Merge(faster))
        .await?;
    let failed = wait_status(&w, "shared-db", "NamespacesProvisioned", &[&a, &c, &later, &taken]).await?;
    assert!(failed.is_empty(), "{failed:?}");
    wait_value_in(&w, &taken, "db", "k", VALUE).await?;
    // An Event on each change of the Ready reason.
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(kube.clone());
    let reasons = w
        .eventually("Events about the ClusterExternalSecret", || {
            let events = events.clone();
            async move {
                let list = events.list(&Default::default()).await.ok()?;
                let mut reasons: Vec<String> = list
                    .items
                    .into_iter()
                    .filter(|e| {
                        e.regarding.as_ref().is_some_and(|r| r.kind.as_deref() == Some("ClusterExternalSecret"))
                    })
                    .filter_map(|e| e.reason)
                    .collect();
                reasons.sort();
                reasons.dedup();
                (reasons.len() >= 2).then_some(reasons)
            }
        })
        .await?;
    assert_eq!(reasons, ["NamespacesFailed", "NamespacesProvisioned"]);
    assert!(!w.operator.logs().contains(VALUE), "no value in the log");
    Ok(())
}
