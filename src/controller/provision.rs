//! PURE: what a ClusterExternalSecret does to the cluster: the ExternalSecret it wants in a
//! namespace, which namespaces get one (created or updated), which are already right, which of the
//! ExternalSecrets it created go (their namespace is no longer selected, or the name changed), and
//! where it cannot provision; and the status that follows.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use crate::api::{
    CLUSTER_EXTERNAL_SECRET_LABEL, ClusterExternalSecret, ClusterExternalSecretNamespaceFailure as Failure,
    ClusterExternalSecretStatus, ExternalSecret,
};
use crate::status::{self, Reason};

/// A namespace, as far as selecting it goes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Being deleted: its ExternalSecrets go with it, nothing is created there.
    pub terminating: bool,
}

/// What one reconcile of a ClusterExternalSecret does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Selected namespaces where the ExternalSecret is applied (missing, or not as desired).
    pub apply: Vec<String>,
    /// Selected namespaces where it already is as desired.
    pub keep: Vec<String>,
    /// `(namespace, name, uid)` of ExternalSecrets this ClusterExternalSecret created that go.
    pub delete: Vec<(String, String, String)>,
    /// Selected namespaces it cannot provision, and why.
    pub failed: Vec<Failure>,
}

/// Whether `es`'s controller is `ces` (by uid: a ClusterExternalSecret deleted and created again
/// under the same name is another owner).
pub fn owned_by(es: &ExternalSecret, ces: &ClusterExternalSecret) -> bool {
    let Some(uid) = ces.metadata.uid.as_deref() else {
        return false;
    };
    es.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid)
}

/// The ExternalSecret `ces` wants in `namespace`: its spec, `externalSecretMetadata`, the label
/// naming `ces`, and `ces` as controller owner.
pub fn desired(ces: &ClusterExternalSecret, namespace: &str) -> ExternalSecret {
    let mut es = ExternalSecret::new(ces.external_secret_name(), ces.spec.external_secret_spec.clone());
    let metadata = ces.spec.external_secret_metadata.clone().unwrap_or_default();
    let mut labels = metadata.labels;
    labels.insert(CLUSTER_EXTERNAL_SECRET_LABEL.into(), ces.name_any());
    es.metadata.namespace = Some(namespace.into());
    es.metadata.labels = Some(labels);
    es.metadata.annotations = (!metadata.annotations.is_empty()).then_some(metadata.annotations);
    es.metadata.owner_references = ces.controller_owner_ref(&()).map(|o| vec![o]);
    es
}

/// Whether `existing` is already what [`desired`] would apply: the same spec, labels and
/// annotations (exactly, so that one removed from `externalSecretMetadata` is removed by the next
/// apply), and the owner reference.
fn is_current(existing: &ExternalSecret, want: &ExternalSecret) -> bool {
    let same = |a: &Option<BTreeMap<String, String>>, b: &Option<BTreeMap<String, String>>| {
        a.clone().unwrap_or_default() == b.clone().unwrap_or_default()
    };
    let owner = want.owner_references().first();
    existing.spec == want.spec
        && same(&existing.metadata.labels, &want.metadata.labels)
        && same(&existing.metadata.annotations, &want.metadata.annotations)
        && owner.is_some_and(|o| existing.owner_references().contains(o))
}

/// The plan of `ces`, given every namespace and the ExternalSecrets that matter: those carrying
/// its label, and those of its ExternalSecret name in any namespace.
pub fn plan(ces: &ClusterExternalSecret, namespaces: &[NamespaceView], existing: &[ExternalSecret]) -> Plan {
    let name = ces.external_secret_name();
    let at = |ns: &str| existing.iter().find(|es| es.namespace().as_deref() == Some(ns) && es.name_any() == name);
    let mut plan = Plan::default();
    let mut selected = BTreeSet::new();
    let mut namespaces: Vec<&NamespaceView> = namespaces.iter().collect();
    namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    for ns in namespaces.iter().filter(|ns| !ns.terminating && ces.spec.selects(&ns.name, &ns.labels)) {
        selected.insert(ns.name.as_str());
        match at(&ns.name) {
            Some(es) if !owned_by(es, ces) => plan.failed.push(Failure {
                namespace: ns.name.clone(),
                reason: Some(format!(
                    "ExternalSecret {name:?} already exists in namespace {:?} and is not owned by this ClusterExternalSecret: it is left as it is; delete it or set spec.externalSecretName",
                    ns.name
                )),
            }),
            Some(es) if is_current(es, &desired(ces, &ns.name)) => plan.keep.push(ns.name.clone()),
            _ => plan.apply.push(ns.name.clone()),
        }
    }
    let live: BTreeSet<&str> = namespaces.iter().filter(|ns| !ns.terminating).map(|ns| ns.name.as_str()).collect();
    for es in existing.iter().filter(|es| owned_by(es, ces)) {
        let ns = es.namespace().unwrap_or_default();
        let wanted = selected.contains(ns.as_str()) && es.name_any() == name;
        if !wanted && live.contains(ns.as_str()) {
            plan.delete.push((ns, es.name_any(), es.uid().unwrap_or_default()));
        }
    }
    plan.delete.sort();
    plan.delete.dedup();
    plan
}

/// PURE: the status after a reconcile that left the ExternalSecret in `provisioned` and failed in
/// `failed`, and the Ready reason and message in it.
pub fn status_after(
    ces: &ClusterExternalSecret,
    previous: &ClusterExternalSecretStatus,
    mut provisioned: Vec<String>,
    mut failed: Vec<Failure>,
    now: Time,
) -> (ClusterExternalSecretStatus, Reason, String) {
    provisioned.sort();
    provisioned.dedup();
    failed.sort();
    let name = ces.external_secret_name();
    let (reason, message) = match failed.as_slice() {
        [] => {
            (Reason::NamespacesProvisioned, format!("ExternalSecret {name:?} is in {} namespace(s)", provisioned.len()))
        }
        some => {
            let names: Vec<&str> = some.iter().map(|f| f.namespace.as_str()).collect();
            (
                Reason::NamespacesFailed,
                format!(
                    "ExternalSecret {name:?} failed in {} namespace(s): {} (see status.failedNamespaces)",
                    some.len(),
                    names.join(", ")
                ),
            )
        }
    };
    let generation = ces.metadata.generation;
    let next = ClusterExternalSecretStatus {
        observed_generation: generation,
        conditions: status::set_ready(&previous.conditions, reason, &message, generation, now),
        external_secret_name: Some(name.to_string()),
        provisioned_namespaces: provisioned,
        failed_namespaces: failed,
    };
    (next, reason, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClusterExternalSecretSpec, ExternalSecretMetadata, ExternalSecretSpec, SecretStoreRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};

    fn ces() -> ClusterExternalSecret {
        let spec = ClusterExternalSecretSpec {
            external_secret_spec: ExternalSecretSpec {
                secret_store_ref: SecretStoreRef { name: "aws".into(), ..Default::default() },
                ..Default::default()
            },
            namespace_selectors: vec![LabelSelector {
                match_labels: Some([("team".to_string(), "a".to_string())].into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut ces = ClusterExternalSecret::new("shared", spec);
        ces.metadata.uid = Some("ces-uid".into());
        ces.metadata.generation = Some(3);
        ces
    }

    fn ns(name: &str, team: &str) -> NamespaceView {
        NamespaceView { name: name.into(), labels: [("team".to_string(), team.to_string())].into(), terminating: false }
    }

    /// What `ces` would have applied in `namespace`, as the apiserver returns it.
    fn ours(ces: &ClusterExternalSecret, namespace: &str) -> ExternalSecret {
        let mut es = desired(ces, namespace);
        es.metadata.uid = Some(format!("uid-{namespace}"));
        es
    }

    fn foreign(namespace: &str, name: &str, owner: Option<&str>) -> ExternalSecret {
        let mut es = ExternalSecret::new(name, ExternalSecretSpec::default());
        es.metadata.namespace = Some(namespace.into());
        es.metadata.uid = Some(format!("uid-{namespace}-{name}"));
        es.metadata.owner_references = owner.map(|uid| {
            vec![OwnerReference {
                kind: "ClusterExternalSecret".into(),
                uid: uid.into(),
                controller: Some(true),
                ..Default::default()
            }]
        });
        es
    }

    #[test]
    fn the_desired_external_secret_is_labelled_and_owned() {
        let mut c = ces();
        c.spec.external_secret_metadata = Some(ExternalSecretMetadata {
            labels: [("app".to_string(), "x".to_string())].into(),
            annotations: [("note".to_string(), "y".to_string())].into(),
        });
        let es = desired(&c, "team-a");
        assert_eq!(es.name_any(), "shared");
        assert_eq!(es.namespace().as_deref(), Some("team-a"));
        assert_eq!(es.labels().get(CLUSTER_EXTERNAL_SECRET_LABEL).map(String::as_str), Some("shared"));
        assert_eq!(es.labels().get("app").map(String::as_str), Some("x"));
        assert_eq!(es.annotations().get("note").map(String::as_str), Some("y"));
        let owner = &es.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ClusterExternalSecret", "ces-uid", Some(true))
        );
        assert_eq!(es.spec, c.spec.external_secret_spec);
        let json = serde_json::to_value(&es).unwrap_or_default();
        assert!(json.get("status").is_none(), "the apply carries no status: {json}");
        assert_eq!(json["apiVersion"], "lockstep.dev/v1alpha1");

        c.spec.external_secret_name = Some("db".into());
        assert_eq!(desired(&c, "team-a").name_any(), "db");
    }

    #[test]
    fn plans() {
        let c = ces();
        let renamed = {
            let mut c = ces();
            c.spec.external_secret_name = Some("renamed".into());
            c
        };
        let changed = {
            let mut es = ours(&c, "a1");
            es.spec.refresh_interval = Some("5m".into());
            es
        };
        let relabelled = {
            let mut es = ours(&c, "a1");
            es.metadata.labels.get_or_insert_default().insert("stale".into(), "x".into());
            es
        };
        let terminating = NamespaceView { terminating: true, ..ns("a2", "a") };
        // What, which ClusterExternalSecret, the namespaces, the ExternalSecrets there, the plan.
        type Row<'a> = (&'a str, &'a ClusterExternalSecret, Vec<NamespaceView>, Vec<ExternalSecret>, &'a str);
        let rows: Vec<Row> = vec![
            ("new namespaces get one", &c, vec![ns("a1", "a"), ns("a2", "a"), ns("b", "b")], vec![], "apply a1 a2"),
            ("one as desired is kept", &c, vec![ns("a1", "a")], vec![ours(&c, "a1")], "keep a1"),
            ("a changed spec is applied again", &c, vec![ns("a1", "a")], vec![changed], "apply a1"),
            ("a label no longer wanted is applied away", &c, vec![ns("a1", "a")], vec![relabelled], "apply a1"),
            (
                "a namespace relabelled out loses ours",
                &c,
                vec![ns("a1", "b")],
                vec![ours(&c, "a1")],
                "delete a1/shared",
            ),
            ("terminating: nothing created or deleted", &c, vec![terminating], vec![ours(&c, "a2")], ""),
            ("a gone namespace: nothing to delete", &c, vec![], vec![ours(&c, "a1")], ""),
            (
                "a foreign one is not taken over",
                &c,
                vec![ns("a1", "a")],
                vec![foreign("a1", "shared", None)],
                "failed a1",
            ),
            ("nor another's", &c, vec![ns("a1", "a")], vec![foreign("a1", "shared", Some("other"))], "failed a1"),
            ("a foreign one outside: left alone", &c, vec![ns("b", "b")], vec![foreign("b", "shared", None)], ""),
            (
                "renamed: new applied, old deleted",
                &renamed,
                vec![ns("a1", "a")],
                vec![ours(&c, "a1")],
                "apply a1; delete a1/shared",
            ),
        ];
        for (what, c, namespaces, existing, want) in rows {
            let p = plan(c, &namespaces, &existing);
            let mut got = Vec::new();
            let mut part = |verb: &str, items: Vec<String>| {
                if !items.is_empty() {
                    got.push(format!("{verb} {}", items.join(" ")));
                }
            };
            part("apply", p.apply.clone());
            part("keep", p.keep.clone());
            part(
                "delete",
                p.delete
                    .iter()
                    .map(|(ns, name, uid)| {
                        assert_eq!(uid, &format!("uid-{ns}"), "{what}: deleted by the uid read");
                        format!("{ns}/{name}")
                    })
                    .collect(),
            );
            part("failed", p.failed.iter().map(|f| f.namespace.clone()).collect());
            assert_eq!(got.join("; "), want, "{what}");
            for f in &p.failed {
                let reason = f.reason.as_deref().unwrap_or_default();
                assert!(reason.contains("not owned by this ClusterExternalSecret"), "{what}: {reason}");
            }
        }
    }

    #[test]
    fn status_lists_the_namespaces_and_ready_says_whether_any_failed() {
        let c = ces();
        let t = |s: i64| Time(jiff::Timestamp::from_second(s).unwrap_or_default());
        let (ok, reason, message) = status_after(
            &c,
            &ClusterExternalSecretStatus::default(),
            vec!["b".into(), "a".into(), "a".into()],
            vec![],
            t(1),
        );
        assert_eq!(reason, Reason::NamespacesProvisioned);
        assert_eq!(ok.provisioned_namespaces, ["a", "b"]);
        assert_eq!(ok.external_secret_name.as_deref(), Some("shared"));
        assert_eq!(ok.observed_generation, Some(3));
        assert_eq!(ok.conditions[0].status, "True");
        assert!(message.contains("2 namespace(s)"), "{message}");
        let (again, ..) = status_after(&c, &ok, vec!["a".into(), "b".into()], vec![], t(2));
        assert_eq!(again, ok, "an unchanged outcome is an unchanged status (no write)");

        let failure = Failure { namespace: "c".into(), reason: Some("in the way".into()) };
        let (bad, reason, message) = status_after(&c, &ok, vec!["a".into()], vec![failure.clone()], t(3));
        assert_eq!(reason, Reason::NamespacesFailed);
        assert_eq!(bad.conditions[0].status, "False");
        assert_eq!(bad.failed_namespaces, [failure]);
        assert!(message.contains("1 namespace(s): c"), "{message}");
    }
}
