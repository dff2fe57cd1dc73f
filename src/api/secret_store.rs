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
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.provider.aws.region"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!has(self.provider.aws.auth) || !has(self.provider.aws.auth.secretRef) || (!has(self.provider.aws.auth.secretRef.accessKeyIDSecretRef.namespace) && !has(self.provider.aws.auth.secretRef.secretAccessKeySecretRef.namespace) && (!has(self.provider.aws.auth.secretRef.sessionTokenSecretRef) || !has(self.provider.aws.auth.secretRef.sessionTokenSecretRef.namespace)))")
    .message("a SecretStore reads credentials from its own namespace: remove namespace from provider.aws.auth.secretRef"))]
#[x_kube(validation = Rule::new("!has(self.provider.aws.auth) || !has(self.provider.aws.auth.jwt) || !has(self.provider.aws.auth.jwt.serviceAccountRef.namespace)")
    .message("a SecretStore uses ServiceAccounts of its own namespace: remove namespace from provider.aws.auth.jwt.serviceAccountRef"))]
#[x_kube(validation = Rule::new("!has(self.controller) && !has(self.retrySettings) && !has(self.refreshInterval)")
    .message("spec.controller, spec.retrySettings and spec.refreshInterval of ESO's stores are not supported by Lockstep: remove them (Lockstep retries with its own backoff and checks stores hourly)"))]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreSpec {
    pub provider: Provider,
    #[serde(flatten)]
    pub unsupported: UnsupportedStoreFields,
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
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.provider.aws.region"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!has(self.provider.aws.auth) || !has(self.provider.aws.auth.secretRef) || (has(self.provider.aws.auth.secretRef.accessKeyIDSecretRef.namespace) == has(self.provider.aws.auth.secretRef.secretAccessKeySecretRef.namespace) && (!has(self.provider.aws.auth.secretRef.sessionTokenSecretRef) || has(self.provider.aws.auth.secretRef.sessionTokenSecretRef.namespace) == has(self.provider.aws.auth.secretRef.accessKeyIDSecretRef.namespace)))")
    .message("a ClusterSecretStore names the namespace of every Secret in provider.aws.auth.secretRef, or of none (a referent store: each ExternalSecret's own namespace)"))]
#[x_kube(validation = Rule::new("!has(self.provider.aws.events) || !has(self.provider.aws.namespaceSessionTag) || !self.provider.aws.namespaceSessionTag")
    .message("a ClusterSecretStore with provider.aws.namespaceSessionTag (a session per namespace) cannot read provider.aws.events: each namespace's client would take a share of the queue's messages"))]
#[x_kube(validation = Rule::new("!has(self.provider.aws.events) || !has(self.provider.aws.auth) || (has(self.provider.aws.auth.secretRef) ? has(self.provider.aws.auth.secretRef.accessKeyIDSecretRef.namespace) : has(self.provider.aws.auth.jwt.serviceAccountRef.namespace))")
    .message("a referent ClusterSecretStore (credentials from each ExternalSecret's namespace) cannot read provider.aws.events: each namespace's client would take a share of the queue's messages; name the credentials' namespace, or use SecretStores with a queue each"))]
#[x_kube(validation = Rule::new("!has(self.controller) && !has(self.retrySettings) && !has(self.refreshInterval)")
    .message("spec.controller, spec.retrySettings and spec.refreshInterval of ESO's stores are not supported by Lockstep: remove them (Lockstep retries with its own backoff and checks stores hourly)"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreSpec {
    pub provider: Provider,
    #[serde(flatten)]
    pub unsupported: UnsupportedStoreFields,
    /// Which namespaces may use this store. A namespace may use it when any condition matches it.
    /// No conditions: every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub conditions: Vec<ClusterSecretStoreCondition>,
}

/// One rule admitting namespaces to a ClusterSecretStore: it matches a namespace that is listed
/// in `namespaces`, whose labels match `namespaceSelector`, or whose name a regular expression of
/// `namespaceRegexes` matches (ESO's three).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector) || (has(self.namespaceRegexes) && size(self.namespaceRegexes) > 0)")
    .message("each condition needs namespaces, namespaceSelector or namespaceRegexes"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreCondition {
    /// Namespaces by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(max = 63)))]
    pub namespaces: Vec<String>,
    /// Namespaces by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces whose name matches one of these regular expressions (searched, not anchored:
    /// write `^team-.*$` for a whole name). An expression that does not compile matches nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256)))]
    pub namespace_regexes: Vec<String>,
}

/// ESO store fields Lockstep does not implement: declared so that admission refuses them by name
/// (a client that drops unknown fields would otherwise change the store's meaning silently).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UnsupportedStoreFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::unsupported_string")]
    pub controller: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::unsupported")]
    pub retry_settings: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::unsupported_int_or_string")]
    pub refresh_interval: Option<serde_json::Value>,
}

/// Where a store's secrets live: ESO's `spec.provider`, of which Lockstep serves `aws`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    /// AWS Secrets Manager.
    pub aws: AwsProvider,
}

/// Which AWS service a store reads: ESO's `provider.aws.service`.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AwsService {
    #[default]
    SecretsManager,
    /// Accepted by the schema so that admission can say it is not supported.
    ParameterStore,
}

/// AWS Secrets Manager access settings (ESO's `provider.aws`; `endpoint` and `stsEndpoint` are
/// Lockstep's additions).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("self.service == 'SecretsManager'")
    .message("provider.aws.service ParameterStore is not supported by Lockstep: only SecretsManager"))]
#[x_kube(validation = Rule::new("!has(self.prefix) && !has(self.secretsManager)")
    .message("provider.aws.prefix and provider.aws.secretsManager are not supported by Lockstep: remove them (name secrets in full in remoteRef.key)"))]
#[x_kube(validation = Rule::new("has(self.role) || ((!has(self.sessionTags) || size(self.sessionTags) == 0) && (!has(self.transitiveTagKeys) || size(self.transitiveTagKeys) == 0))")
    .message("provider.aws.sessionTags and transitiveTagKeys are tags of the session of provider.aws.role: set role, or remove them"))]
#[x_kube(validation = Rule::new("has(self.role) || !has(self.namespaceSessionTag) || !self.namespaceSessionTag")
    .message("provider.aws.namespaceSessionTag tags the session of provider.aws.role: set role, or remove it"))]
#[serde(rename_all = "camelCase")]
pub struct AwsProvider {
    /// SecretsManager (the only service Lockstep reads).
    pub service: AwsService,
    /// AWS region, e.g. eu-central-1.
    #[x_kube(validation = Rule::new("self.matches('^[a-z]{2}(-[a-z]+)+-[0-9]+$')").message("provider.aws.region must be an AWS region such as eu-central-1"))]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Endpoint override for Secrets Manager (VPC endpoint, FIPS, a local emulator). Also used for
    /// STS unless `stsEndpoint` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+(/.*)?$')").message("provider.aws.endpoint must be an http(s) URL"))]
    pub endpoint: Option<String>,
    /// Endpoint override for STS (AssumeRole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+(/.*)?$')").message("provider.aws.stsEndpoint must be an http(s) URL"))]
    pub sts_endpoint: Option<String>,
    /// Credentials. Absent: the pod's ambient chain (IRSA, EKS Pod Identity, env, IMDS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AwsAuth>,
    /// A role to assume on top of the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$')").message("provider.aws.role must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)"))]
    #[schemars(length(max = 2048))]
    pub role: Option<String>,
    /// External id for the AssumeRole call.
    #[serde(default, rename = "externalID", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1224))]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::unsupported_string")]
    pub prefix: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::unsupported")]
    pub secrets_manager: Option<serde_json::Value>,
    /// Roles assumed in order before `role` (a chain: each with the credentials of the one
    /// before), as in ESO.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "role_arns")]
    pub additional_roles: Vec<String>,
    /// Session tags of the `role` session (attribute-based access control).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub session_tags: Vec<SessionTag>,
    /// Keys of `sessionTags` that pass on to sessions this one assumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub transitive_tag_keys: Vec<String>,
    /// Lockstep's addition: tag the `role` session with `kubernetes-namespace: <the ExternalSecret's
    /// namespace>`, so IAM policies can grant by `aws:PrincipalTag/kubernetes-namespace` without
    /// a tag written per store. On a ClusterSecretStore this makes one session (and client) per
    /// namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub namespace_session_tag: bool,
    /// Lockstep's addition: refresh from Secrets Manager's events, delivered by an EventBridge
    /// rule to an SQS queue, with polling kept as the safety net.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<AwsEvents>,
}

/// Where a store's AWS events arrive (Lockstep's addition; ESO has no event-driven refresh).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct AwsEvents {
    /// The SQS queue an EventBridge rule sends Secrets Manager's events to, read with the store's
    /// credentials (sqs:ReceiveMessage and sqs:DeleteMessage on this queue).
    #[serde(rename = "queueURL")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+/[0-9]{12}/[A-Za-z0-9_-]{1,80}(\\\\.fifo)?$')").message("provider.aws.events.queueURL must be an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<queue>)"))]
    pub queue_url: String,
    /// Endpoint override for SQS (a VPC endpoint, a local emulator); the region's SQS otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+(/.*)?$')").message("provider.aws.events.sqsEndpoint must be an http(s) URL"))]
    pub sqs_endpoint: Option<String>,
    /// How often the store still polls change metadata while the queue answers (a lost event costs
    /// at most this): a Go duration, default 15m. When the queue fails, polling goes back to the
    /// ExternalSecrets' refreshInterval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1m')").message("provider.aws.events.fallbackInterval must be a duration of at least 1m, such as 15m or 1h"))]
    pub fallback_interval: Option<String>,
}

/// The session tag key `namespaceSessionTag` sets.
pub const NAMESPACE_TAG: &str = "kubernetes-namespace";

/// The fallback poll interval of a store whose events flow, unless it sets one.
pub const DEFAULT_EVENTS_FALLBACK: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl AwsEvents {
    /// `fallbackInterval` parsed (admission checked its shape; a bad one falls back to the default).
    pub fn fallback(&self) -> std::time::Duration {
        self.fallback_interval
            .as_deref()
            .and_then(|s| super::go_duration("fallbackInterval", s).ok())
            .unwrap_or(DEFAULT_EVENTS_FALLBACK)
    }
}

/// At most 8 IAM role ARNs.
fn role_arns(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "maxItems": 8,
        "description": "Roles assumed in order before `role` (a chain: each with the credentials of the one before), as in ESO.",
        "items": {"type": "string", "maxLength": 2048, "pattern": "^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"}})
}

/// An STS session tag.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SessionTag {
    #[schemars(length(min = 1, max = 128))]
    pub key: String,
    #[schemars(length(max = 256))]
    pub value: String,
}

/// Credential sources other than the ambient chain.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.jwt)").message("provider.aws.auth needs exactly one of secretRef or jwt (or remove auth to use the pod's ambient credentials)"))]
#[serde(rename_all = "camelCase")]
pub struct AwsAuth {
    /// Static keys held in a Kubernetes Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<AwsSecretRef>,
    /// A ServiceAccount's token, exchanged for the role's credentials with STS
    /// AssumeRoleWithWebIdentity (IRSA per store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<AwsJwtAuth>,
}

/// ESO's `auth.jwt`: the ServiceAccount whose token the operator requests (TokenRequest API).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsJwtAuth {
    pub service_account_ref: ServiceAccountSelector,
}

/// A ServiceAccount, and the audiences of the token requested for it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSelector {
    /// ServiceAccount name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Audiences of the token (default `sts.amazonaws.com`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub audiences: Vec<String>,
    /// Namespace of the ServiceAccount: required for a ClusterSecretStore, not allowed for a
    /// SecretStore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
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
    /// ESO's field: what the store can do. Lockstep stores read (`ReadOnly`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<String>,
}

impl ClusterSecretStoreSpec {
    /// Whether the store is referent (ESO's term): its credentials (`secretRef` Secrets or the
    /// `jwt` ServiceAccount) name no namespace, so each ExternalSecret's own namespace holds them.
    pub fn referent(&self) -> bool {
        let auth = self.provider.aws.auth.as_ref();
        match (auth.and_then(|a| a.secret_ref.as_ref()), auth.and_then(|a| a.jwt.as_ref())) {
            (Some(r), _) => r.access_key_id_secret_ref.namespace.is_none(),
            (None, Some(jwt)) => jwt.service_account_ref.namespace.is_none(),
            (None, None) => false,
        }
    }

    /// Whether each namespace gets a client of its own: a referent store, or one that tags its
    /// sessions with the namespace.
    pub fn per_namespace(&self) -> bool {
        self.referent() || self.provider.aws.namespace_session_tag
    }

    /// Whether a namespace with these labels may use the store.
    pub fn allows(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.conditions.is_empty()
            || self.conditions.iter().any(|c| {
                c.namespaces.iter().any(|n| n == namespace)
                    || c.namespace_selector.as_ref().is_some_and(|s| selector_matches(s, labels))
                    || c.namespace_regexes.iter().any(|r| regex::Regex::new(r).is_ok_and(|re| re.is_match(namespace)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referent_when_the_credentials_name_no_namespace_and_per_namespace_with_the_tag_too() {
        let store = |aws: serde_json::Value| -> ClusterSecretStoreSpec {
            let mut provider = serde_json::json!({"service": "SecretsManager", "region": "us-east-1"});
            if let (Some(p), Some(extra)) = (provider.as_object_mut(), aws.as_object()) {
                p.extend(extra.clone());
            }
            serde_json::from_value(serde_json::json!({"provider": {"aws": provider}})).expect("a spec")
        };
        let keys = |ns: Option<&str>| {
            let r = |k: &str| serde_json::json!({"name": "c", "key": k, "namespace": ns});
            serde_json::json!({"auth": {"secretRef": {"accessKeyIDSecretRef": r("a"), "secretAccessKeySecretRef": r("b")}}})
        };
        let jwt = |ns: Option<&str>| serde_json::json!({"auth": {"jwt": {"serviceAccountRef": {"name": "sa", "namespace": ns}}}});
        for (aws, referent, per_namespace) in [
            (serde_json::json!({}), false, false),
            (keys(None), true, true),
            (keys(Some("ops")), false, false),
            (jwt(None), true, true),
            (jwt(Some("ops")), false, false),
            (serde_json::json!({"role": "arn:aws:iam::123456789012:role/r", "namespaceSessionTag": true}), false, true),
        ] {
            let s = store(aws.clone());
            assert_eq!((s.referent(), s.per_namespace()), (referent, per_namespace), "{aws}");
        }
    }

    #[test]
    fn conditions_admit_by_name_label_or_regex() {
        let spec =
            |c: ClusterSecretStoreCondition| ClusterSecretStoreSpec { conditions: vec![c], ..Default::default() };
        let labels: BTreeMap<String, String> = [("tenant".to_string(), "a".to_string())].into();
        let by_name = spec(ClusterSecretStoreCondition { namespaces: vec!["team-a".into()], ..Default::default() });
        assert!(by_name.allows("team-a", &BTreeMap::new()) && !by_name.allows("team-b", &BTreeMap::new()));
        let selector = LabelSelector { match_labels: Some(labels.clone()), ..Default::default() };
        let by_label = spec(ClusterSecretStoreCondition { namespace_selector: Some(selector), ..Default::default() });
        assert!(by_label.allows("x", &labels) && !by_label.allows("x", &BTreeMap::new()));
        let by_regex = spec(ClusterSecretStoreCondition {
            namespace_regexes: vec!["^team-".into(), "(".into()],
            ..Default::default()
        });
        assert!(by_regex.allows("team-b", &BTreeMap::new()));
        assert!(!by_regex.allows("ops", &BTreeMap::new()), "a regex that does not compile matches nothing");
        assert!(
            ClusterSecretStoreSpec::default().allows("anything", &BTreeMap::new()),
            "no conditions: every namespace"
        );
    }
}
