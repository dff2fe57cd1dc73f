//! Tables of the target decisions: every creation policy and deletion policy against the Secrets
//! that can exist, and the fast path.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

use super::*;
use crate::api::{CreationPolicy, DeletionPolicy, ExternalSecret, ExternalSecretSpec, ExternalSecretStatus};
use crate::source::SourceRef;
use crate::value::SecretBytes;

fn es(policy: CreationPolicy) -> ExternalSecret {
    let mut es = ExternalSecret::new("app", ExternalSecretSpec::default());
    es.metadata.namespace = Some("ns".into());
    es.metadata.uid = Some("uid-1".into());
    es.metadata.generation = Some(1);
    es.spec.target.creation_policy = policy;
    es
}

fn desired(value: &str) -> Desired {
    let data: BTreeMap<String, SecretBytes> = [("password".to_string(), SecretBytes::from(value.to_string()))].into();
    Desired {
        hash: data_hash(&data),
        data,
        sources: vec![SourceStatus { key: "db".into(), version_id: "v1".into(), ..Default::default() }],
        ..Default::default()
    }
}

/// The Secrets a sync can find in place of its target.
#[derive(Clone, Copy, Debug)]
enum Existing {
    Absent,
    /// Written by this ExternalSecret under `policy`, holding `value`.
    Ours(CreationPolicy, &'static str),
    /// Ours, but immutable.
    OursImmutable(&'static str),
    /// A Secret nobody here wrote.
    Foreign,
    /// Labelled ours but controlled by something else.
    ControlledElsewhere,
}

fn secret(existing: Existing) -> Option<Secret> {
    let written = |policy, value| {
        let mut s = desired_secret(&es(policy), &desired(value));
        s.metadata.resource_version = Some("7".into());
        s
    };
    match existing {
        Existing::Absent => None,
        Existing::Ours(policy, value) => Some(written(policy, value)),
        Existing::OursImmutable(value) => {
            let mut s = written(CreationPolicy::Owner, value);
            s.immutable = Some(true);
            Some(s)
        }
        Existing::Foreign => Some(Secret {
            metadata: ObjectMeta { name: Some("app".into()), ..Default::default() },
            ..Default::default()
        }),
        Existing::ControlledElsewhere => {
            let mut s = written(CreationPolicy::Owner, "old");
            s.metadata.owner_references = Some(vec![OwnerReference {
                kind: "Deployment".into(),
                name: "x".into(),
                controller: Some(true),
                ..Default::default()
            }]);
            Some(s)
        }
    }
}

/// What the plan should be: keep, apply (data changed or not, owned or not), or a conflict.
#[derive(Debug, PartialEq)]
enum Want {
    Keep,
    Apply { data_changed: bool, owner: bool },
    Conflict,
}

fn outcome(policy: CreationPolicy, existing: Existing) -> Want {
    let e = es(policy);
    match plan(&e, secret(existing).as_ref(), &desired("new")) {
        Ok(Plan::Keep) => Want::Keep,
        Ok(Plan::Apply { secret, data_changed }) => {
            Want::Apply { data_changed, owner: secret.metadata.owner_references.is_some_and(|o| !o.is_empty()) }
        }
        Err(Error::TargetConflict(_)) => Want::Conflict,
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[test]
fn plan_for_every_creation_policy_and_existing_secret() {
    use CreationPolicy::{Merge, None as Nothing, Orphan, Owner};
    use Existing::*;
    let first = |owner| Want::Apply { data_changed: false, owner };
    let change = |owner| Want::Apply { data_changed: true, owner };
    let rows: &[(CreationPolicy, Existing, Want)] = &[
        (Owner, Absent, first(true)),
        (Owner, Ours(Owner, "new"), Want::Keep),
        (Owner, Ours(Owner, "old"), change(true)),
        (Owner, Ours(Orphan, "new"), first(true)),
        (Owner, OursImmutable("new"), Want::Keep),
        (Owner, OursImmutable("old"), Want::Conflict),
        (Owner, Foreign, Want::Conflict),
        (Owner, ControlledElsewhere, Want::Conflict),
        (Orphan, Absent, first(false)),
        (Orphan, Ours(Orphan, "new"), Want::Keep),
        (Orphan, Ours(Orphan, "old"), change(false)),
        // Owner -> Orphan: the owner reference goes, or deleting the ExternalSecret deletes it.
        (Orphan, Ours(Owner, "new"), first(false)),
        (Orphan, Foreign, Want::Conflict),
        (Orphan, ControlledElsewhere, Want::Conflict),
        (Merge, Absent, Want::Conflict),
        (Merge, Foreign, first(false)),
        // Owner -> Merge: the Secret is no longer ours to own; ownership and our label go.
        (Merge, Ours(Owner, "new"), first(false)),
        (Merge, Ours(Owner, "old"), change(false)),
        (Merge, Ours(Merge, "new"), Want::Keep),
        (Nothing, Absent, Want::Keep),
        (Nothing, Foreign, Want::Keep),
        (Nothing, Ours(Owner, "old"), Want::Keep),
    ];
    for (policy, existing, want) in rows {
        assert_eq!(&outcome(*policy, *existing), want, "{policy:?} over {existing:?}");
    }
}

#[test]
fn delete_when_gone_for_every_deletion_policy_and_existing_secret() {
    use Existing::*;
    let rows: &[(DeletionPolicy, Existing, bool)] = &[
        (DeletionPolicy::Delete, Ours(CreationPolicy::Owner, "v"), true),
        (DeletionPolicy::Delete, Ours(CreationPolicy::Orphan, "v"), true),
        (DeletionPolicy::Delete, Absent, false),
        (DeletionPolicy::Delete, Foreign, false),
        (DeletionPolicy::Delete, ControlledElsewhere, false),
        (DeletionPolicy::Retain, Ours(CreationPolicy::Owner, "v"), false),
        (DeletionPolicy::Retain, Absent, false),
        (DeletionPolicy::Retain, Foreign, false),
    ];
    for (deletion, existing, want) in rows {
        let mut e = es(CreationPolicy::Owner);
        e.spec.target.deletion_policy = *deletion;
        assert_eq!(delete_when_gone(&e, secret(*existing).as_ref()), *want, "{deletion:?} over {existing:?}");
    }
}

#[test]
fn the_desired_secret_carries_only_what_the_policy_owns() {
    let s = desired_secret(&es(CreationPolicy::Owner), &desired("s3cret"));
    let owner = &s.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!((owner.uid.as_str(), owner.controller), ("uid-1", Some(true)));
    let labels = s.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGER);
    assert_eq!(s.metadata.annotations.as_ref().expect("annotations")[SOURCE_VERSIONS_ANNOTATION], "db=v1");
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    let shown = serde_json::to_string(&s).expect("serializes");
    assert!(shown.contains("czNjcmV0") && !shown.contains("s3cret"), "base64 data only: {shown}");

    let s = desired_secret(&es(CreationPolicy::Orphan), &desired("v"));
    assert!(s.metadata.owner_references.is_none());
    let s = desired_secret(&es(CreationPolicy::Merge), &desired("v"));
    assert!(s.metadata.labels.is_none() && s.type_.is_none() && s.immutable.is_none());
    assert!(s.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(DATA_HASH_ANNOTATION)));
}

#[test]
fn ownership() {
    let e = es(CreationPolicy::Owner);
    let mut secret = Secret::default();
    assert!(!is_ours(&secret, &e), "an unlabelled Secret is not ours");
    secret.metadata.labels = Some([(MANAGED_BY_LABEL.to_string(), MANAGER.to_string())].into());
    secret.metadata.annotations = Some([(OWNER_ANNOTATION.to_string(), "other".to_string())].into());
    assert!(!is_ours(&secret, &e), "another ExternalSecret's Secret is not ours");
    secret.metadata.annotations = Some([(OWNER_ANNOTATION.to_string(), "app".to_string())].into());
    assert!(is_ours(&secret, &e));
}

/// An ExternalSecret synced to `desired("v")` from db at v1, and the Secret that sync wrote.
fn synced() -> (ExternalSecret, Secret) {
    let mut e = es(CreationPolicy::Owner);
    let d = desired("v");
    let secret = desired_secret(&e, &d);
    e.status = Some(ExternalSecretStatus {
        observed_generation: Some(1),
        synced_resource_version: Some(metadata_version(&e)),
        conditions: crate::status::set_ready(
            &[],
            Reason::SecretSynced,
            "ok",
            Some(1),
            Time(jiff::Timestamp::UNIX_EPOCH),
        ),
        sources: vec![SourceStatus { version_stage: Some("AWSCURRENT".into()), ..d.sources[0].clone() }],
        ..Default::default()
    });
    (e, secret)
}

#[test]
fn the_fast_path_holds_only_while_nothing_moved() {
    let sources = [SourceRef::current("db")];
    let at = |v: &'static str| move |_: &SourceRef| Some(v.to_string());
    let (e, secret) = synced();
    assert!(still_current(&e, &sources, at("v1"), None, Some(&TargetView::of(&secret))).is_some(), "nothing moved");
    assert!(
        still_current(&e, &sources, at("v1"), Some("a template hash"), Some(&TargetView::of(&secret))).is_none(),
        "a templateFrom template the Secret was not rendered with"
    );
    let mut rendered_with = secret.clone();
    rendered_with.metadata.annotations.get_or_insert_default().insert(TEMPLATE_INPUTS_ANNOTATION.into(), "h1".into());
    assert!(
        still_current(&e, &sources, at("v1"), Some("h1"), Some(&TargetView::of(&rendered_with))).is_some(),
        "the same templates"
    );
    assert!(
        still_current(&e, &sources, at("v1"), Some("h2"), Some(&TargetView::of(&rendered_with))).is_none(),
        "a template was edited"
    );
    assert!(
        still_current(&e, &sources, at("v1"), None, Some(&TargetView::of(&rendered_with))).is_none(),
        "templateFrom removed"
    );
    assert!(still_current(&e, &sources, at("v2"), None, Some(&TargetView::of(&secret))).is_none(), "the stage moved");
    assert!(
        still_current(&e, &sources, |_| None, None, Some(&TargetView::of(&secret))).is_none(),
        "unknown is not current"
    );
    assert!(still_current(&e, &sources, at("v1"), None, None).is_none(), "the Secret is gone");

    let mut edited = secret.clone();
    edited.data.get_or_insert_default().insert("password".into(), k8s_openapi::ByteString(b"edited".to_vec()));
    assert!(
        still_current(&e, &sources, at("v1"), None, Some(&TargetView::of(&edited))).is_none(),
        "someone edited the data"
    );

    let mut respecced = e.clone();
    respecced.metadata.generation = Some(2);
    assert!(
        still_current(&respecced, &sources, at("v1"), None, Some(&TargetView::of(&secret))).is_none(),
        "the spec changed"
    );

    let two = [SourceRef::current("db"), SourceRef::current("other")];
    assert!(still_current(&e, &two, at("v1"), None, Some(&TargetView::of(&secret))).is_none(), "a source was added");

    let mut merge = e.clone();
    merge.spec.target.creation_policy = CreationPolicy::Merge;
    assert!(
        still_current(&merge, &sources, at("v1"), None, Some(&TargetView::of(&secret))).is_none(),
        "Merge always syncs"
    );

    let mut annotated = e.clone();
    annotated.metadata.annotations = Some([("force-sync".to_string(), "1700000000".to_string())].into());
    assert!(
        still_current(&annotated, &sources, at("v1"), None, Some(&TargetView::of(&secret))).is_none(),
        "a force-sync annotation fetches"
    );
    assert!(forced(&annotated) && !forced(&e), "and reads AWS afresh");
    assert!(!forced(&respecced), "a spec change is not a forced sync");
    let mut relabelled = e.clone();
    relabelled.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
    assert!(
        still_current(&relabelled, &sources, at("v1"), None, Some(&TargetView::of(&secret))).is_none(),
        "so does a new label"
    );
}

#[test]
fn a_secret_eso_left_behind_is_adopted_and_nothing_else_foreign_is() {
    let eso_left = |controlled: bool| {
        let mut s = Secret::default();
        s.metadata.name = Some("app".into());
        s.metadata.labels = Some([(ESO_MANAGED_LABEL.to_string(), "true".to_string())].into());
        if controlled {
            s.metadata.owner_references = Some(vec![OwnerReference {
                kind: "ExternalSecret".into(),
                api_version: "external-secrets.io/v1".into(),
                name: "app".into(),
                controller: Some(true),
                ..Default::default()
            }]);
        }
        s
    };
    for policy in [CreationPolicy::Owner, CreationPolicy::Orphan] {
        let e = es(policy);
        let adopted = plan(&e, Some(&eso_left(false)), &desired("new"));
        let Ok(Plan::Apply { secret, data_changed }) = adopted else { panic!("{policy:?} adopts: {adopted:?}") };
        assert!(!data_changed, "adoption is not a data change (no restart)");
        assert_eq!(secret.metadata.labels.as_ref().expect("labels")[MANAGED_BY_LABEL], MANAGER);
        assert_eq!(secret.metadata.owner_references.is_some(), policy == CreationPolicy::Owner);
        let still_eso = plan(&e, Some(&eso_left(true)), &desired("new"));
        assert!(matches!(still_eso, Err(Error::TargetConflict(_))), "{policy:?}: ESO still controls it");
    }
}

#[test]
fn the_external_secrets_own_metadata_is_copied_unless_the_template_has_metadata() {
    let mut e = es(CreationPolicy::Owner);
    e.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
    e.metadata.annotations = Some(
        [
            ("reloader.stakater.com/match".to_string(), "true".to_string()),
            ("kubectl.kubernetes.io/last-applied-configuration".to_string(), "{}".to_string()),
            ("lockstep.dev/refresh-requested".to_string(), "2026-12-02T00:00:00Z".to_string()),
        ]
        .into(),
    );
    let s = desired_secret(&e, &desired("v"));
    let (labels, annotations) = (s.metadata.labels.expect("labels"), s.metadata.annotations.expect("annotations"));
    assert_eq!(labels["team"], "a");
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGER, "ours win");
    assert_eq!(annotations["reloader.stakater.com/match"], "true");
    assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    assert!(!annotations.contains_key("lockstep.dev/refresh-requested"), "our own request stays on the ExternalSecret");

    e.spec.target.template =
        Some(crate::api::SecretTemplate { metadata: Some(Default::default()), ..Default::default() });
    let mut d = desired("v");
    d.labels.insert("from-template".into(), "x".into());
    let s = desired_secret(&e, &d);
    let labels = s.metadata.labels.expect("labels");
    assert!(labels.contains_key("from-template") && !labels.contains_key("team"), "template metadata instead");

    e.spec.target.creation_policy = CreationPolicy::Merge;
    let s = desired_secret(&e, &d);
    let labels = s.metadata.labels.expect("labels");
    assert!(labels.contains_key("from-template"), "template metadata applies under Merge too");
    assert!(!labels.contains_key(MANAGED_BY_LABEL), "never our label under Merge");
}

/// The view keeps only part of the metadata: for every kind of change to a target's metadata,
/// the fast path answers from it exactly as it would from the whole Secret.
#[test]
fn the_slim_view_answers_as_the_whole_metadata_would() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    let sources = [SourceRef::current("db")];
    let live = |_: &SourceRef| Some("v1".to_string());
    let (e, secret) = synced();
    let owner = |kind: &str, name: &str, controller: Option<bool>| OwnerReference {
        api_version: "v1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: "u".into(),
        controller,
        ..Default::default()
    };
    type Edit = Box<dyn Fn(&mut Secret)>;
    let label = |k: &'static str, v: &'static str| -> Edit {
        Box::new(move |s| {
            s.metadata.labels.get_or_insert_default().insert(k.into(), v.into());
        })
    };
    let annotate = |k: &'static str, v: &'static str| -> Edit {
        Box::new(move |s| {
            s.metadata.annotations.get_or_insert_default().insert(k.into(), v.into());
        })
    };
    let owned_by =
        move |o: OwnerReference| -> Edit { Box::new(move |s| s.metadata.owner_references = Some(vec![o.clone()])) };
    let edits: Vec<(&str, Edit)> = vec![
        ("unchanged", Box::new(|_| {})),
        ("another label", label("team", "a")),
        (
            "our label removed",
            Box::new(|s| {
                s.metadata.labels.as_mut().map(|l| l.remove(MANAGED_BY_LABEL));
            }),
        ),
        ("our label changed", label(MANAGED_BY_LABEL, "helm")),
        ("no labels", Box::new(|s| s.metadata.labels = None)),
        ("another annotation", annotate("x", "y")),
        ("no annotations", Box::new(|s| s.metadata.annotations = None)),
        ("hash changed", annotate(DATA_HASH_ANNOTATION, "h")),
        ("versions changed", annotate(SOURCE_VERSIONS_ANNOTATION, "db=v0")),
        ("owner annotation changed", annotate(super::OWNER_ANNOTATION, "other")),
        ("template inputs added", annotate(TEMPLATE_INPUTS_ANNOTATION, "t")),
        ("a foreign controller", owned_by(owner("Deployment", "web", Some(true)))),
        ("another ExternalSecret controls it", owned_by(owner("ExternalSecret", "other", Some(true)))),
        ("a non-controller owner", owned_by(owner("Deployment", "web", None))),
        ("no owners", Box::new(|s| s.metadata.owner_references = None)),
        (
            "data edited",
            Box::new(|s| {
                s.data.get_or_insert_default().insert("password".into(), k8s_openapi::ByteString(b"x".to_vec()));
            }),
        ),
        ("new resource version", Box::new(|s| s.metadata.resource_version = Some("99".into()))),
    ];
    let mut answers = std::collections::BTreeSet::new();
    for (what, edit) in &edits {
        let mut s = secret.clone();
        edit(&mut s);
        let view = TargetView::of(&s);
        for inputs in [None, Some("t")] {
            let slim = still_current(&e, &sources, live, inputs, Some(&view));
            let full = super::current_with(&e, &sources, live, inputs, &s, view.data_matches_hash);
            assert_eq!(slim, full, "{what}, template inputs {inputs:?}");
            answers.insert(slim.is_some());
        }
        assert_eq!(view.resource_version(), s.metadata.resource_version, "{what}");
    }
    assert_eq!(answers.len(), 2, "the table has changes the fast path takes and changes it refuses");
}
