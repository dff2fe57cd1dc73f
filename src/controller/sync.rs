//! One sync of an ExternalSecret, as its steps: resolve the store -> list the sources -> read the
//! target -> (nothing moved? stop) -> fetch -> render (pure) -> plan the target (pure) -> apply.
//! The target Secret is read once.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, Patch};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::info;

use super::stores::{ResolvedStore, Target};
use super::target::{self, Plan};
use super::{Context, write};
use crate::api::{AWSCURRENT, CreationPolicy, ExternalSecret, RefreshPolicy, SourceStatus};
use crate::error::{Error, Result};
use crate::render::{self, Desired, Values};
use crate::source::{Fetched, SourceRef, Sources};
use crate::template::TemplateObjects;

/// What a successful sync leaves behind.
pub struct Synced {
    pub sources: Vec<SourceStatus>,
    /// The data hash of the Secret (for a rollout restart's annotation).
    pub hash: String,
    /// The Secret held other data before this sync (so this is not its first).
    pub data_changed: bool,
    /// The Secret this ExternalSecret now writes (none under creationPolicy None).
    pub binding: Option<String>,
    /// The values were fetched from AWS (not the fast path, not CreatedOnce's keep).
    pub fetched: bool,
}

/// Bring the target Secret in line with AWS. `refresh`: how often the sources are checked for
/// changes (`None`: sync once).
pub async fn sync(es: &ExternalSecret, ctx: &Context, refresh: Option<Duration>) -> Result<Synced> {
    let ns = es.namespace().unwrap_or_default();
    let store_ref = &es.spec.secret_store_ref;
    let store = ctx.stores.resolve(&ns, store_ref.kind, &store_ref.name).await?;
    let sources = list_sources(es, ctx, &store, refresh).await?;
    let templates = read_templates(es, ctx).await?;
    let inputs = match &es.spec.target.template {
        Some(t) => crate::template::inputs_hash(&crate::template::resolve_from(t, &templates)?),
        None => None,
    };
    let mut found = read_target(es, ctx).await?;

    let live = |s: &SourceRef| ctx.fetcher.live(&store.id, s, &sources);
    let kept = match es.spec.refresh_policy {
        Some(RefreshPolicy::CreatedOnce) => target::created_once(es, full_target(es, ctx, &mut found).await?),
        _ => target::still_current(es, &sources.all(), live, inputs.as_deref(), found.view().as_ref()),
    };
    if let Some(kept) = kept {
        let sources = es.status.as_ref().map(|s| s.sources.clone()).unwrap_or_default();
        let binding = Some(es.target_name().to_string());
        return Ok(Synced { sources, hash: kept.hash, data_changed: false, binding, fetched: false });
    }

    let existing = full_target(es, ctx, &mut found).await?.cloned();
    let (values, sources) = fetch(es, ctx, &store, existing.as_ref(), sources).await?;
    let desired = render::render_with(&es.spec, &values, &sources.found, &templates)?;
    let synced = apply(es, ctx, existing.as_ref(), desired).await?;
    retire_previous(es, ctx).await?;
    Ok(synced)
}

/// What the spec reads, with what its finds select now (listed again at every sync: that is how
/// new matching AWS secrets are picked up). With a refresh, the named sources are registered for
/// change detection; while that cannot reach AWS, nothing can be confirmed: say so, touch nothing.
async fn list_sources(
    es: &ExternalSecret,
    ctx: &Context,
    store: &ResolvedStore,
    refresh: Option<Duration>,
) -> Result<Sources> {
    let mut sources = Sources::of(&es.spec);
    if let Some(refresh) = refresh {
        ctx.pollers.register(&store.id, &store.client, ObjectRef::from_obj(es), refresh, &sources.named);
        if let Some(why) = ctx.pollers.unavailable(&store.id) {
            return Err(Error::ProviderUnavailable(why));
        }
    }
    for (i, from) in es.spec.data_from.iter().enumerate() {
        let Some(find) = &from.find else { continue };
        let name = match &find.name {
            Some(n) => Some(regex::Regex::new(&n.regexp).map_err(|e| {
                Error::InvalidValue(format!("dataFrom[{i}].find.name.regexp is not a valid regular expression: {e}"))
            })?),
            None => None,
        };
        let mut names = Vec::new();
        // Secrets without a current version hold no value: they are not found.
        for meta in store.client.find(find, name.as_ref()).await? {
            if let Some(version) = meta.stages.get(AWSCURRENT) {
                sources.listed.insert(meta.name.clone(), version.clone());
                names.push(meta.name);
            }
        }
        sources.found.insert(i, names);
    }
    Ok(sources)
}

/// The ConfigMaps and Secrets the template's `templateFrom` names, from the ExternalSecret's
/// namespace (one that is not there is left out: rendering says so).
async fn read_templates(es: &ExternalSecret, ctx: &Context) -> Result<TemplateObjects> {
    let mut objects = TemplateObjects::default();
    let Some(template) = &es.spec.target.template else { return Ok(objects) };
    let ns = es.namespace().unwrap_or_default();
    for from in &template.template_from {
        if let Some(r) = &from.config_map
            && !objects.config_maps.contains_key(&r.name)
            && let Some(cm) = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns).get_opt(&r.name).await?
        {
            objects.config_maps.insert(r.name.clone(), cm.data.unwrap_or_default());
        }
        if let Some(r) = &from.secret
            && !objects.secrets.contains_key(&r.name)
            && let Some(s) = ctx.stores.secret(&ns, &r.name).await?
        {
            let texts = s.data.iter().flatten();
            let texts = texts.map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned())).collect();
            objects.secrets.insert(r.name.clone(), texts);
        }
    }
    Ok(objects)
}

/// The target Secret as it is now (not read under creationPolicy None, which writes nothing): a
/// view of it, without a read, while the watch shows it unchanged since the last one.
async fn read_target(es: &ExternalSecret, ctx: &Context) -> Result<Target> {
    if es.spec.target.creation_policy == CreationPolicy::None {
        return Ok(Target::Gone);
    }
    ctx.stores.target(&es.namespace().unwrap_or_default(), es.target_name()).await
}

/// The whole target Secret (its data too), read now if only its view was known.
async fn full_target<'a>(es: &ExternalSecret, ctx: &Context, found: &'a mut Target) -> Result<Option<&'a Secret>> {
    if let Target::Cached(_) = found {
        *found = match secrets(es, ctx).get_opt(es.target_name()).await? {
            Some(s) => Target::Read(s),
            None => Target::Gone,
        };
    }
    Ok(match found {
        Target::Read(s) => Some(s),
        Target::Gone | Target::Cached(_) => None,
    })
}

fn secrets(es: &ExternalSecret, ctx: &Context) -> Api<Secret> {
    Api::namespaced(ctx.client.clone(), &es.namespace().unwrap_or_default())
}

/// The values of every source. A found secret deleted since it was listed is no longer found.
/// When every named source is gone and the deletion policy says so, the Secret is deleted.
async fn fetch(
    es: &ExternalSecret,
    ctx: &Context,
    store: &ResolvedStore,
    existing: Option<&Secret>,
    mut sources: Sources,
) -> Result<(Values, Sources)> {
    let mut results = ctx.fetcher.fetch(&store.id, &store.client, &sources, target::forced(es)).await;
    let named: Vec<Result<Fetched>> = sources.named.iter().filter_map(|s| results.remove(s)).collect();
    let all_gone = !named.is_empty() && named.iter().all(|r| matches!(r, Err(Error::SecretNotFound { .. })));
    let mut values = BTreeMap::new();
    let mut deleted = false;
    if all_gone && target::delete_when_gone(es, existing) {
        let name = es.target_name();
        secrets(es, ctx).delete(name, &Default::default()).await?;
        info!(secret = %name, "deleted Secret: every AWS secret it was built from is gone (deletionPolicy Delete)");
        let note =
            format!("deleted Secret {name:?}: every AWS secret it was built from is gone (deletionPolicy Delete)");
        write::event(ctx, es, EventType::Normal, "Deleted", &note).await;
        deleted = true;
    }
    for (source, result) in sources.named.iter().cloned().zip(named) {
        match result {
            Ok(f) => values.insert(source, f),
            Err(e) if deleted => {
                return Err(Error::TargetDeleted { cause: Box::new(e), secret: es.target_name().into() });
            }
            Err(e) => return Err(e),
        };
    }
    for (source, result) in results {
        match result {
            Ok(f) => {
                values.insert(source, f);
            }
            Err(Error::SecretNotFound { .. }) => sources.lose(&source.key),
            Err(e) => return Err(e),
        }
    }
    Ok((values, sources))
}

/// Carry out the target plan.
async fn apply(es: &ExternalSecret, ctx: &Context, existing: Option<&Secret>, desired: Desired) -> Result<Synced> {
    let data_changed = match target::plan(es, existing, &desired)? {
        Plan::Keep => false,
        Plan::Apply { secret, data_changed } => {
            let written =
                secrets(es, ctx).patch(es.target_name(), &write::apply_params(), &Patch::Apply(&*secret)).await?;
            ctx.stores.keep_target(&es.namespace().unwrap_or_default(), es.target_name(), &written);
            info!(secret = %es.target_name(), "applied Secret");
            data_changed
        }
    };
    let binding = (es.spec.target.creation_policy != CreationPolicy::None).then(|| es.target_name().to_string());
    Ok(Synced { sources: desired.sources, hash: desired.hash, data_changed, binding, fetched: true })
}

/// After a rename of the target under creationPolicy Owner: delete the Secret the status says was
/// written before, when it is still ours and owned by this ExternalSecret (what garbage
/// collection would delete with it). Under other policies it stays as it is, no longer updated.
async fn retire_previous(es: &ExternalSecret, ctx: &Context) -> Result<()> {
    let Some(previous) = es.status.as_ref().and_then(|s| s.binding.as_ref()).map(|b| b.name.as_str()) else {
        return Ok(());
    };
    if previous == es.target_name() || es.spec.target.creation_policy != CreationPolicy::Owner {
        return Ok(());
    }
    let api = secrets(es, ctx);
    let Some(old) = api.get_opt(previous).await? else { return Ok(()) };
    if !target::owned_by(&old, es) {
        return Ok(());
    }
    api.delete(previous, &Default::default()).await?;
    info!(secret = %previous, "deleted the previous target Secret (target.name changed)");
    let note = format!("deleted Secret {previous:?}: target.name changed to {:?}", es.target_name());
    write::event(ctx, es, EventType::Normal, "Deleted", &note).await;
    Ok(())
}
