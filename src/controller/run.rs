//! All controllers of one process, together.

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;

use super::{Context, Wiring, run_cluster_external_secrets, run_external_secrets, run_store_controller};
use crate::api::{ClusterSecretStore, SecretStore};

/// Run the ExternalSecret and SecretStore controllers, and the ClusterSecretStore and
/// ClusterExternalSecret controllers when the process watches every namespace, until `shutdown`
/// resolves and each has stopped.
pub async fn run(
    ctx: Arc<Context>,
    wiring: Wiring,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shutdown = shutdown.shared();
    let cluster_stores = async {
        if ctx.namespace.is_none() {
            tokio::join!(
                run_store_controller::<ClusterSecretStore>(ctx.clone(), shutdown.clone()),
                run_cluster_external_secrets(ctx.clone(), shutdown.clone()),
            );
        }
    };
    tokio::join!(
        run_external_secrets(ctx.clone(), wiring, concurrency, shutdown.clone()),
        run_store_controller::<SecretStore>(ctx.clone(), shutdown.clone()),
        cluster_stores,
    );
}
