// kube's `printcolumn(...)` attributes repeat `type_ = "string"` by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{ExternalSecretSpec, selector_matches};

/// `spec.refreshTime` when the spec leaves it out (the schema's default, ESO's).
pub const DEFAULT_NAMESPACE_REFRESH_TIME: &str = "1m";

/// What `refresh()` reads a left-out `refreshTime` as.
pub const DEFAULT_NAMESPACE_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// The label on every ExternalSecret a ClusterExternalSecret created: the ClusterExternalSecret's
/// name (which is why that name is at most 63 characters, a label value's limit). Ownership is
/// the controller owner reference; the label is how they are listed.
pub const CLUSTER_EXTERNAL_SECRET_LABEL: &str = "lockstep.dev/cluster-external-secret";

fn default_namespace_refresh_time() -> Option<String> {
    Some(DEFAULT_NAMESPACE_REFRESH_TIME.to_string())
}

/// A ClusterExternalSecret creates one ExternalSecret in every namespace it selects (ESO's
/// `ClusterExternalSecret`), and removes the ones it created from namespaces it no longer selects.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "lockstep.dev",
    version = "v1alpha1",
    kind = "ClusterExternalSecret",
    status = "ClusterExternalSecretStatus",
    shortname = "lces",
    category = "lockstep",
    doc = "Creates and owns one ExternalSecret in every namespace it selects.",
    validation = Rule::new("size(self.metadata.name) <= 63")
        .message("a ClusterExternalSecret's name must be at most 63 characters (it labels the ExternalSecrets it creates)"),
    printcolumn(name = "Store", type_ = "string", json_path = ".spec.externalSecretSpec.secretStoreRef.name"),
    printcolumn(name = "Refresh", type_ = "string", json_path = ".spec.refreshTime"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = 1
    )
)]
#[x_kube(validation = Rule::new("(has(self.namespaceSelectors) && size(self.namespaceSelectors) > 0) || (has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)")
    .message("spec needs namespaceSelectors or namespaces: the namespaces that get the ExternalSecret"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterExternalSecretSpec {
    /// The spec of the ExternalSecret created in each selected namespace.
    pub external_secret_spec: ExternalSecretSpec,

    /// Name of each ExternalSecret created. Defaults to the ClusterExternalSecret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("externalSecretName must be a valid object name (lowercase DNS subdomain)"))]
    pub external_secret_name: Option<String>,

    /// Labels and annotations of each ExternalSecret created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secret_metadata: Option<ExternalSecretMetadata>,

    /// Namespaces by label: a namespace is selected when any selector matches it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub namespace_selectors: Vec<LabelSelector>,

    /// ESO's deprecated single selector, OR'ed with `namespaceSelectors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Namespaces by name (deprecated in ESO, accepted), OR'ed with the selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(max = 63)))]
    pub namespaces: Vec<String>,

    /// How often the selected namespaces are evaluated again, as a Go duration, at least 1s
    /// (namespace changes are followed at once too). Defaults to 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), default = "default_namespace_refresh_time")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')")
        .message("refreshTime must be a duration such as 30s, 1m or 1h"))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) >= duration('1s')")
        .message("refreshTime must be at least 1s"))]
    pub refresh_time: Option<String>,
}

/// Labels and annotations of the ExternalSecrets a ClusterExternalSecret creates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretMetadata {
    /// Labels (the ExternalSecret's own label `lockstep.dev/cluster-external-secret` is added).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 317)").message("label keys must be at most 317 characters"))]
    #[x_kube(validation = Rule::new("!('lockstep.dev/cluster-external-secret' in self)")
        .message("externalSecretMetadata.labels must not set lockstep.dev/cluster-external-secret: Lockstep sets it"))]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 65536}))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 317)")
        .message("annotation keys must be at most 317 characters"))]
    pub annotations: BTreeMap<String, String>,
}

/// Observed state of a ClusterExternalSecret (ESO's fields).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterExternalSecretStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: `NamespacesProvisioned` when every selected namespace has the ExternalSecret,
    /// else `NamespacesFailed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The name of the ExternalSecrets created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secret_name: Option<String>,
    /// Selected namespaces that have the ExternalSecret, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provisioned_namespaces: Vec<String>,
    /// Namespaces where it could not be created (or removed), and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_namespaces: Vec<ClusterExternalSecretNamespaceFailure>,
}

/// A namespace a ClusterExternalSecret failed in.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterExternalSecretNamespaceFailure {
    pub namespace: String,
    /// Why, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ClusterExternalSecretSpec {
    /// Whether the namespace `name` with `labels` gets the ExternalSecret: it is listed, or any
    /// selector matches it.
    pub fn selects(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces.iter().any(|n| n == name)
            || self.namespace_selectors.iter().chain(&self.namespace_selector).any(|s| selector_matches(s, labels))
    }

    /// `refreshTime` parsed.
    pub fn refresh(&self) -> Result<std::time::Duration, String> {
        let Some(s) = self.refresh_time.as_deref() else {
            return Ok(DEFAULT_NAMESPACE_REFRESH);
        };
        let d = super::go_duration("refreshTime", s)?;
        if d < super::MIN_REFRESH {
            return Err(format!("refreshTime {s:?} must be at least 1s"));
        }
        Ok(d)
    }
}

impl ClusterExternalSecret {
    /// Name of the ExternalSecrets it creates.
    pub fn external_secret_name(&self) -> &str {
        self.spec.external_secret_name.as_deref().or(self.metadata.name.as_deref()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector { match_labels: Some(labels(pairs)), ..Default::default() }
    }

    #[test]
    fn a_namespace_is_selected_by_name_or_by_any_selector() {
        let spec = ClusterExternalSecretSpec {
            namespace_selectors: vec![selector(&[("team", "a")]), selector(&[("team", "b")])],
            namespace_selector: Some(selector(&[("legacy", "yes")])),
            namespaces: vec!["listed".into()],
            ..Default::default()
        };
        type Labels = &'static [(&'static str, &'static str)];
        let rows: &[(&str, Labels, bool)] = &[
            ("x", &[("team", "a")], true),
            ("x", &[("team", "b"), ("other", "1")], true),
            ("x", &[("team", "c")], false),
            ("x", &[("legacy", "yes")], true),
            ("listed", &[], true),
            ("x", &[], false),
        ];
        for (name, l, want) in rows {
            assert_eq!(spec.selects(name, &labels(l)), *want, "{name} {l:?}");
        }
        let empty_selector =
            ClusterExternalSecretSpec { namespace_selectors: vec![LabelSelector::default()], ..Default::default() };
        assert!(
            empty_selector.selects("any", &labels(&[])),
            "an empty selector matches every namespace, as in Kubernetes"
        );
        assert!(!ClusterExternalSecretSpec::default().selects("any", &labels(&[])), "nothing selected: no namespace");
    }

    #[test]
    fn refresh_time_defaults_to_a_minute() {
        let with = |t: Option<&str>| {
            ClusterExternalSecretSpec { refresh_time: t.map(Into::into), ..Default::default() }.refresh()
        };
        let s = std::time::Duration::from_secs;
        assert_eq!(with(None), Ok(s(60)));
        assert_eq!(with(Some(DEFAULT_NAMESPACE_REFRESH_TIME)), Ok(s(60)));
        assert_eq!(with(Some("1h30m")), Ok(s(5400)));
        assert!(with(Some("100ms")).is_err_and(|e| e.contains("at least 1s")));
        assert!(with(Some("0")).is_err());
    }

    #[test]
    fn the_external_secret_name_defaults_to_the_cluster_external_secrets() {
        let mut ces = ClusterExternalSecret::new("shared", ClusterExternalSecretSpec::default());
        assert_eq!(ces.external_secret_name(), "shared");
        ces.spec.external_secret_name = Some("db".into());
        assert_eq!(ces.external_secret_name(), "db");
    }
}
