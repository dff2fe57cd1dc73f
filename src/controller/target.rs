//! PURE: what to do with the target Secret. Whether an existing Secret is ours, the Secret to
//! server-side apply, the plan (keep, apply, or refuse) from the creation policy and what exists,
//! the deletion rule, and the fast path of a refresh.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::api::{CreationPolicy, DeletionPolicy, ExternalSecret, SourceStatus};
use crate::codec::data_hash;
use crate::error::{Error, Result};
use crate::render::Desired;
use crate::source::{SourceRef, Version};
use crate::status::{self, Reason};
use crate::value::SecretBytes;
use crate::{DATA_HASH_ANNOTATION, MANAGED_BY_LABEL, MANAGER, SOURCE_VERSIONS_ANNOTATION, TEMPLATE_INPUTS_ANNOTATION};

/// The label ESO puts on every Secret it manages.
pub const ESO_MANAGED_LABEL: &str = "reconcile.external-secrets.io/managed";

/// Annotations of an ExternalSecret that are not copied to its Secret: kubectl's record of the
/// ExternalSecret itself, and Lockstep's own requests to it (`lockstep refresh`).
const NOT_COPIED: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration", crate::REFRESH_ANNOTATION];

/// Annotation naming the ExternalSecret (same namespace) that writes a Secret.
pub const OWNER_ANNOTATION: &str = "lockstep.dev/external-secret";

/// What a sync does with the target Secret.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Write nothing: creationPolicy None, or the Secret already holds everything that would be
    /// written.
    Keep,
    /// Server-side apply `secret`. `data_changed`: the Secret held other data before (so this is
    /// not its first sync).
    Apply { secret: Box<Secret>, data_changed: bool },
}

fn labelled_ours(secret: &Secret) -> bool {
    secret.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGER)
}

/// Whether an existing Secret was written by this ExternalSecret.
pub fn is_ours(secret: &Secret, es: &ExternalSecret) -> bool {
    let meta = &secret.metadata;
    let labelled = labelled_ours(secret);
    let named = meta.annotations.as_ref().and_then(|a| a.get(OWNER_ANNOTATION)) == es.metadata.name.as_ref();
    let foreign_controller = meta.owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && (o.kind != "ExternalSecret" || o.name.as_str() != es.metadata.name.as_deref().unwrap_or_default())
    });
    labelled && named && !foreign_controller
}

/// Whether `secret` is ours and owned by this very ExternalSecret (its uid): what garbage
/// collection deletes with it.
pub fn owned_by(secret: &Secret, es: &ExternalSecret) -> bool {
    is_ours(secret, es)
        && secret.metadata.owner_references.iter().flatten().any(|o| Some(&o.uid) == es.metadata.uid.as_ref())
}

/// The plan for `desired` given the Secret that exists now (`None`: none).
pub fn plan(es: &ExternalSecret, existing: Option<&Secret>, desired: &Desired) -> Result<Plan> {
    let name = es.target_name();
    let policy = es.spec.target.creation_policy;
    match (existing, policy) {
        (_, CreationPolicy::None) => return Ok(Plan::Keep),
        (None, CreationPolicy::Merge) => {
            return Err(Error::TargetConflict(format!(
                "creationPolicy Merge needs an existing Secret {name:?}; create it first or use creationPolicy Owner"
            )));
        }
        (Some(s), CreationPolicy::Owner | CreationPolicy::Orphan) if !is_ours(s, es) && !left_by_eso(s) => {
            return Err(Error::TargetConflict(format!(
                "Secret {name:?} already exists and is not managed by this ExternalSecret; delete it, set target.name to another name, or use creationPolicy Merge"
            )));
        }
        _ => {}
    }
    if let Some(s) = existing {
        if up_to_date(s, es, desired) {
            return Ok(Plan::Keep);
        }
        if s.immutable == Some(true) && hash_of(s) != Some(desired.hash.as_str()) {
            return Err(Error::TargetConflict(format!(
                "Secret {name:?} is immutable and its data changed; delete it so it can be written again"
            )));
        }
    }
    let data_changed = existing.and_then(hash_of).is_some_and(|h| h != desired.hash);
    Ok(Plan::Apply { secret: Box::new(desired_secret(es, desired)), data_changed })
}

/// Whether the Secret goes because every AWS secret it is built from is gone: deletionPolicy
/// Delete, and the Secret exists and is ours.
pub fn delete_when_gone(es: &ExternalSecret, existing: Option<&Secret>) -> bool {
    es.spec.target.deletion_policy == DeletionPolicy::Delete && existing.is_some_and(|s| is_ours(s, es))
}

/// The fast path of a refresh: nothing changed since the last sync (same generation, every
/// source still at the version that is live, the Secret intact), so nothing is fetched. `live`
/// says which version is live behind a source, as far as is known. Returns the Secret's data hash
/// when the sync can stop here.
pub fn still_current(
    es: &ExternalSecret,
    sources: &[SourceRef],
    live: impl Fn(&SourceRef) -> Option<String>,
    inputs: Option<&str>,
    existing: Option<&TargetView>,
) -> Option<Kept> {
    let view = existing?;
    current_with(es, sources, live, inputs, &view.secret(), view.data_matches_hash)
}

/// [`still_current`] on the Secret's metadata (`secret`) and whether its data matched its hash.
fn current_with(
    es: &ExternalSecret,
    sources: &[SourceRef],
    live: impl Fn(&SourceRef) -> Option<String>,
    inputs: Option<&str>,
    secret: &Secret,
    data_matches_hash: bool,
) -> Option<Kept> {
    let status = es.status.as_ref()?;
    let policy = es.spec.target.creation_policy;
    let settled = matches!(policy, CreationPolicy::Owner | CreationPolicy::Orphan)
        && status.observed_generation == es.metadata.generation
        && status.synced_resource_version.as_deref() == Some(metadata_version(es).as_str())
        && status::ready_reason(&status.conditions) == Some(Reason::SecretSynced.as_str())
        && status.sources.len() == sources.len();
    if !settled {
        return None;
    }
    for s in sources {
        let seen = status.sources.iter().find(|l| {
            l.key == s.key
                && match &s.version {
                    Version::Stage(stage) => l.version_stage.as_deref() == Some(stage.as_str()),
                    Version::Id(id) => l.version_stage.is_none() && l.version_id == *id,
                    // Tags move without a new version: never known to be current.
                    Version::Tags => false,
                }
        })?;
        if live(s).as_deref() != Some(seen.version_id.as_str()) {
            return None;
        }
    }
    let annotations = secret.metadata.annotations.as_ref()?;
    let hash = hash_of(secret)?.to_string();
    let intact = data_matches_hash
        && is_ours(secret, es)
        && annotations.get(SOURCE_VERSIONS_ANNOTATION) == Some(&versions_annotation(&status.sources))
        && annotations.get(TEMPLATE_INPUTS_ANNOTATION).map(String::as_str) == inputs;
    intact.then_some(Kept { hash })
}

/// What the fast path needs of the target Secret: the parts of its metadata [`still_current`]
/// reads (resource version, our label, `lockstep.dev/` annotations, controller owner
/// references), and whether its data matched its hash annotation when it was read. The same
/// resource version is the same data, so a view kept while the watch shows that resource version
/// answers without reading the Secret. One is kept per target, so it holds nothing else.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetView {
    resource_version: Option<String>,
    /// The value of our managed-by label.
    managed_by: Option<String>,
    /// The `lockstep.dev/` annotations (None: the Secret had no annotations at all).
    annotations: Option<Box<[(String, String)]>>,
    /// Its controller owner references.
    controllers: Box<[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]>,
    pub data_matches_hash: bool,
}

impl TargetView {
    pub fn of(secret: &Secret) -> Self {
        let data_matches_hash = hash_of(secret) == Some(data_hash(&data_of(secret)).as_str());
        let meta = &secret.metadata;
        let ours = |(k, v): (&String, &String)| k.starts_with("lockstep.dev/").then(|| (k.clone(), v.clone()));
        Self {
            resource_version: meta.resource_version.clone(),
            managed_by: meta.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL)).cloned(),
            annotations: meta.annotations.as_ref().map(|a| a.iter().filter_map(ours).collect()),
            controllers: meta
                .owner_references
                .iter()
                .flatten()
                .filter(|o| o.controller == Some(true))
                .cloned()
                .collect(),
            data_matches_hash,
        }
    }

    pub fn resource_version(&self) -> Option<String> {
        self.resource_version.clone()
    }

    /// The Secret as far as the fast path reads it: that metadata, no data.
    pub fn secret(&self) -> Secret {
        let metadata = ObjectMeta {
            resource_version: self.resource_version.clone(),
            labels: self.managed_by.as_ref().map(|v| [(MANAGED_BY_LABEL.to_string(), v.clone())].into()),
            annotations: self.annotations.as_ref().map(|a| a.iter().cloned().collect()),
            owner_references: (!self.controllers.is_empty()).then(|| self.controllers.to_vec()),
            ..Default::default()
        };
        Secret { metadata, ..Default::default() }
    }
}

/// A Secret left as it is by the fast path.
#[derive(Debug, PartialEq)]
pub struct Kept {
    /// Its data hash (what a rollout restart records).
    pub hash: String,
}

/// refreshPolicy CreatedOnce: the Secret is written once; while it exists and is ours (after a
/// successful sync of this spec), it is left as it is.
pub fn created_once(es: &ExternalSecret, existing: Option<&Secret>) -> Option<Kept> {
    let status = es.status.as_ref()?;
    let secret = existing?;
    let synced = status.refresh_time.is_some() && status.observed_generation == es.metadata.generation;
    (synced && is_ours(secret, es)).then(|| Kept { hash: data_hash(&data_of(secret)) })
}

/// ESO's `status.syncedResourceVersion`: the generation and a hash of the labels and annotations,
/// so that a change of either (a `force-sync` annotation) is a reason to sync again.
pub fn metadata_version(es: &ExternalSecret) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for map in [&es.metadata.labels, &es.metadata.annotations] {
        for (k, v) in map.iter().flatten() {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
            h.update((v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        }
        h.update([0xff]);
    }
    let hash = hex::encode(h.finalize());
    format!("{}-{}", es.metadata.generation.unwrap_or_default(), &hash[..16])
}

/// Whether this sync was forced by a change of the ExternalSecret's labels or annotations alone
/// (ESO's `force-sync`): the spec is the one last synced, its metadata is not. Such a sync reads
/// AWS afresh, not the values held in memory.
pub fn forced(es: &ExternalSecret) -> bool {
    es.status.as_ref().is_some_and(|s| {
        s.observed_generation == es.metadata.generation
            && s.synced_resource_version.as_deref().is_some_and(|v| v != metadata_version(es))
    })
}

/// Whether `secret` is what ESO leaves when its ExternalSecret is deleted with
/// `--cascade=orphan`: ESO's managed label, no controller owner, not ours. Lockstep adopts it in
/// place (labels and owner reference; the data it would write identically stays as it is).
pub fn left_by_eso(secret: &Secret) -> bool {
    let meta = &secret.metadata;
    let eso = meta.labels.as_ref().and_then(|l| l.get(ESO_MANAGED_LABEL)).map(String::as_str) == Some("true");
    let controlled = meta.owner_references.iter().flatten().any(|o| o.controller == Some(true));
    eso && !controlled && !labelled_ours(secret)
}

fn hash_of(secret: &Secret) -> Option<&str> {
    secret.metadata.annotations.as_ref()?.get(DATA_HASH_ANNOTATION).map(String::as_str)
}

fn data_of(secret: &Secret) -> BTreeMap<String, SecretBytes> {
    secret.data.iter().flatten().map(|(k, v)| (k.clone(), SecretBytes::new(v.0.clone()))).collect()
}

/// "key=versionId,..." for the versions annotation: ids only, never values.
pub fn versions_annotation(sources: &[SourceStatus]) -> String {
    sources.iter().map(|s| format!("{}={}", s.key, s.version_id)).collect::<Vec<_>>().join(",")
}

/// The labels and annotations the Secret must carry: the template's, or (ESO's rule) the
/// ExternalSecret's own when the template has no metadata; then ours.
fn metadata_maps(es: &ExternalSecret, desired: &Desired) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    let templated = es.spec.target.template.as_ref().is_some_and(|t| {
        t.metadata.is_some() || t.template_from.iter().any(|f| f.target != crate::api::TemplateTarget::Data)
    });
    if templated {
        labels.extend(desired.labels.clone());
        annotations.extend(desired.annotations.clone());
    } else {
        labels.extend(es.metadata.labels.clone().unwrap_or_default());
        let own = es.metadata.annotations.iter().flatten().filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()));
        annotations.extend(own.map(|(k, v)| (k.clone(), v.clone())));
    }
    if es.spec.target.creation_policy == CreationPolicy::Merge {
        // The Secret is not ours: never our label, whatever the ExternalSecret carries.
        labels.remove(MANAGED_BY_LABEL);
    } else {
        labels.insert(MANAGED_BY_LABEL.into(), MANAGER.into());
        annotations.insert(OWNER_ANNOTATION.into(), es.metadata.name.clone().unwrap_or_default());
    }
    annotations.insert(DATA_HASH_ANNOTATION.into(), desired.hash.clone());
    annotations.insert(SOURCE_VERSIONS_ANNOTATION.into(), versions_annotation(&desired.sources));
    if let Some(inputs) = &desired.inputs {
        annotations.insert(TEMPLATE_INPUTS_ANNOTATION.into(), inputs.clone());
    }
    (labels, annotations)
}

/// Whether `existing` already is what [`desired_secret`] would apply (metadata and owner), so the
/// write can be skipped. The data is compared through its hash annotation.
fn up_to_date(existing: &Secret, es: &ExternalSecret, desired: &Desired) -> bool {
    let (labels, annotations) = metadata_maps(es, desired);
    let has_all = |want: &BTreeMap<String, String>, have: &Option<BTreeMap<String, String>>| {
        want.iter().all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let owned = existing.metadata.owner_references.iter().flatten().any(|o| Some(&o.uid) == es.metadata.uid.as_ref());
    let owner_ok = match es.spec.target.creation_policy {
        CreationPolicy::Owner => owned,
        // Orphan keeps the Secret when the ExternalSecret goes: an owner reference of ours (from
        // an earlier Owner) must be removed, or garbage collection deletes it.
        CreationPolicy::Orphan => !owned,
        // Merge adds keys to a Secret it does not own: no owner reference, and not our label.
        CreationPolicy::Merge => !owned && !labelled_ours(existing),
        CreationPolicy::None => true,
    };
    has_all(&labels, &existing.metadata.labels) && has_all(&annotations, &existing.metadata.annotations) && owner_ok
}

/// The Secret to server-side apply with field manager `lockstep`: only the fields this
/// ExternalSecret owns (under Merge: its keys and annotations, nothing else).
pub fn desired_secret(es: &ExternalSecret, desired: &Desired) -> Secret {
    let policy = es.spec.target.creation_policy;
    let merge = policy == CreationPolicy::Merge;
    let (labels, annotations) = metadata_maps(es, desired);
    let owner = match policy {
        CreationPolicy::Owner => es.controller_owner_ref(&()).map(|o| vec![o]),
        _ => None,
    };
    let metadata = ObjectMeta {
        name: Some(es.target_name().to_string()),
        namespace: es.metadata.namespace.clone(),
        labels: (!labels.is_empty()).then_some(labels),
        annotations: Some(annotations),
        owner_references: owner,
        ..Default::default()
    };
    let data = desired.data.iter().map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec()))).collect();
    let type_ = es.spec.target.template.as_ref().and_then(|t| t.type_.clone()).unwrap_or_else(|| "Opaque".into());
    Secret {
        metadata,
        data: Some(data),
        type_: (!merge).then_some(type_),
        immutable: (!merge && es.spec.target.immutable).then_some(true),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
