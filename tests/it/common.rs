//! What the integration tests add to the rig's helpers (`lockstep_rig`): this crate's operator
//! binary and CRDs, and the waits that read Lockstep's own kinds.

use std::path::Path;

use kube::Client;
use lockstep::api::{ExternalSecret, SecretStore};
pub use lockstep_rig::manifests::*;
pub use lockstep_rig::{Operator, TestEnv, WAIT, World, text};
use lockstep_rig::{Rig, install_crds as install};

/// The path of the operator binary cargo built for this test crate.
pub const LOCKSTEP: &str = env!("CARGO_BIN_EXE_lockstep");

/// Apply Lockstep's CRDs, as generated from its types (idempotent), and wait until established.
pub async fn install_crds(kube: &Client) -> anyhow::Result<()> {
    install(kube, &lockstep::api::crds()).await
}

/// A [`World`] of Lockstep: this crate's operator, CRDs and kinds. `World::new("sync")` comes from
/// here (the rig's `World` does not know which binary to run).
pub trait Lockstep: Sized {
    /// A fresh namespace with the CRDs and an operator watching it.
    async fn new(prefix: &str) -> anyhow::Result<Self>;

    /// [`Lockstep::new`] whose operator gets extra environment variables.
    async fn with_env(prefix: &str, operator_env: &[(&str, &str)]) -> anyhow::Result<Self>;

    /// A world on `env` whose operator reaches the apiserver through `kubeconfig` (a relay, or a
    /// control plane of the test's own) with `args`.
    async fn on(env: TestEnv, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<Self>;

    /// Wait until ExternalSecret `name`'s Ready reason is `reason` for its current generation;
    /// returns the message.
    async fn wait_reason(&self, name: &str, reason: &str) -> anyhow::Result<String>;

    /// Wait until SecretStore `name` is Ready.
    async fn wait_store_ready(&self, name: &str) -> anyhow::Result<()>;
}

impl Lockstep for World {
    async fn new(prefix: &str) -> anyhow::Result<World> {
        Self::with_env(prefix, &[]).await
    }

    async fn with_env(prefix: &str, operator_env: &[(&str, &str)]) -> anyhow::Result<World> {
        let env = Rig::get().test_env(prefix).await?;
        install_crds(&env.kube).await?;
        let operator = Operator::watching(LOCKSTEP, &env.ns, operator_env)?;
        Ok(World { env, operator })
    }

    async fn on(env: TestEnv, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<World> {
        install_crds(&env.kube).await?;
        let operator = Operator::start(LOCKSTEP, kubeconfig, args, &[])?;
        Ok(World { env, operator })
    }

    async fn wait_reason(&self, name: &str, reason: &str) -> anyhow::Result<String> {
        let api = self.api::<ExternalSecret>();
        let waited = self
            .eventually(&format!("ExternalSecret {name} reason {reason}"), || {
                let api = api.clone();
                async move {
                    let es = api.get(name).await.ok()?;
                    let generation = es.metadata.generation;
                    let c = es.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
                    // Whatever the reason, a condition message is for people: never a Debug dump.
                    assert!(
                        !c.message.contains("Status {") && !c.message.contains("Some("),
                        "ExternalSecret {name}: a Debug dump in the condition message: {}",
                        c.message
                    );
                    (c.reason == reason && c.observed_generation == generation).then_some(c.message)
                }
            })
            .await;
        if let Err(e) = waited {
            let now = api.get(name).await.ok().and_then(|es| es.status);
            anyhow::bail!("{e}\nExternalSecret {name} status at the end: {now:?}");
        }
        waited
    }

    async fn wait_store_ready(&self, name: &str) -> anyhow::Result<()> {
        let stores = self.api::<SecretStore>();
        self.eventually(&format!("SecretStore {name} Ready"), || {
            let stores = stores.clone();
            async move {
                let s = stores.get(name).await.ok()?;
                s.status?.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
            }
        })
        .await
    }
}
