//! All controllers of one process, together.

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;

use super::{Context, run_cluster_stores, run_external_secrets, run_stores};

/// Run the ExternalSecret and SecretStore controllers, and the ClusterSecretStore controller when
/// the process watches every namespace, until `shutdown` resolves and each has stopped.
pub async fn run(ctx: Arc<Context>, concurrency: u16, shutdown: impl Future<Output = ()> + Send + 'static) {
    let shutdown = shutdown.shared();
    let cluster_stores = async {
        if ctx.namespace.is_none() {
            run_cluster_stores(ctx.clone(), shutdown.clone()).await;
        }
    };
    tokio::join!(
        run_external_secrets(ctx.clone(), concurrency, shutdown.clone()),
        run_stores(ctx.clone(), shutdown.clone()),
        cluster_stores,
    );
}
