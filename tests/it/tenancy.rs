//! Tenant isolation: an ExternalSecret reaches only its own namespace's SecretStore (or a
//! ClusterSecretStore that admits it, see `operator::cluster_store_conditions`), and restarts only
//! workloads of its own namespace. Credential references of a SecretStore never leave its namespace
//! (admission rows in `operator::admission_rejects_invalid_specs_with_readable_messages`).

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use lockstep_rig::{Fault, FaultProxy, Rig, eventually};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn a_store_of_the_same_name_in_another_namespace_is_never_used() -> anyhow::Result<()> {
    let rig = Rig::get();
    let w = World::new("tenant-a").await?;
    // Namespace B: a working store "aws" with its credentials.
    let b = rig.test_env("tenant-b").await?;
    apply(
        &b.kube,
        Some(&b.ns),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws-creds"},
        "stringData": {"access-key-id": "testing", "secret-access-key": "testing"}}),
    )
    .await?;
    apply(
        &b.kube,
        Some(&b.ns),
        json!({"apiVersion": "lockstep.dev/v1alpha1", "kind": "SecretStore",
        "metadata": {"name": "aws"}, "spec": {"aws": {"region": "us-east-1", "endpoint": rig.emulator.endpoint,
        "auth": {"secretRef": {"accessKeyIDSecretRef": {"name": "aws-creds", "key": "access-key-id"},
                               "secretAccessKeySecretRef": {"name": "aws-creds", "key": "secret-access-key"}}}}}}),
    )
    .await?;
    let src = w.create_aws("src", "v").await?;
    let spec = json!({"secretStoreRef": {"name": "aws"}, "refreshInterval": "1s",
                      "data": [{"secretKey": "k", "remoteRef": {"key": src}}]});

    // A has no store "aws": B's is not a fallback.
    w.external_secret("es", spec).await?;
    let msg = w.wait_reason("es", "StoreNotReady").await?;
    assert!(msg.contains(w.ns()), "{msg}");

    // A's own "aws" store (denied by AWS) is the one used, not B's working one.
    let proxy = FaultProxy::start(&rig.emulator.endpoint)?;
    proxy.set(Fault::Deny);
    w.store("aws", &proxy.endpoint, json!({})).await?;
    w.wait_reason("es", "AccessDenied").await?;
    assert!(w.secrets().get_opt("es").await?.is_none());
    proxy.set(Fault::Pass);
    w.wait_value("es", "k", "v").await?;
    Ok(())
}

#[tokio::test]
async fn rollout_restarts_stay_in_the_namespace() -> anyhow::Result<()> {
    let w = World::with_env("tenant-restart", &[("LOCKSTEP_RESTART_DEBOUNCE_SECONDS", "1")]).await?;
    let other = Rig::get().test_env("tenant-other").await?;
    w.store("aws", &Rig::get().emulator.endpoint, json!({})).await?;
    w.deployment("api").await?;
    // The same Deployment name in another namespace.
    apply(
        &other.kube,
        Some(&other.ns),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "spec": {"selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "c", "image": "example.invalid/app:1"}]}}}}),
    )
    .await?;
    let theirs = Api::<Deployment>::namespaced(other.kube.clone(), &other.ns);
    let before = theirs.get("api").await?.metadata.resource_version;

    let src = w.create_aws("env", "v1").await?;
    w.external_secret(
        "es",
        json!({"secretStoreRef": {"name": "aws"}, "refreshInterval": "1s",
        "rolloutRestartTargets": [{"kind": "Deployment", "name": "api"}],
        "data": [{"secretKey": "k", "remoteRef": {"key": src}}]}),
    )
    .await?;
    w.wait_value("es", "k", "v1").await?;
    w.env.aws.put_secret_value().secret_id(&src).secret_string("v2").send().await?;
    w.wait_value("es", "k", "v2").await?;
    let ours = Api::<Deployment>::namespaced(w.env.kube.clone(), w.ns());
    eventually(WAIT, "our Deployment restarted", || {
        let ours = ours.clone();
        async move {
            let d = ours.get("api").await.ok()?;
            d.spec.template.metadata?.annotations?.contains_key("lockstep.dev/restarted-for").then_some(())
        }
    })
    .await?;
    let after = theirs.get("api").await?;
    assert_eq!(after.metadata.resource_version, before, "a Deployment of another namespace must not be touched");
    Ok(())
}
