//! Reconcile SecretStores and ClusterSecretStores: credentials resolve and AWS answers a cheap call
//! (STS GetCallerIdentity, which needs no IAM permission).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{instrument, warn};

use super::{Context, StoreId};
use crate::api::{AwsProvider, ClusterSecretStore, SecretStore, SecretStoreStatus, StoreKind};
use crate::aws::classify;
use crate::error::{Error, Result};
use crate::status::{self, Reason};

/// How often a valid store is checked again.
const REVALIDATE: Duration = Duration::from_secs(3600);

/// Run the SecretStore controller until shutdown.
pub async fn run_stores(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let api = match &ctx.namespace {
        Some(ns) => Api::<SecretStore>::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    ctx.controller(super::SECRET_STORE, api)
        .graceful_shutdown_on(shutdown)
        .run(
            |s: Arc<SecretStore>, ctx: Arc<Context>| async move {
                let ns = s.namespace().unwrap_or_default();
                let id = StoreId { kind: StoreKind::SecretStore, namespace: Some(ns.clone()), name: s.name_any() };
                let api = Api::<SecretStore>::namespaced(ctx.client.clone(), &ns);
                reconcile(api, &*s, &s.spec.aws, s.status.as_ref(), id, Some(ns), ctx).await
            },
            error_policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

/// Run the ClusterSecretStore controller until shutdown.
pub async fn run_cluster_stores(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api = Api::<ClusterSecretStore>::all(ctx.client.clone());
    ctx.controller(super::CLUSTER_SECRET_STORE, api)
        .graceful_shutdown_on(shutdown)
        .run(
            |s: Arc<ClusterSecretStore>, ctx: Arc<Context>| async move {
                let id = StoreId { kind: StoreKind::ClusterSecretStore, namespace: None, name: s.name_any() };
                let api = Api::<ClusterSecretStore>::all(ctx.client.clone());
                reconcile(api, &*s, &s.spec.aws, s.status.as_ref(), id, None, ctx).await
            },
            error_policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

fn error_policy<K>(_s: Arc<K>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(error = %err, "store status update failed");
    Action::requeue(Duration::from_secs(5))
}

#[instrument(skip_all, fields(store = %id))]
async fn reconcile<K>(
    api: Api<K>,
    store: &K,
    aws: &AwsProvider,
    status: Option<&SecretStoreStatus>,
    id: StoreId,
    cred_ns: Option<String>,
    ctx: Arc<Context>,
) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    ctx.metrics.reconcile(K::kind(&()).as_ref());
    let outcome = validate(&ctx, &id, aws, cred_ns.as_deref()).await;
    let (reason, message) = match &outcome {
        Ok(()) => (Reason::Valid, "credentials resolve and AWS answers".to_string()),
        Err(e) => (e.reason(), e.to_string()),
    };
    let previous = status.cloned().unwrap_or_default();
    let generation = store.meta().generation;
    let next = SecretStoreStatus {
        observed_generation: generation,
        conditions: status::set_ready(&previous.conditions, reason, &message, generation, Time(jiff::Timestamp::now())),
    };
    if next != previous {
        let patch = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": next});
        api.patch_status(&store.name_any(), &PatchParams::apply(crate::MANAGER).force(), &Patch::Apply(&patch)).await?;
    }
    let key = id.to_string();
    Ok(match outcome {
        Ok(()) => {
            ctx.reset_backoff(&key);
            Action::requeue(REVALIDATE)
        }
        Err(e) if e.is_transient() => Action::requeue(ctx.backoff(&key)),
        Err(_) => Action::requeue(REVALIDATE),
    })
}

async fn validate(ctx: &Context, id: &StoreId, aws: &AwsProvider, cred_ns: Option<&str>) -> Result<()> {
    let client = ctx.store_client(id, aws, cred_ns).await?;
    client.limit.acquire().await;
    let r = client.sts.get_caller_identity().send().await;
    let err = r.as_ref().err().map(|e| classify(e, ""));
    ctx.metrics.aws_call(&id.to_string(), "GetCallerIdentity", err.as_ref());
    match err {
        None => Ok(()),
        Some(e) => Err(e),
    }
}
