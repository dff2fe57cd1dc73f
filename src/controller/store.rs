//! Reconcile SecretStores and ClusterSecretStores (one controller for both kinds): credentials
//! resolve and AWS answers a cheap call (STS GetCallerIdentity, which needs no IAM permission).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::{instrument, warn};

use super::{Context, Store, write};
use crate::api::{SecretStoreStatus, StoreKind};
use crate::error::{Error, Result};
use crate::status::{self, Reason};

/// How often a valid store is checked again.
const REVALIDATE: Duration = Duration::from_secs(3600);

/// The controller of a store kind, as readiness names it.
pub fn controller_name(kind: StoreKind) -> &'static str {
    match kind {
        StoreKind::SecretStore => "SecretStore",
        StoreKind::ClusterSecretStore => "ClusterSecretStore",
    }
}

/// Run the controller of store kind `S` until shutdown.
pub async fn run<S: Store>(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let api = S::watch_api(&ctx.client, ctx.namespace.as_deref());
    // A store whose event queue started or stopped answering writes its status again.
    let news = futures::stream::unfold(ctx.pollers.store_news(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(id) if id.kind == S::KIND => return Some((S::ref_of(&id), rx)),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    ctx.controller(controller_name(S::KIND), api)
        .reconcile_on(news)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<S>, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy<K>(_s: Arc<K>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(error = %err, "store status update failed");
    Action::requeue(Duration::from_secs(5))
}

#[instrument(skip_all, fields(store = %store.id()))]
async fn reconcile<S: Store>(store: Arc<S>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconcile(controller_name(S::KIND));
    let id = store.id();
    let outcome = validate(&ctx, &*store).await;
    let (reason, message) = match &outcome {
        Ok(message) => (Reason::Valid, message.clone()),
        Err(e) => (e.reason(), e.to_string()),
    };
    let previous = store.status().cloned().unwrap_or_default();
    let generation = store.meta().generation;
    let now = Time(jiff::Timestamp::now());
    let conditions = status::set_ready(&previous.conditions, reason, &message, generation, now.clone());
    let events = ctx.pollers.events_status(&id);
    let configured = store.provider().events.is_some();
    let conditions = status::set_events(&conditions, configured, events.as_ref(), generation, now);
    let next = SecretStoreStatus { capabilities: Some("ReadOnly".into()), observed_generation: generation, conditions };
    if next != previous {
        write::apply_status(&store.own_api(&ctx.client), &store.name_any(), &next).await?;
    }
    ctx.metrics.object_status(&super::object_key(&*store), reason, None);
    let next = ctx.backoff.settle(&id.to_string(), outcome.as_ref().err(), None);
    Ok(status::next_action(next, Some(REVALIDATE)))
}

/// The identity the store's credentials resolve to (STS GetCallerIdentity: an ARN, never a key).
/// A referent store has none of its own: each namespace's are checked when its ExternalSecrets sync.
async fn validate<S: Store>(ctx: &Context, store: &S) -> Result<String> {
    if store.referent() {
        return Ok(String::from(
            "referent: each ExternalSecret's credentials are read from its own namespace and checked when it syncs",
        ));
    }
    let cred_ns = store.credential_namespace();
    let client = ctx.stores.client_for(&store.id(), store.provider(), cred_ns.as_deref()).await?;
    let identity = client.caller_identity().await?;
    Ok(format!("credentials resolve to {identity} and AWS answers"))
}
