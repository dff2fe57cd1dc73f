// kube's `printcolumn(...)` attributes repeat `type_ = "string"` by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// How a namespaced SecretStore reaches AWS Secrets Manager.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "lockstep.dev",
    version = "v1alpha1",
    kind = "SecretStore",
    namespaced,
    status = "SecretStoreStatus",
    shortname = "lss",
    category = "lockstep",
    doc = "How ExternalSecrets of one namespace reach AWS Secrets Manager.",
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.aws.region"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!has(self.aws.auth) || !has(self.aws.auth.secretRef) || (!has(self.aws.auth.secretRef.accessKeyIDSecretRef.namespace) && !has(self.aws.auth.secretRef.secretAccessKeySecretRef.namespace) && (!has(self.aws.auth.secretRef.sessionTokenSecretRef) || !has(self.aws.auth.secretRef.sessionTokenSecretRef.namespace)))")
    .message("a SecretStore reads credentials from its own namespace: remove namespace from aws.auth.secretRef"))]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreSpec {
    /// AWS Secrets Manager access.
    pub aws: AwsProvider,
}

/// How any namespace allowed by `conditions` reaches AWS Secrets Manager.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "lockstep.dev",
    version = "v1alpha1",
    kind = "ClusterSecretStore",
    status = "SecretStoreStatus",
    shortname = "lcss",
    category = "lockstep",
    doc = "How ExternalSecrets of the namespaces its conditions allow reach AWS Secrets Manager.",
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.aws.region"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!has(self.aws.auth) || !has(self.aws.auth.secretRef) || (has(self.aws.auth.secretRef.accessKeyIDSecretRef.namespace) && has(self.aws.auth.secretRef.secretAccessKeySecretRef.namespace) && (!has(self.aws.auth.secretRef.sessionTokenSecretRef) || has(self.aws.auth.secretRef.sessionTokenSecretRef.namespace)))")
    .message("a ClusterSecretStore must name the namespace of each Secret in aws.auth.secretRef"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreSpec {
    /// AWS Secrets Manager access.
    pub aws: AwsProvider,
    /// Which namespaces may use this store. A namespace may use it when any condition matches it.
    /// No conditions: every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub conditions: Vec<ClusterSecretStoreCondition>,
}

/// One rule admitting namespaces to a ClusterSecretStore: it matches a namespace that is listed
/// in `namespaces` or whose labels match `namespaceSelector`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)")
    .message("each condition needs namespaces or namespaceSelector"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreCondition {
    /// Namespaces by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(max = 63)))]
    pub namespaces: Vec<String>,
    /// Namespaces by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// AWS Secrets Manager access settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsProvider {
    /// AWS region, e.g. eu-central-1.
    #[x_kube(validation = Rule::new("self.matches('^[a-z]{2}(-[a-z]+)+-[0-9]+$')").message("aws.region must be an AWS region such as eu-central-1"))]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Endpoint override for Secrets Manager (VPC endpoint, FIPS, a local emulator). Also used for
    /// STS unless `stsEndpoint` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+(/.*)?$')").message("aws.endpoint must be an http(s) URL"))]
    pub endpoint: Option<String>,
    /// Endpoint override for STS (AssumeRole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+(/.*)?$')").message("aws.stsEndpoint must be an http(s) URL"))]
    pub sts_endpoint: Option<String>,
    /// Credentials. Absent: the pod's ambient chain (IRSA, EKS Pod Identity, env, IMDS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AwsAuth>,
    /// A role to assume on top of the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$')").message("aws.role must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)"))]
    #[schemars(length(max = 2048))]
    pub role: Option<String>,
    /// External id for the AssumeRole call.
    #[serde(default, rename = "externalID", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1224))]
    pub external_id: Option<String>,
}

/// Credential sources other than the ambient chain.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.secretRef)").message("aws.auth needs secretRef (or remove auth to use the pod's ambient credentials)"))]
#[serde(rename_all = "camelCase")]
pub struct AwsAuth {
    /// Static keys held in a Kubernetes Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<AwsSecretRef>,
}

/// Static AWS keys in a Kubernetes Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretRef {
    /// The access key id.
    #[serde(rename = "accessKeyIDSecretRef")]
    pub access_key_id_secret_ref: SecretKeySelector,
    /// The secret access key.
    pub secret_access_key_secret_ref: SecretKeySelector,
    /// An optional session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_secret_ref: Option<SecretKeySelector>,
}

/// A key of a Kubernetes Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Namespace of the Secret: required for a ClusterSecretStore, not allowed for a SecretStore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// Observed state of a store.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: credentials resolve and a validation call succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl ClusterSecretStoreSpec {
    /// Whether a namespace with these labels may use the store.
    pub fn allows(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.conditions.is_empty()
            || self.conditions.iter().any(|c| {
                c.namespaces.iter().any(|n| n == namespace)
                    || c.namespace_selector.as_ref().is_some_and(|s| selector_matches(s, labels))
            })
    }
}

/// Label-selector semantics of Kubernetes (matchLabels AND matchExpressions).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}
