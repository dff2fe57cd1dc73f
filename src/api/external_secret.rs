// kube's `printcolumn(...)` attributes repeat `type_ = "string"` by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Default for `spec.refreshInterval`: how often change metadata is checked.
pub const DEFAULT_REFRESH: std::time::Duration = std::time::Duration::from_secs(3600);

/// The shortest refreshInterval (the poller polls no faster).
pub const MIN_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// How `remoteRef.version` names a version id instead of a stage (ESO's convention).
pub const VERSION_ID_PREFIX: &str = "uuid/";

/// The stage read when a reference names neither a stage nor a version id.
pub const AWSCURRENT: &str = "AWSCURRENT";

/// `spec.refreshInterval` when the spec leaves it out (the schema's default, so it shows in
/// `kubectl get`); `refresh()` reads it as `DEFAULT_REFRESH`.
pub const DEFAULT_REFRESH_INTERVAL: &str = "1h";

fn default_refresh_interval() -> Option<String> {
    Some(DEFAULT_REFRESH_INTERVAL.to_string())
}

// The rules the apiserver applies to a Secret data key (IsConfigMapKey): 1 to 253 characters (the
// schema's minLength/maxLength on `data[].secretKey`; the CEL rules on `template.data` keys), only
// `[-._a-zA-Z0-9]`, not `.` or `..`, not starting with `..`.
const SECRET_KEY_CHARS: &str = "self.matches('^[-._a-zA-Z0-9]+$')";
const SECRET_KEY_CHARS_MESSAGE: &str =
    "data[].secretKey must be a valid Secret key: only letters, digits, '-', '_' or '.'";
const SECRET_KEY_NOT_DOTS: &str = "self != '.' && self != '..'";
const SECRET_KEY_NOT_DOTS_MESSAGE: &str = "data[].secretKey must not be '.' or '..'";
const SECRET_KEY_NO_DOTDOT_PREFIX: &str = "self == '..' || !self.startsWith('..')";
const SECRET_KEY_NO_DOTDOT_PREFIX_MESSAGE: &str = "data[].secretKey must not start with '..'";

/// An ExternalSecret names AWS Secrets Manager secrets and the Kubernetes Secret to keep in
/// lockstep with them.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "lockstep.dev",
    version = "v1alpha1",
    kind = "ExternalSecret",
    namespaced,
    status = "ExternalSecretStatus",
    shortname = "lses",
    category = "lockstep",
    doc = "Keeps a Kubernetes Secret in lockstep with AWS Secrets Manager secrets.",
    printcolumn(name = "Store", type_ = "string", json_path = ".spec.secretStoreRef.name"),
    printcolumn(name = "Refresh", type_ = "string", json_path = ".spec.refreshInterval"),
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
#[x_kube(validation = Rule::new("(has(self.data) && size(self.data) > 0) || (has(self.dataFrom) && size(self.dataFrom) > 0)")
    .message("spec needs at least one entry in data or dataFrom"))]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretSpec {
    /// The SecretStore or ClusterSecretStore that says how to reach AWS.
    pub secret_store_ref: SecretStoreRef,

    /// How often change metadata is checked, as a Go duration ("1m", "1h30m"), at least 1s.
    /// "0" syncs once. Defaults to 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), default = "default_refresh_interval")]
    #[x_kube(validation = Rule::new("self == '0' || self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')")
        .message("refreshInterval must be a duration such as 30s, 5m or 1h, or 0 to sync once"))]
    // Only a well-formed duration gets here (the rule above reports the others); a zero one such
    // as "0s" syncs once, like "0".
    #[x_kube(validation = Rule::new("self == '0' || !self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) >= duration('1s') || duration(self) == duration('0s')")
        .message("refreshInterval must be 0 (sync once) or at least 1s"))]
    pub refresh_interval: Option<String>,

    /// ESO's `refreshPolicy`: Periodic (follow the AWS secrets every refreshInterval), CreatedOnce
    /// (write the Secret once, then leave it while it exists), OnChange (sync when the
    /// ExternalSecret changes, never on a timer). Left out: Periodic, or sync once when
    /// refreshInterval is 0 (ESO's meaning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_policy: Option<RefreshPolicy>,

    /// The Kubernetes Secret to write.
    #[serde(default)]
    pub target: ExternalSecretTarget,

    /// One Secret key per entry, each from one AWS secret (or one property of it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["secretKey".into()]))]
    pub data: Vec<ExternalSecretData>,

    /// Many Secret keys at once: every top-level key of a JSON secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub data_from: Vec<ExternalSecretDataFrom>,

    /// Workloads in this namespace whose pods read the Secret as environment variables: when the
    /// synced data changes (not on the first sync), their pod template gets a restart annotation,
    /// debounced so a burst of changes causes one restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,
}

/// When an ExternalSecret syncs.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshPolicy {
    CreatedOnce,
    Periodic,
    OnChange,
}

/// What `sourceRef` refusals say.
const SOURCE_REF_MESSAGE: &str =
    "sourceRef (another store or a generator per entry) is not supported by Lockstep: use spec.secretStoreRef";

/// A workload to restart when the Secret's data changes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartTarget {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: WorkloadKind,
    /// Name, in the ExternalSecret's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds of workload a rollout restart can patch.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    #[default]
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

impl WorkloadKind {
    /// The kind as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

/// Which store to use.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreRef {
    /// Name of the store.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// SecretStore (the default, same namespace) or ClusterSecretStore.
    #[serde(default)]
    pub kind: StoreKind,
}

/// The kind of store an ExternalSecret refers to.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// A namespaced store in the ExternalSecret's namespace.
    #[default]
    SecretStore,
    /// A cluster-scoped store whose conditions must allow the ExternalSecret's namespace.
    ClusterSecretStore,
}

/// Where and how the Secret is written.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTarget {
    /// Name of the Secret. Defaults to the ExternalSecret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("target.name must be a valid Secret name (lowercase DNS subdomain)"))]
    pub name: Option<String>,
    /// Owner (default): create and own the Secret, never take over one we do not manage.
    /// Orphan: create without an owner reference. Merge: add our keys to an existing Secret.
    /// None: write nothing (check access only).
    #[serde(default)]
    pub creation_policy: CreationPolicy,
    /// What happens to the Secret when every AWS secret it is built from has been deleted:
    /// Retain (default) keeps it; Delete removes it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Write the Secret as immutable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub immutable: bool,
    /// Type and metadata of the written Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<SecretTemplate>,
}

/// What the written Secret looks like apart from its data.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("self.engineVersion == 'v2'")
    .message("template.engineVersion v1 is not supported by Lockstep: write the template for v2 (Go templates, ESO's default)"))]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Secret type, e.g. Opaque (the default) or kubernetes.io/basic-auth.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub type_: Option<String>,
    /// Labels and annotations added to the Secret; their values are templates too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// Secret key -> Go template (ESO's engine v2) rendered over the fetched values: `.` holds
    /// every `data[].secretKey` and every key from `dataFrom` (`{{ .username }}`,
    /// `{{ index . "tls.crt" }}`). A key holding `{{` is a template too; what it renders to must
    /// be a valid Secret key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 100, "additionalProperties" = {"type": "string", "maxLength": 65536}))]
    #[x_kube(validation = Rule::new("self.all(k, k.contains('{{') || k.matches('^[-._a-zA-Z0-9]+$'))")
        .message("template.data keys must be valid Secret keys: non-empty, only letters, digits, '-', '_' or '.' (or a template)"))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 253)")
        .message("template.data keys must be at most 253 characters"))]
    #[x_kube(validation = Rule::new("self.all(k, k != '.' && k != '..')")
        .message("template.data keys must not be '.' or '..'"))]
    #[x_kube(validation = Rule::new("self.all(k, k.contains('{{') || k == '..' || !k.startsWith('..'))")
        .message("template.data keys must not start with '..'"))]
    pub data: BTreeMap<String, String>,
    /// Replace (default): with `data` templates, the Secret holds only the templates' keys.
    /// Merge: it holds the fetched keys too (a template wins on the same key).
    #[serde(default)]
    pub merge_policy: TemplateMergePolicy,
    /// ESO's `engineVersion`: v2 (the default, Go templates) is the only engine.
    #[serde(default)]
    pub engine_version: EngineVersion,
    /// Templates kept elsewhere (ESO's `templateFrom`), applied in order before `data` (which
    /// wins on the same key): items of a ConfigMap or Secret of the ExternalSecret's namespace
    /// (watched: an edit renders again), or a literal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub template_from: Vec<TemplateFrom>,
}

/// One `templateFrom` entry: exactly one of `configMap`, `secret` or `literal`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.configMap) ? 1 : 0) + (has(self.secret) ? 1 : 0) + (has(self.literal) ? 1 : 0) == 1")
    .message("each template.templateFrom entry needs exactly one of configMap, secret or literal"))]
#[serde(rename_all = "camelCase")]
pub struct TemplateFrom {
    /// Items of a ConfigMap of the ExternalSecret's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<TemplateRef>,
    /// Items of a Secret of the ExternalSecret's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<TemplateRef>,
    /// Where the rendered templates go: Data (the default), Annotations or Labels.
    #[serde(default)]
    pub target: TemplateTarget,
    /// A template whose output is YAML `key: value` lines, each one added to the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub literal: Option<String>,
}

/// A ConfigMap or Secret holding templates, and which of its keys to use.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 64))]
    pub items: Vec<TemplateRefItem>,
}

/// One key of a template ConfigMap or Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRefItem {
    /// The key holding the template.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Values (default): the rendered template is the value of `key` in the target.
    /// KeysAndValues: it is YAML `key: value` lines, each one added to the target.
    #[serde(default)]
    pub template_as: TemplateScope,
}

/// How a template's output becomes keys (ESO's `templateAs`).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TemplateScope {
    #[default]
    Values,
    KeysAndValues,
}

/// Where a `templateFrom` entry's output goes.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TemplateTarget {
    #[default]
    Data,
    Annotations,
    Labels,
}

/// ESO's template engine versions; v1 (ESO's legacy engine) is accepted by the schema so that
/// admission can say it is not supported.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineVersion {
    #[serde(rename = "v1")]
    #[schemars(rename = "v1")]
    V1,
    #[default]
    #[serde(rename = "v2")]
    #[schemars(rename = "v2")]
    V2,
}

/// What a template does with the fetched keys.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TemplateMergePolicy {
    /// The Secret holds only the template's keys.
    #[default]
    Replace,
    /// The Secret holds the fetched keys and the template's keys.
    Merge,
}

/// Labels and annotations for the written Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.finalizers)")
    .message("template.metadata.finalizers is not supported by Lockstep: remove it"))]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels added to the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 317)").message("label keys must be at most 317 characters"))]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 65536}))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 317)")
        .message("annotation keys must be at most 317 characters"))]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::unsupported_strings")]
    pub finalizers: Option<serde_json::Value>,
}

/// How the Secret is created and owned.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CreationPolicy {
    /// Create the Secret and own it (it is garbage-collected with the ExternalSecret).
    #[default]
    Owner,
    /// Create the Secret without an owner reference.
    Orphan,
    /// Only add our keys to an existing Secret; other keys stay.
    Merge,
    /// Do not write a Secret.
    None,
}

/// What happens to the Secret when its AWS secrets are gone.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the Secret as it was.
    #[default]
    Retain,
    /// Delete the Secret once every AWS secret it is built from is deleted.
    Delete,
}

/// One Secret key from one AWS secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.sourceRef)").message(SOURCE_REF_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretData {
    /// The key in the Secret: 1 to 253 letters, digits, '-', '_' or '.', not "." or ".." and not
    /// starting with "..".
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(SECRET_KEY_CHARS).message(SECRET_KEY_CHARS_MESSAGE))]
    #[x_kube(validation = Rule::new(SECRET_KEY_NOT_DOTS).message(SECRET_KEY_NOT_DOTS_MESSAGE))]
    #[x_kube(validation = Rule::new(SECRET_KEY_NO_DOTDOT_PREFIX).message(SECRET_KEY_NO_DOTDOT_PREFIX_MESSAGE))]
    pub secret_key: String,
    /// The AWS secret (and property) to read.
    pub remote_ref: RemoteRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::unsupported")]
    pub source_ref: Option<serde_json::Value>,
}

/// A reference to an AWS secret, or one property of its JSON value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRef {
    /// Name or ARN of the AWS secret.
    #[schemars(length(min = 1, max = 2048))]
    pub key: String,
    /// A dotted path into the JSON value (`a.b.c`); write `\.` for a dot inside a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub property: Option<String>,
    /// ESO's `version`: a staging label (AWSCURRENT when left out), or `uuid/<versionId>` for one
    /// pinned version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("!self.startsWith('uuid/') || size(self) >= 37")
        .message("remoteRef.version uuid/<versionId> needs the version id after uuid/"))]
    pub version: Option<String>,
    /// ESO's `metadataPolicy`: None (default) reads the value; Fetch reads the secret's tags, as a
    /// JSON object of tag -> value (a `property` picks one tag).
    #[serde(default)]
    pub metadata_policy: MetadataPolicy,
    /// ESO's `nullBytePolicy`: Ignore (default) writes values with NUL bytes as they are; Fail
    /// refuses them (InvalidValue).
    #[serde(default)]
    pub null_byte_policy: NullBytePolicy,
    /// How the value is decoded before it is written: None (default), Base64, Base64URL, or Auto
    /// (base64 if it decodes, else as is).
    #[serde(default, skip_serializing_if = "DecodingStrategy::is_none")]
    pub decoding_strategy: DecodingStrategy,
    /// What happens to keys that are not valid Secret keys (dataFrom.extract; on `data` entries it
    /// changes nothing, as in ESO): Default (ESO's default) turns each invalid character into `_`;
    /// Unicode into `_U<hex>_`.
    #[serde(default)]
    pub conversion_strategy: ConversionStrategy,
}

/// What `remoteRef` reads: the value, or the secret's tags.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum MetadataPolicy {
    #[default]
    None,
    Fetch,
}

/// What happens to a value that holds a NUL byte.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum NullBytePolicy {
    #[default]
    Ignore,
    Fail,
}

/// How a fetched value is decoded.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum DecodingStrategy {
    /// As is.
    #[default]
    None,
    /// Standard base64 (padding optional).
    Base64,
    /// URL-safe base64 (padding optional).
    #[serde(rename = "Base64URL")]
    #[schemars(rename = "Base64URL")]
    Base64Url,
    /// Base64 or URL-safe base64 when the value decodes, else as is.
    Auto,
}

impl DecodingStrategy {
    fn is_none(&self) -> bool {
        *self == DecodingStrategy::None
    }
}

/// How keys that are not valid Secret keys are made valid.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum ConversionStrategy {
    /// extract: keys are kept as they are. find: each invalid character (such as `/`) becomes `_`.
    #[default]
    Default,
    /// Each invalid character becomes `_U<hex code point>_` (`/` -> `_U002f_`).
    Unicode,
}

/// Many Secret keys from one source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.extract) != has(self.find)")
    .message("each dataFrom entry needs exactly one of extract or find (generators through sourceRef are not supported by Lockstep)"))]
#[x_kube(validation = Rule::new("!has(self.sourceRef)").message(SOURCE_REF_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretDataFrom {
    /// Every top-level key of a JSON secret becomes a Secret key; values that are not strings are
    /// written as the exact JSON text AWS holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<RemoteRef>,
    /// Many AWS secrets, one Secret key each (its name, made a valid key), value as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<FindRef>,
    /// Rules applied in order to the keys of this entry (before conversionStrategy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rewrite: Vec<Rewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::unsupported")]
    pub source_ref: Option<serde_json::Value>,
}

/// Which AWS secrets a `dataFrom.find` selects. Every condition given must hold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.path) || has(self.name) || (has(self.tags) && size(self.tags) > 0)")
    .message("find needs at least one of path, name.regexp or tags"))]
#[serde(rename_all = "camelCase")]
pub struct FindRef {
    /// Name prefix, e.g. `prod/app/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub path: Option<String>,
    /// A regular expression the name must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<FindName>,
    /// Tags the secret must carry, with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": 256}))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 128)").message("tag keys must be at most 128 characters"))]
    pub tags: BTreeMap<String, String>,
    /// How AWS secret names become Secret keys: Default turns each invalid character (such as
    /// `/`) into `_`; Unicode into `_U<hex>_`.
    #[serde(default)]
    pub conversion_strategy: ConversionStrategy,
    /// How each value is decoded (see remoteRef.decodingStrategy).
    #[serde(default, skip_serializing_if = "DecodingStrategy::is_none")]
    pub decoding_strategy: DecodingStrategy,
}

/// A name pattern.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FindName {
    /// A regular expression (RE2-like syntax) searched for in the AWS secret name; anchor it with
    /// `^...$` to match the whole name.
    #[schemars(length(min = 1, max = 256))]
    pub regexp: String,
}

/// One key rewrite rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.transform) && !has(self.merge)")
    .message("dataFrom[].rewrite[].transform and .merge are not supported by Lockstep: use rewrite[].regexp"))]
#[x_kube(validation = Rule::new("has(self.regexp)").message("each rewrite rule needs regexp"))]
#[serde(rename_all = "camelCase")]
pub struct Rewrite {
    /// Replace every match of `source` in each key with `target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<RewriteRegexp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::unsupported")]
    pub transform: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::unsupported")]
    pub merge: Option<serde_json::Value>,
}

/// A regexp replacement on keys.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RewriteRegexp {
    /// A regular expression.
    #[schemars(length(min = 1, max = 256))]
    pub source: String,
    /// The replacement; `$1` or `${name}` refer to capture groups.
    #[schemars(length(max = 256))]
    pub target: String,
}

/// Observed state of an ExternalSecret. Never holds secret values.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` with a reason from the README's table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// ESO's field: the ExternalSecret's generation and a hash of its labels and annotations at
    /// the last sync; a change of either (`kubectl annotate ... force-sync=...`) syncs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_resource_version: Option<String>,
    /// ESO's field: when the Secret was last written (or found already holding what AWS holds)
    /// by a sync that fetched from AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The AWS secret versions that are live in the Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceStatus>,
    /// The Secret this ExternalSecret last wrote (ESO's field): when `target.name` changes, the
    /// Secret named here is the one left behind (deleted under creationPolicy Owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<k8s_openapi::api::core::v1::LocalObjectReference>,
}

/// One AWS secret version that is live in the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// The name or ARN as written in the spec.
    pub key: String,
    /// The stage that was read, when a stage was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_stage: Option<String>,
    /// The version id that was read.
    pub version_id: String,
    /// When the version read was created (RFC 3339), as AWS says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date: Option<String>,
}

impl RemoteRef {
    /// The stage to ask for: always explicit (moto and AWS differ when it is left out).
    pub fn stage(&self) -> Option<&str> {
        match self.version.as_deref() {
            None => Some(AWSCURRENT),
            Some(v) if v.starts_with(VERSION_ID_PREFIX) => None,
            Some(stage) => Some(stage),
        }
    }

    /// The version id `version` pins (`uuid/<id>`), if it pins one.
    pub fn version_id(&self) -> Option<&str> {
        self.version.as_deref()?.strip_prefix(VERSION_ID_PREFIX)
    }
}

impl ExternalSecretSpec {
    /// How often the sources are checked for changes, after `refreshPolicy` (ESO's meaning):
    /// Periodic (or no policy) follows `refreshInterval`; OnChange and CreatedOnce never poll
    /// (`None`), they sync when the ExternalSecret changes.
    pub fn schedule(&self) -> Result<Option<std::time::Duration>, String> {
        let interval = self.refresh()?;
        Ok(match self.refresh_policy {
            None | Some(RefreshPolicy::Periodic) => interval,
            Some(RefreshPolicy::OnChange | RefreshPolicy::CreatedOnce) => None,
        })
    }

    /// `refreshInterval` parsed; `None` means sync once.
    pub fn refresh(&self) -> Result<Option<std::time::Duration>, String> {
        match self.refresh_interval.as_deref() {
            None => Ok(Some(DEFAULT_REFRESH)),
            Some("0") => Ok(None),
            Some(s) => {
                let d = super::go_duration("refreshInterval", s)?;
                if !d.is_zero() && d < MIN_REFRESH {
                    return Err(format!("refreshInterval {s:?} must be 0 (sync once) or at least 1s"));
                }
                Ok(if d.is_zero() { None } else { Some(d) })
            }
        }
    }
}

impl ExternalSecret {
    /// Name of the Secret this ExternalSecret writes.
    pub fn target_name(&self) -> &str {
        self.spec.target.name.as_deref().or(self.metadata.name.as_deref()).unwrap_or_default()
    }
}
