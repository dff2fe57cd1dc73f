//! Dereferencing stores: the two store kinds behind one [`Store`] trait, resolving the store an
//! ExternalSecret names (from the watch caches), reading credential Secrets, and the AWS client of
//! each store, built once and reused until its settings or credentials change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::PostParams;
use kube::runtime::reflector::{self, ObjectRef};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use super::StoreId;
use super::fetcher::Fetcher;
use super::target::TargetView;
use super::watch::Watched;
use crate::api::{
    AwsProvider, ClusterSecretStore, SecretKeySelector, SecretStore, SecretStoreStatus, ServiceAccountSelector,
    StoreKind,
};
use crate::aws::{self, Calls, ServiceAccountIdentity, ServiceAccountTokens, StaticKeys, StoreClient, StoreConfig};
use crate::error::{Error, Result};
use crate::lock;
use crate::metrics::Metrics;

/// A SecretStore or a ClusterSecretStore: what the store controller and resolution need of each.
pub trait Store: Watched + Serialize {
    const KIND: StoreKind;
    fn provider(&self) -> &AwsProvider;
    fn status(&self) -> Option<&SecretStoreStatus>;
    /// The namespace whose Secrets hold its credentials: a SecretStore's own; `None` for a
    /// ClusterSecretStore, whose references name theirs.
    fn credential_namespace(&self) -> Option<String>;
    /// The API its objects are watched on (one namespace, or all).
    fn watch_api(client: &Client, namespace: Option<&str>) -> Api<Self>;
    /// The API its own status is written through.
    fn own_api(&self, client: &Client) -> Api<Self>;
    /// Whether its credentials come from each ExternalSecret's namespace (a referent
    /// ClusterSecretStore).
    fn referent(&self) -> bool {
        false
    }

    fn id(&self) -> StoreId {
        StoreId { kind: Self::KIND, namespace: self.credential_namespace(), name: self.name_any() }
    }

    /// The object a store id of this kind names.
    fn ref_of(id: &StoreId) -> ObjectRef<Self> {
        match &id.namespace {
            Some(ns) => ObjectRef::new(&id.name).within(ns),
            None => ObjectRef::new(&id.name),
        }
    }
}

impl Store for SecretStore {
    const KIND: StoreKind = StoreKind::SecretStore;
    fn provider(&self) -> &AwsProvider {
        &self.spec.provider.aws
    }
    fn status(&self) -> Option<&SecretStoreStatus> {
        self.status.as_ref()
    }
    fn credential_namespace(&self) -> Option<String> {
        self.namespace()
    }
    fn watch_api(client: &Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    fn own_api(&self, client: &Client) -> Api<Self> {
        Api::namespaced(client.clone(), &self.namespace().unwrap_or_default())
    }
}

impl Store for ClusterSecretStore {
    const KIND: StoreKind = StoreKind::ClusterSecretStore;
    fn provider(&self) -> &AwsProvider {
        &self.spec.provider.aws
    }
    fn status(&self) -> Option<&SecretStoreStatus> {
        self.status.as_ref()
    }
    fn credential_namespace(&self) -> Option<String> {
        None
    }
    fn watch_api(client: &Client, _: Option<&str>) -> Api<Self> {
        Api::all(client.clone())
    }
    fn referent(&self) -> bool {
        self.spec.referent()
    }
    fn own_api(&self, client: &Client) -> Api<Self> {
        Api::all(client.clone())
    }
}

/// AWS calls per second per store, and the burst allowed above it.
#[derive(Clone, Copy, Debug)]
pub struct AwsRate {
    pub qps: f64,
    pub burst: u32,
}

/// A Secret as a read finds it: none, read now, or kept from an earlier read (what was kept of it)
/// while it is unchanged.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a short-lived return value; T (a Secret or its view) is as large as Read"
)]
pub enum Found<T> {
    /// There is none.
    Gone,
    /// Read from the apiserver.
    Read(Secret),
    /// Unchanged since it was read.
    Cached(T),
}

/// A target Secret as a sync finds it: kept, what the fast path needs of it (no data).
pub type Target = Found<TargetView>;

impl Target {
    /// What the fast path needs.
    pub fn view(&self) -> Option<TargetView> {
        match self {
            Found::Gone => None,
            Found::Read(s) => Some(TargetView::of(s)),
            Found::Cached(v) => Some(v.clone()),
        }
    }
}

/// A store resolved for one ExternalSecret.
pub struct ResolvedStore {
    pub id: StoreId,
    pub client: StoreClient,
}

/// Store resolution and the clients of every store.
pub struct Stores {
    client: Client,
    metrics: Arc<Metrics>,
    rate: AwsRate,
    fetcher: Arc<Fetcher>,
    /// Filled by the ExternalSecret controller's store watches; a GET only when they do not hold
    /// the store (not filled yet, or the store is newer than the watch).
    secret_stores: reflector::Store<SecretStore>,
    cluster_secret_stores: reflector::Store<ClusterSecretStore>,
    /// The resource version of each Secret in scope, from the ExternalSecret controller's metadata
    /// watch: a Secret read before ([`Stores::secret`]) is served from `secrets` while its
    /// resource version here is the one read, so a sync where nothing moved reads no Secret.
    secret_versions: super::watch::Versions,
    secrets: Mutex<HashMap<(String, String), Arc<Secret>>>,
    /// Target Secrets as the fast path needs them (no data), by the same rule.
    targets: Mutex<HashMap<(String, String), TargetView>>,
    clients: Mutex<HashMap<StoreId, (StoreConfig, StoreClient)>>,
}

/// The write halves of the store caches, for the watches that fill them.
pub struct StoreCacheWriters {
    pub secret_stores: reflector::store::Writer<SecretStore>,
    pub cluster_secret_stores: reflector::store::Writer<ClusterSecretStore>,
    pub secret_versions: super::watch::Versions,
}

impl Stores {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        rate: AwsRate,
        fetcher: Arc<Fetcher>,
    ) -> (Self, StoreCacheWriters) {
        let (secret_stores, ss_writer) = reflector::store();
        let (cluster_secret_stores, css_writer) = reflector::store();
        let secret_versions = super::watch::Versions::default();
        let stores = Self {
            client,
            metrics,
            rate,
            fetcher,
            secret_stores,
            cluster_secret_stores,
            secret_versions: secret_versions.clone(),
            secrets: Mutex::default(),
            targets: Mutex::default(),
            clients: Mutex::default(),
        };
        let writers =
            StoreCacheWriters { secret_stores: ss_writer, cluster_secret_stores: css_writer, secret_versions };
        (stores, writers)
    }

    /// Find the store an ExternalSecret of `namespace` names and check it may use it.
    pub async fn resolve(&self, namespace: &str, kind: StoreKind, name: &str) -> Result<ResolvedStore> {
        match kind {
            StoreKind::SecretStore => {
                let key = ObjectRef::new(name).within(namespace);
                let store = self.cached_or_get(&self.secret_stores, key).await?.ok_or_else(|| {
                    Error::StoreNotReady(format!("SecretStore {name:?} not found in namespace {namespace:?}"))
                })?;
                self.resolved(&*store).await
            }
            StoreKind::ClusterSecretStore => {
                let store = self
                    .cached_or_get(&self.cluster_secret_stores, ObjectRef::new(name))
                    .await?
                    .ok_or_else(|| Error::StoreNotReady(format!("ClusterSecretStore {name:?} not found")))?;
                self.check_allowed(&store, namespace).await?;
                if store.spec.per_namespace() {
                    // A client of the ExternalSecret's namespace's own: its credentials (referent)
                    // or its session tag.
                    let id = StoreId { namespace: Some(namespace.to_string()), ..store.id() };
                    let cred_ns = store.spec.referent().then_some(namespace);
                    let client = self.client_for(&id, store.provider(), cred_ns).await?;
                    return Ok(ResolvedStore { id, client });
                }
                self.resolved(&*store).await
            }
        }
    }

    async fn resolved<S: Store>(&self, store: &S) -> Result<ResolvedStore> {
        let id = store.id();
        let client = self.client_for(&id, store.provider(), store.credential_namespace().as_deref()).await?;
        Ok(ResolvedStore { id, client })
    }

    async fn check_allowed(&self, store: &ClusterSecretStore, namespace: &str) -> Result<()> {
        if store.spec.conditions.is_empty() {
            return Ok(());
        }
        let ns = Api::<Namespace>::all(self.client.clone()).get(namespace).await?;
        if store.spec.allows(namespace, &ns.metadata.labels.unwrap_or_default()) {
            return Ok(());
        }
        Err(Error::StoreNotAllowed(format!(
            "ClusterSecretStore {:?} does not allow namespace {namespace:?}: add it to the store's spec.conditions",
            store.name_any()
        )))
    }

    /// The object `key` from `cache`, or from the apiserver when the cache does not hold it.
    async fn cached_or_get<K: Store>(&self, cache: &reflector::Store<K>, key: ObjectRef<K>) -> Result<Option<Arc<K>>> {
        if let Some(cached) = cache.get(&key) {
            return Ok(Some(cached));
        }
        let api = K::watch_api(&self.client, key.namespace.as_deref());
        Ok(api.get_opt(&key.name).await?.map(Arc::new))
    }

    /// The AWS client of a store, built once and reused until its settings or its credentials
    /// change. `cred_ns` is where its credential Secrets live (see [`Store::credential_namespace`]).
    pub async fn client_for(&self, id: &StoreId, aws: &AwsProvider, cred_ns: Option<&str>) -> Result<StoreClient> {
        let keys = self.static_keys(aws, cred_ns).await?;
        let mut cfg = StoreConfig::new(aws, keys, aws::session_name(id.namespace.as_deref(), &id.name));
        if let (true, Some(ns)) = (aws.namespace_session_tag, id.namespace.as_deref()) {
            cfg.session_tags.push((crate::api::NAMESPACE_TAG.to_string(), ns.to_string()));
        }
        let cfg = match aws.auth.as_ref().and_then(|a| a.jwt.as_ref()) {
            Some(jwt) => self.with_service_account(cfg, &jwt.service_account_ref, cred_ns).await?,
            None => cfg,
        };
        let (calls, changed) = match lock(&self.clients).get(id) {
            Some((known, client)) if *known == cfg => return Ok(client.clone()),
            Some((_, client)) => (client.calls().clone(), true),
            None => (Calls::new(self.metrics.clone(), id.to_string(), self.rate.qps, self.rate.burst), false),
        };
        let tokens = Arc::new(Tokens { client: self.client.clone() });
        let client = aws::build(&cfg, calls, tokens).await;
        {
            // Two callers that both found no client (the store check and a sync, at once) built
            // one each: the first in wins, so one client, and one STS session, serves the store.
            // A client makes no call until used, so the other is dropped unused.
            let mut clients = lock(&self.clients);
            if let Some((known, first)) = clients.get(id)
                && *known == cfg
            {
                return Ok(first.clone());
            }
            clients.insert(id.clone(), (cfg, client.clone()));
        }
        if changed {
            // What was seen through the old settings says nothing about the new ones.
            self.fetcher.forget(id);
        }
        Ok(client)
    }

    /// Secret `name` of `namespace`: from what was read before while the watch shows the same
    /// resource version, else from the apiserver. A Secret the watch does not cover (another
    /// namespace than the one watched) or has not seen yet is read each time.
    /// Shared, not copied: a credential Secret is read at every sync of its store's
    /// ExternalSecrets.
    pub async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Arc<Secret>>> {
        let version = |s: &Arc<Secret>| s.metadata.resource_version.clone();
        let keep = |s: &Secret| Arc::new(s.clone());
        Ok(match self.read_or_kept(&self.secrets, namespace, name, version, keep).await? {
            Found::Gone => None,
            Found::Read(s) => Some(Arc::new(s)),
            Found::Cached(s) => Some(s),
        })
    }

    /// A target Secret: its view (no data) while the watch shows the resource version it was read
    /// at, else read from the apiserver.
    pub async fn target(&self, namespace: &str, name: &str) -> Result<Target> {
        let version = TargetView::resource_version;
        self.read_or_kept(&self.targets, namespace, name, version, TargetView::of).await
    }

    /// Keep the view of a target Secret as this process just wrote it (the apiserver's answer to
    /// the apply), so that the reconcile its own write triggers serves it from the view once the
    /// watch shows that resource version, instead of reading it back.
    pub fn keep_target(&self, namespace: &str, name: &str, written: &Secret) {
        lock(&self.targets).insert((namespace.to_string(), name.to_string()), TargetView::of(written));
    }

    /// Secret `name` of `namespace`: what `keep` made of it when it was last read, while the watch
    /// shows the resource version (`version`) it was read at; else read from the apiserver, and
    /// kept only when the watch covers it (nothing else would say when it changed).
    async fn read_or_kept<T: Clone>(
        &self,
        cache: &Mutex<HashMap<(String, String), T>>,
        namespace: &str,
        name: &str,
        version: impl Fn(&T) -> Option<String>,
        keep: impl Fn(&Secret) -> T,
    ) -> Result<Found<T>> {
        let key = (namespace.to_string(), name.to_string());
        let current = self.secret_versions.get(namespace, name);
        if let Some(kept) = lock(cache).get(&key).filter(|k| current.is_some() && version(k) == current) {
            return Ok(Found::Cached(kept.clone()));
        }
        let read = Api::<Secret>::namespaced(self.client.clone(), namespace).get_opt(name).await?;
        let mut cache = lock(cache);
        match &read {
            Some(s) if current.is_some() => {
                cache.insert(key, keep(s));
            }
            _ => {
                cache.remove(&key);
            }
        }
        Ok(match read {
            Some(s) => Found::Read(s),
            None => Found::Gone,
        })
    }

    /// The ServiceAccount `aws.auth.jwt` names, and the role its token is exchanged for.
    async fn with_service_account(
        &self,
        cfg: StoreConfig,
        sel: &ServiceAccountSelector,
        cred_ns: Option<&str>,
    ) -> Result<StoreConfig> {
        let ns = service_account_namespace(sel, cred_ns)?;
        let sa = Api::<ServiceAccount>::namespaced(self.client.clone(), &ns).get_opt(&sel.name).await.map_err(|e| {
            let e = Error::from(e);
            Error::StoreNotReady(format!("cannot read ServiceAccount {ns}/{}: {e}", sel.name))
        })?;
        let sa = sa.ok_or_else(|| Error::StoreNotReady(format!("ServiceAccount {ns}/{} not found", sel.name)))?;
        let annotated = sa.annotations().get(ROLE_ANNOTATION).filter(|r| !r.is_empty()).cloned();
        cfg.with_service_account(ns.clone(), sel.name.clone(), sel.audiences.clone(), annotated).ok_or_else(|| {
            Error::StoreNotReady(format!(
                "no role for ServiceAccount {ns}/{}: set provider.aws.role or annotate it with {ROLE_ANNOTATION}",
                sel.name
            ))
        })
    }

    /// The keys `aws.auth.secretRef` names, each credential Secret read once.
    async fn static_keys(&self, aws: &AwsProvider, cred_ns: Option<&str>) -> Result<Option<StaticKeys>> {
        let Some(r) = aws.auth.as_ref().and_then(|a| a.secret_ref.as_ref()) else { return Ok(None) };
        let mut read = Vec::new();
        let mut key = async |sel: &SecretKeySelector| {
            let ns = credential_namespace(sel, cred_ns)?;
            self.read_key(sel, ns, &mut read).await
        };
        let access_key_id = key(&r.access_key_id_secret_ref).await?;
        let secret_access_key = key(&r.secret_access_key_secret_ref).await?;
        let session_token = match &r.session_token_secret_ref {
            Some(sel) => Some(key(sel).await?),
            None => None,
        };
        Ok(Some(StaticKeys { access_key_id, secret_access_key, session_token }))
    }

    async fn read_key(
        &self,
        sel: &SecretKeySelector,
        ns: Option<String>,
        read: &mut Vec<Arc<Secret>>,
    ) -> Result<String> {
        let Some(ns) = ns else {
            return Err(Error::StoreNotReady(format!(
                "credential Secret {:?} needs a namespace in a ClusterSecretStore",
                sel.name
            )));
        };
        // One already read by this sync (a Secret read by name carries its name and namespace).
        let is_it = |s: &&Arc<Secret>| {
            s.metadata.namespace.as_deref() == Some(ns.as_str())
                && s.metadata.name.as_deref() == Some(sel.name.as_str())
        };
        let secret = match read.iter().find(is_it) {
            Some(s) => s.clone(),
            None => {
                let s = self
                    .secret(&ns, &sel.name)
                    .await
                    .map_err(|e| Error::StoreNotReady(format!("cannot read credential Secret {ns}/{}: {e}", sel.name)))?
                    .ok_or_else(|| Error::StoreNotReady(format!("credential Secret {ns}/{} not found", sel.name)))?;
                read.push(s.clone());
                s
            }
        };
        let bytes = secret.data.as_ref().and_then(|d| d.get(&sel.key)).map(|b| b.0.clone()).ok_or_else(|| {
            Error::StoreNotReady(format!("credential Secret {ns}/{} has no key {:?}", sel.name, sel.key))
        })?;
        String::from_utf8(bytes).map(|s| s.trim().to_string()).map_err(|_| {
            Error::StoreNotReady(format!("key {:?} of credential Secret {ns}/{} is not UTF-8", sel.key, sel.name))
        })
    }
}

/// The annotation IRSA puts on a ServiceAccount: the role its tokens are for.
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// How long a requested token lives: the shortest the TokenRequest API issues. It is handed to STS
/// at once; a fresh one is requested whenever the credentials are renewed.
const TOKEN_SECONDS: i64 = 600;

/// ServiceAccount tokens from the TokenRequest API.
struct Tokens {
    client: Client,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens")
    }
}

impl ServiceAccountTokens for Tokens {
    fn token<'a>(&'a self, sa: &'a ServiceAccountIdentity) -> BoxFuture<'a, std::result::Result<String, String>> {
        Box::pin(async move {
            let request = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: Some(sa.audiences.clone()),
                    expiration_seconds: Some(TOKEN_SECONDS),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let api = Api::<ServiceAccount>::namespaced(self.client.clone(), &sa.namespace);
            let issued = api.create_token_request(&sa.name, &PostParams::default(), &request).await.map_err(|e| {
                format!("cannot request a token for ServiceAccount {}/{}: {}", sa.namespace, sa.name, Error::from(e))
            })?;
            issued
                .status
                .and_then(|s| s.token)
                .ok_or_else(|| format!("the TokenRequest for {}/{} returned no token", sa.namespace, sa.name))
        })
    }
}

/// The namespace of the ServiceAccount `auth.jwt` names: the same rule as credential Secrets'.
fn service_account_namespace(sel: &ServiceAccountSelector, own: Option<&str>) -> Result<String> {
    match (own, sel.namespace.as_deref()) {
        (Some(own), Some(other)) if other != own => Err(Error::StoreNotReady(format!(
            "a SecretStore uses ServiceAccounts of its own namespace: ServiceAccount {:?} names namespace {other:?}; remove namespace from provider.aws.auth.jwt.serviceAccountRef",
            sel.name
        ))),
        (Some(own), _) => Ok(own.to_string()),
        (None, Some(named)) => Ok(named.to_string()),
        (None, None) => Err(Error::StoreNotReady(format!(
            "ServiceAccount {:?} needs a namespace in a ClusterSecretStore",
            sel.name
        ))),
    }
}

/// The namespace a credential Secret is read from. A SecretStore (`own` is its namespace) reads its
/// own namespace only: admission refuses `namespace` on its secretRef, and this refuses it again
/// should a CRD without that rule be installed. A ClusterSecretStore (`own` None) names it.
fn credential_namespace(sel: &SecretKeySelector, own: Option<&str>) -> Result<Option<String>> {
    match (own, sel.namespace.as_deref()) {
        (Some(own), Some(other)) if other != own => Err(Error::StoreNotReady(format!(
            "a SecretStore reads credentials from its own namespace: credential Secret {:?} names namespace {other:?}; remove namespace from aws.auth.secretRef",
            sel.name
        ))),
        (Some(own), _) => Ok(Some(own.to_string())),
        (None, named) => Ok(named.map(String::from)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_store_never_reads_credentials_of_another_namespace() {
        let sel =
            |ns: Option<&str>| SecretKeySelector { name: "c".into(), key: "k".into(), namespace: ns.map(String::from) };
        assert_eq!(credential_namespace(&sel(None), Some("team")).ok(), Some(Some("team".into())));
        assert_eq!(credential_namespace(&sel(Some("team")), Some("team")).ok(), Some(Some("team".into())));
        let err = credential_namespace(&sel(Some("kube-system")), Some("team")).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("own namespace") && e.contains("kube-system")));
        // A ClusterSecretStore names the namespace (None is refused later, with its own message).
        assert_eq!(credential_namespace(&sel(Some("ops")), None).ok(), Some(Some("ops".into())));
        assert_eq!(credential_namespace(&sel(None), None).ok(), Some(None));
    }

    #[test]
    fn a_secret_store_never_uses_a_service_account_of_another_namespace() {
        let sel = |ns: Option<&str>| ServiceAccountSelector {
            name: "sa".into(),
            namespace: ns.map(String::from),
            ..Default::default()
        };
        assert_eq!(service_account_namespace(&sel(None), Some("team")).ok().as_deref(), Some("team"));
        assert_eq!(service_account_namespace(&sel(Some("team")), Some("team")).ok().as_deref(), Some("team"));
        let err = service_account_namespace(&sel(Some("kube-system")), Some("team")).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("own namespace") && e.contains("kube-system")));
        assert_eq!(service_account_namespace(&sel(Some("ops")), None).ok().as_deref(), Some("ops"));
        assert!(service_account_namespace(&sel(None), None).is_err(), "a ClusterSecretStore names the namespace");
    }
}
