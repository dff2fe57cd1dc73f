//! PURE: the Secret object to server-side apply, and whether an existing Secret is ours.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use serde_json::{Value, json};

use crate::api::{CreationPolicy, ExternalSecret, SourceStatus};
use crate::render::Desired;
use crate::{DATA_HASH_ANNOTATION, MANAGED_BY_LABEL, MANAGER, SOURCE_VERSIONS_ANNOTATION};

/// Annotation naming the ExternalSecret (same namespace) that writes a Secret.
pub const OWNER_ANNOTATION: &str = "lockstep.dev/external-secret";

/// Whether an existing Secret was written by this ExternalSecret.
pub fn is_ours(secret: &Secret, es: &ExternalSecret) -> bool {
    let meta = &secret.metadata;
    let labelled = meta.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGER);
    let named = meta.annotations.as_ref().and_then(|a| a.get(OWNER_ANNOTATION)) == es.metadata.name.as_ref();
    let foreign_controller = meta.owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && (o.kind != "ExternalSecret" || o.name.as_str() != es.metadata.name.as_deref().unwrap_or_default())
    });
    labelled && named && !foreign_controller
}

/// "key=versionId,..." for the versions annotation: ids only, never values.
pub fn versions_annotation(sources: &[SourceStatus]) -> String {
    sources.iter().map(|s| format!("{}={}", s.key, s.version_id)).collect::<Vec<_>>().join(",")
}

/// The labels and annotations the Secret must carry.
fn metadata_maps(
    es: &ExternalSecret,
    desired: &Desired,
    merge: bool,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    if !merge {
        labels.extend(desired.labels.clone());
        annotations.extend(desired.annotations.clone());
        labels.insert(MANAGED_BY_LABEL.into(), MANAGER.into());
        annotations.insert(OWNER_ANNOTATION.into(), es.metadata.name.clone().unwrap_or_default());
    }
    annotations.insert(DATA_HASH_ANNOTATION.into(), desired.hash.clone());
    annotations.insert(SOURCE_VERSIONS_ANNOTATION.into(), versions_annotation(&desired.sources));
    (labels, annotations)
}

/// Whether `existing` already holds everything `build` would apply, so the write can be skipped.
pub fn up_to_date(existing: &Secret, es: &ExternalSecret, desired: &Desired) -> bool {
    let merge = es.spec.target.creation_policy == CreationPolicy::Merge;
    let (labels, annotations) = metadata_maps(es, desired, merge);
    let has_all = |want: &BTreeMap<String, String>, have: &Option<BTreeMap<String, String>>| {
        want.iter().all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let owner_ok = es.spec.target.creation_policy != CreationPolicy::Owner
        || existing.metadata.owner_references.iter().flatten().any(|o| Some(&o.uid) == es.metadata.uid.as_ref());
    has_all(&labels, &existing.metadata.labels) && has_all(&annotations, &existing.metadata.annotations) && owner_ok
}

/// The Secret to server-side apply with field manager `lockstep`.
pub fn build(es: &ExternalSecret, namespace: &str, desired: &Desired) -> Value {
    let policy = es.spec.target.creation_policy;
    let merge = policy == CreationPolicy::Merge;
    let (labels, annotations) = metadata_maps(es, desired, merge);
    let b64 = base64::engine::general_purpose::STANDARD;
    let data: BTreeMap<&String, String> = desired.data.iter().map(|(k, v)| (k, b64.encode(v.expose()))).collect();
    let mut metadata = json!({
        "name": es.target_name(),
        "namespace": namespace,
        "annotations": annotations,
    });
    if !labels.is_empty() {
        metadata["labels"] = json!(labels);
    }
    if policy == CreationPolicy::Owner
        && let Some(owner) = es.controller_owner_ref(&())
    {
        metadata["ownerReferences"] = json!([owner]);
    }
    let mut secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "data": data,
    });
    if !merge {
        let type_ = es.spec.target.template.as_ref().and_then(|t| t.type_.clone()).unwrap_or_else(|| "Opaque".into());
        secret["type"] = json!(type_);
        if es.spec.target.immutable {
            secret["immutable"] = json!(true);
        }
    }
    secret
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ExternalSecretSpec;
    use crate::value::SecretBytes;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn es(policy: CreationPolicy) -> ExternalSecret {
        let mut es = ExternalSecret::new("app", ExternalSecretSpec::default());
        es.metadata.namespace = Some("ns".into());
        es.metadata.uid = Some("uid-1".into());
        es.spec.target.creation_policy = policy;
        es
    }

    fn desired() -> Desired {
        let mut data = BTreeMap::new();
        data.insert("password".to_string(), SecretBytes::from("s3cret".to_string()));
        Desired {
            hash: crate::render::hash(&data),
            data,
            sources: vec![SourceStatus { key: "db".into(), version_id: "v1".into(), ..Default::default() }],
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn owner_policy_sets_owner_label_and_type() {
        let s = build(&es(CreationPolicy::Owner), "ns", &desired());
        assert_eq!(s["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(s["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(s["metadata"]["labels"][MANAGED_BY_LABEL], MANAGER);
        assert_eq!(s["metadata"]["annotations"][SOURCE_VERSIONS_ANNOTATION], "db=v1");
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"]["password"], "czNjcmV0");
        let shown = s.to_string();
        assert!(!shown.contains("s3cret"));
    }

    #[test]
    fn orphan_and_merge() {
        let s = build(&es(CreationPolicy::Orphan), "ns", &desired());
        assert!(s["metadata"].get("ownerReferences").is_none());
        let s = build(&es(CreationPolicy::Merge), "ns", &desired());
        assert!(s["metadata"].get("labels").is_none());
        assert!(s.get("type").is_none());
        assert!(s["metadata"]["annotations"].get(DATA_HASH_ANNOTATION).is_some());
    }

    #[test]
    fn ownership() {
        let e = es(CreationPolicy::Owner);
        let mut secret = Secret { metadata: ObjectMeta::default(), ..Default::default() };
        assert!(!is_ours(&secret, &e), "an unlabelled Secret is not ours");
        secret.metadata.labels = Some([(MANAGED_BY_LABEL.to_string(), MANAGER.to_string())].into());
        secret.metadata.annotations = Some([(OWNER_ANNOTATION.to_string(), "other".to_string())].into());
        assert!(!is_ours(&secret, &e), "another ExternalSecret's Secret is not ours");
        secret.metadata.annotations = Some([(OWNER_ANNOTATION.to_string(), "app".to_string())].into());
        assert!(is_ours(&secret, &e));
        secret.metadata.owner_references = Some(vec![OwnerReference {
            kind: "Deployment".into(),
            name: "x".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        assert!(!is_ours(&secret, &e), "a Secret controlled by something else is not ours");
    }

    #[test]
    fn up_to_date_detects_changes() {
        let e = es(CreationPolicy::Owner);
        let d = desired();
        let v = build(&e, "ns", &d);
        let existing: Secret = serde_json::from_value(v).unwrap_or_default();
        assert!(up_to_date(&existing, &e, &d));
        let mut d2 = d.clone();
        d2.hash = "other".into();
        assert!(!up_to_date(&existing, &e, &d2));
    }
}
