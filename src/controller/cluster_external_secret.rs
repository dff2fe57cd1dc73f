//! The ClusterExternalSecret controller (cluster scope only): one ExternalSecret per selected
//! namespace, created and owned; followed on namespace creation, relabelling and deletion, on
//! changes of the ExternalSecrets it owns, and every `refreshTime`. What to do is
//! [`super::provision`]'s decision; this module reads the cluster and carries it out.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::provision::{self, NamespaceView};
use super::{CLUSTER_EXTERNAL_SECRET, Context, watch, write};
use crate::api::{
    CLUSTER_EXTERNAL_SECRET_LABEL, ClusterExternalSecret, ClusterExternalSecretNamespaceFailure as Failure,
    DEFAULT_NAMESPACE_REFRESH, ExternalSecret,
};
use crate::error::{Error, Result};
use crate::status;

/// Run the ClusterExternalSecret controller until shutdown.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let controller = ctx.controller(CLUSTER_EXTERNAL_SECRET, Api::<ClusterExternalSecret>::all(client.clone()));
    let reader = controller.store();
    // Only the ExternalSecrets carrying the label are watched; their owner references say whose
    // they are (their status writes, every sync, trigger nothing). A namespace created, relabelled
    // or deleted may change what every ClusterExternalSecret selects.
    let ours = watcher::Config::default().labels(CLUSTER_EXTERNAL_SECRET_LABEL);
    let owned = watch::spec_changes(Api::<PartialObjectMeta<ExternalSecret>>::all(client.clone()), ours);
    let namespaces = watch::spec_changes(Api::<PartialObjectMeta<Namespace>>::all(client), watcher::Config::default());
    // A cluster-scoped owner: named by the owner reference alone (the runtime's `owns` would look
    // for it in the child's namespace).
    let owners = |es: PartialObjectMeta<ExternalSecret>| {
        let owners = es.metadata.owner_references.unwrap_or_default();
        owners
            .into_iter()
            .filter(|o| o.controller == Some(true) && o.kind == ClusterExternalSecret::kind(&()))
            .map(|o| ObjectRef::<ClusterExternalSecret>::new(&o.name))
            .collect::<Vec<_>>()
    };
    controller
        .watches_stream(owned, owners)
        .watches_stream(namespaces, move |_| {
            reader.state().iter().map(|c| ObjectRef::from_obj(&**c)).collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "ClusterExternalSecret reconcile failed");
            }
        })
        .await;
}

/// A failed read of the cluster or a failed status write: try again soon.
fn error_policy(_ces: Arc<ClusterExternalSecret>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(error = %err, "ClusterExternalSecret not reconciled");
    Action::requeue(Duration::from_secs(5))
}

#[instrument(skip_all, fields(name = ces.name_any()))]
async fn reconcile(ces: Arc<ClusterExternalSecret>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconcile(CLUSTER_EXTERNAL_SECRET);
    if ces.metadata.deletion_timestamp.is_some() {
        // Garbage collection is deleting what it owns (a foreground deletion): create nothing.
        return Ok(Action::await_change());
    }
    let key = format!("ClusterExternalSecret {}", ces.name_any());
    // Admission refuses an invalid refreshTime; one that got in before the rule is the default.
    let refresh = ces.spec.refresh().unwrap_or(DEFAULT_NAMESPACE_REFRESH);
    let (namespaces, existing) = observe(&ctx, &ces).await?;
    let plan = provision::plan(&ces, &namespaces, &existing);

    let mut provisioned = plan.keep;
    let mut failed = plan.failed;
    let mut transient = None;
    for ns in plan.apply {
        let want = provision::desired(&ces, &ns);
        let api = Api::<ExternalSecret>::namespaced(ctx.client.clone(), &ns);
        match api.patch(ces.external_secret_name(), &write::apply_params(), &Patch::Apply(&want)).await {
            Ok(_) => {
                info!(namespace = %ns, "ExternalSecret applied");
                provisioned.push(ns);
            }
            Err(e) => {
                let e = Error::from(e);
                warn!(namespace = %ns, error = %e, "cannot apply the ExternalSecret");
                failed.push(Failure { namespace: ns, reason: Some(format!("cannot apply the ExternalSecret: {e}")) });
                transient.get_or_insert(e);
            }
        }
    }
    for (ns, name, uid) in plan.delete {
        // Only the one read, never another of the same name created since.
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(uid), ..Default::default() }),
            ..Default::default()
        };
        match Api::<ExternalSecret>::namespaced(ctx.client.clone(), &ns).delete(&name, &params).await {
            Ok(_) => {
                info!(namespace = %ns, external_secret = %name, "ExternalSecret deleted: the namespace is no longer selected")
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                let e = Error::from(e);
                warn!(namespace = %ns, error = %e, "cannot delete the ExternalSecret");
                let reason = format!("cannot delete ExternalSecret {name:?}, no longer selected: {e}");
                failed.push(Failure { namespace: ns, reason: Some(reason) });
                transient.get_or_insert(e);
            }
        }
    }

    let previous = ces.status.clone().unwrap_or_default();
    let (next, reason, message) =
        provision::status_after(&ces, &previous, provisioned, failed, Time(jiff::Timestamp::now()));
    if next != previous {
        write::apply_status(&Api::<ClusterExternalSecret>::all(ctx.client.clone()), &ces.name_any(), &next).await?;
    }
    if status::ready_reason(&previous.conditions) != Some(reason.as_str()) {
        let type_ = if reason.is_ready() { EventType::Normal } else { EventType::Warning };
        write::event(&ctx, &*ces, type_, reason.as_str(), &message).await;
        info!(reason = %reason, "ready condition changed");
    }
    let next = ctx.backoff.settle(&key, transient.as_ref(), None);
    Ok(status::next_action(next, Some(refresh)))
}

/// Every namespace (metadata only), and the ExternalSecrets that matter to `ces`: those labelled
/// as its own (whatever their name), and those of its ExternalSecret name in any namespace
/// (which may be in the way).
async fn observe(ctx: &Context, ces: &ClusterExternalSecret) -> Result<(Vec<NamespaceView>, Vec<ExternalSecret>)> {
    let namespaces = Api::<Namespace>::all(ctx.client.clone()).list_metadata(&ListParams::default()).await?;
    let namespaces = namespaces
        .items
        .into_iter()
        .map(|ns| NamespaceView {
            terminating: ns.metadata.deletion_timestamp.is_some(),
            labels: ns.metadata.labels.clone().unwrap_or_default(),
            name: ns.name_any(),
        })
        .collect();
    let api = Api::<ExternalSecret>::all(ctx.client.clone());
    let labelled = ListParams::default().labels(&format!("{CLUSTER_EXTERNAL_SECRET_LABEL}={}", ces.name_any()));
    let named = ListParams::default().fields(&format!("metadata.name={}", ces.external_secret_name()));
    let mut existing = api.list(&labelled).await?.items;
    for es in api.list(&named).await?.items {
        if !existing.iter().any(|e| e.uid() == es.uid()) {
            existing.push(es);
        }
    }
    Ok((namespaces, existing))
}
