//! One test's world: a namespace, clients for both APIs, an operator; applying objects and waiting
//! for what the operator writes.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::Value;

use crate::manifests::{Store, creds};
use crate::{Operator, TestEnv, WAIT, eventually};

/// Server-side apply `obj` (any kind the apiserver serves, by its `apiVersion` and `kind`): into
/// `ns` when the kind is namespaced and `ns` is given, cluster-wide otherwise.
pub async fn apply(kube: &Client, ns: Option<&str>, obj: impl Into<Value>) -> anyhow::Result<()> {
    let obj = obj.into();
    let field =
        |path: &str| obj.pointer(path).and_then(Value::as_str).ok_or_else(|| anyhow::anyhow!("no {path} in {obj}"));
    let (api_version, kind, name) = (field("/apiVersion")?, field("/kind")?, field("/metadata/name")?);
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(kube, &gvk).await?;
    let api: Api<kube::core::DynamicObject> = match (ns, caps.scope) {
        (Some(ns), kube::discovery::Scope::Namespaced) => Api::namespaced_with(kube.clone(), ns, &ar),
        _ => Api::all_with(kube.clone(), &ar),
    };
    api.patch(name, &PatchParams::apply("lockstep-tests").force(), &Patch::Apply(&obj)).await?;
    Ok(())
}

/// Merge `b` into `a`: objects key by key, recursively; anything else is replaced.
pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// The value of `key` in Secret `s`, as text. Panics when the Secret has no such key.
pub fn text(s: &Secret, key: &str) -> String {
    let Some(value) = s.data.as_ref().and_then(|d| d.get(key)) else {
        let keys: Vec<_> = s.data.iter().flat_map(|d| d.keys()).collect();
        panic!("Secret {:?} has no key {key:?} (its keys: {keys:?})", s.metadata.name);
    };
    String::from_utf8_lossy(&value.0).to_string()
}

impl TestEnv {
    /// Server-side apply `obj` into this namespace (or cluster-wide, for a cluster-scoped kind).
    pub async fn apply(&self, obj: impl Into<Value>) -> anyhow::Result<()> {
        apply(&self.kube, Some(&self.ns), obj).await
    }

    /// Moto's credential Secret ([`creds`]) and `store`.
    pub async fn store(&self, store: Store) -> anyhow::Result<()> {
        self.apply(creds()).await?;
        self.apply(store).await
    }

    /// Apply `obj`, which the apiserver must refuse: the refusal as text (an error if it was applied).
    pub async fn rejection(&self, obj: impl Into<Value>) -> anyhow::Result<String> {
        let obj = obj.into();
        match self.apply(obj.clone()).await {
            Ok(()) => anyhow::bail!("applied, though it should have been refused: {obj}"),
            Err(e) => Ok(e.to_string()),
        }
    }
}

/// One test's world: namespace, clients, an operator watching the namespace.
pub struct World {
    pub env: TestEnv,
    pub operator: Operator,
}

impl World {
    pub fn ns(&self) -> &str {
        &self.env.ns
    }

    /// An AWS secret name unique to this test.
    pub fn aws_name(&self, short: &str) -> String {
        format!("{}/{short}", self.env.ns)
    }

    /// Server-side apply `obj` into this namespace (or cluster-wide, for a cluster-scoped kind).
    pub async fn apply(&self, obj: impl Into<Value>) -> anyhow::Result<()> {
        self.env.apply(obj).await
    }

    /// Moto's credential Secret ([`creds`]) and `store`.
    pub async fn store(&self, store: Store) -> anyhow::Result<()> {
        self.env.store(store).await
    }

    /// ExternalSecret `name` with `spec` (see [`crate::manifests::es`]).
    pub async fn external_secret(&self, name: &str, spec: impl Into<Value>) -> anyhow::Result<()> {
        self.apply(crate::manifests::object("ExternalSecret", name, spec)).await
    }

    /// A Deployment `name` (a rollout-restart target; no pod ever runs on the rig).
    pub async fn deployment(&self, name: &str) -> anyhow::Result<()> {
        self.apply(crate::manifests::deployment(name)).await
    }

    /// Create AWS secret [`World::aws_name`]`(short)` holding `value`; returns its name.
    pub async fn create_aws(&self, short: &str, value: &str) -> anyhow::Result<String> {
        let name = self.aws_name(short);
        self.env.aws.create_secret().name(&name).secret_string(value).send().await?;
        Ok(name)
    }

    /// Create Secret `name` with `data`, as a user would (no managed-by label).
    pub async fn plain_secret(&self, name: &str, data: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.data = Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect());
        self.secrets().create(&PostParams::default(), &s).await?;
        Ok(())
    }

    pub fn secrets(&self) -> Api<Secret> {
        self.api()
    }

    /// Any namespaced kind of this namespace (`w.api::<ExternalSecret>()`).
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.env.kube.clone(), self.ns())
    }

    /// The Secrets of this namespace that carry our managed-by label, sorted by name.
    pub async fn managed_secrets(&self) -> anyhow::Result<Vec<Secret>> {
        let managed = ListParams::default().labels("app.kubernetes.io/managed-by=lockstep");
        let mut list = self.secrets().list(&managed).await?.items;
        list.sort_by_key(|s| s.metadata.name.clone());
        Ok(list)
    }

    /// Poll `check` until it returns Some (within [`WAIT`]); the error names `what` and holds the
    /// operator's log.
    pub async fn eventually<T, F, Fut>(&self, what: &str, check: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        self.eventually_within(WAIT, what, check).await
    }

    /// [`World::eventually`] with a `timeout` of its own.
    pub async fn eventually_within<T, F, Fut>(&self, timeout: Duration, what: &str, check: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        eventually(timeout, what, check)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\noperator log:\n{}", self.operator.logs()))
    }

    /// Wait until Secret `name` has `key` == `value`.
    pub async fn wait_value(&self, name: &str, key: &str, value: &str) -> anyhow::Result<Secret> {
        self.wait_value_within(WAIT, name, key, value).await
    }

    /// Wait up to `timeout` until Secret `name` has `key` == `value`.
    pub async fn wait_value_within(
        &self,
        timeout: Duration,
        name: &str,
        key: &str,
        value: &str,
    ) -> anyhow::Result<Secret> {
        let api = self.secrets();
        self.eventually_within(timeout, &format!("Secret {name}[{key}] == expected"), || {
            let api = api.clone();
            async move {
                let s = api.get(name).await.ok()?;
                let v = s.data.as_ref()?.get(key)?;
                (v.0 == value.as_bytes()).then_some(s)
            }
        })
        .await
    }
}
