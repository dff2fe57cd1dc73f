//! Tenant isolation: an ExternalSecret reaches only its own namespace's SecretStore (or a
//! ClusterSecretStore that admits it, see `operator::cluster_store_conditions`). Also: credential
//! references of a SecretStore never leave its namespace (admission rows in
//! `operator::admission_rejects_invalid_specs_with_readable_messages`, refused again at runtime:
//! `controller::tests`), and rollout restarts touch only workloads of the ExternalSecret's namespace
//! (`operator::rollout_restart_once_per_burst_and_never_on_first_sync`).

use lockstep_rig::{Fault, FaultProxy, Rig};

use crate::common::*;

#[tokio::test]
async fn a_store_of_the_same_name_in_another_namespace_is_never_used() -> anyhow::Result<()> {
    let rig = Rig::get();
    let w = World::new("tenant-a").await?;
    // Namespace B: a working store "aws" with its credentials.
    let b = rig.test_env("tenant-b").await?;
    b.store(secret_store("aws", &rig.emulator.endpoint)).await?;
    let src = w.create_aws("src", "v").await?;

    // A has no store "aws": B's is not a fallback.
    w.external_secret("es", es("aws").refresh("1s").key("k", &src)).await?;
    let msg = w.wait_reason("es", "StoreNotReady").await?;
    assert!(msg.contains(w.ns()), "{msg}");

    // A's own "aws" store (denied by AWS) is the one used, not B's working one.
    let proxy = FaultProxy::start(&rig.emulator.endpoint)?;
    proxy.set(Fault::Deny);
    w.store(secret_store("aws", &proxy.endpoint)).await?;
    w.wait_reason("es", "AccessDenied").await?;
    assert!(w.secrets().get_opt("es").await?.is_none());
    proxy.set(Fault::Pass);
    w.wait_value("es", "k", "v").await?;
    Ok(())
}
