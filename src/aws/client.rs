use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, timeout::TimeoutConfig};
use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
use futures::future::BoxFuture;

use super::sdk::Sdk;
use super::seam::{Calls, StoreClient};
use super::sts_credentials::StsCredentials;
use crate::api::AwsProvider;

/// Static keys read from a Kubernetes Secret. `Debug` redacts them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticKeys(<redacted>)")
    }
}

/// A ServiceAccount whose token is exchanged for a role's credentials (`auth.jwt`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceAccountIdentity {
    pub namespace: String,
    pub name: String,
    /// The token's audiences (`sts.amazonaws.com` unless the store names others).
    pub audiences: Vec<String>,
    /// The role AssumeRoleWithWebIdentity asks for.
    pub role_arn: String,
}

/// Issues ServiceAccount tokens (the TokenRequest API); the controller implements it over its
/// cluster client. A token is only ever handed to STS.
pub trait ServiceAccountTokens: Send + Sync + fmt::Debug {
    fn token<'a>(&'a self, sa: &'a ServiceAccountIdentity) -> BoxFuture<'a, Result<String, String>>;
}

/// No ServiceAccount tokens: for clients of stores without `auth.jwt`, outside the controller.
#[derive(Debug)]
pub struct NoTokens;

impl ServiceAccountTokens for NoTokens {
    fn token<'a>(&'a self, _: &'a ServiceAccountIdentity) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async { Err("no ServiceAccount tokens can be requested here".to_string()) })
    }
}

/// The longest role session name STS accepts.
const SESSION_NAME_MAX: usize = 64;

/// The STS role session name of a store's sessions: `lockstep-<namespace>-<store>` (a
/// ClusterSecretStore's without namespace), so CloudTrail shows which tenant asked. Characters STS
/// does not allow become `-`; cut at STS's 64.
pub fn session_name(namespace: Option<&str>, store: &str) -> String {
    let raw = match namespace {
        Some(ns) => format!("{}-{ns}-{store}", crate::MANAGER),
        None => format!("{}-{store}", crate::MANAGER),
    };
    raw.chars()
        .map(|c| if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) { c } else { '-' })
        .take(SESSION_NAME_MAX)
        .collect()
}

/// Everything a store's AWS client depends on: when this changes, the client is rebuilt.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreConfig {
    pub region: String,
    /// Secrets Manager endpoint override.
    pub endpoint: Option<String>,
    /// STS endpoint override (falls back to `endpoint`).
    pub sts_endpoint: Option<String>,
    /// Role to assume on top of the credentials.
    pub role: Option<String>,
    pub external_id: Option<String>,
    /// Roles assumed in order before `role`.
    pub additional_roles: Vec<String>,
    /// Session tags (key, value) and transitive keys of the `role` session.
    pub session_tags: Vec<(String, String)>,
    pub transitive_tag_keys: Vec<String>,
    /// Static keys, or None for the ambient chain.
    pub keys: Option<StaticKeys>,
    /// A ServiceAccount's web identity instead of keys or the ambient chain.
    pub service_account: Option<ServiceAccountIdentity>,
    /// The role session name of every STS session this store opens.
    pub session_name: String,
    /// Where the store's AWS events arrive, if it reads them.
    pub events: Option<EventsConfig>,
}

/// A store's event queue (`provider.aws.events`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventsConfig {
    pub queue_url: String,
    pub sqs_endpoint: Option<String>,
    /// The poll interval while the queue answers.
    pub fallback: Duration,
}

impl StoreConfig {
    /// The config for a provider spec and the keys read for it.
    pub fn new(aws: &AwsProvider, keys: Option<StaticKeys>, session_name: String) -> Self {
        Self {
            region: aws.region.clone(),
            endpoint: aws.endpoint.clone(),
            sts_endpoint: aws.sts_endpoint.clone(),
            role: aws.role.clone(),
            external_id: aws.external_id.clone(),
            additional_roles: aws.additional_roles.clone(),
            session_tags: aws.session_tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect(),
            transitive_tag_keys: aws.transitive_tag_keys.clone(),
            keys,
            service_account: None,
            session_name,
            events: aws.events.as_ref().map(|e| EventsConfig {
                queue_url: e.queue_url.clone(),
                sqs_endpoint: e.sqs_endpoint.clone(),
                fallback: e.fallback(),
            }),
        }
    }

    /// With a ServiceAccount's web identity. The role it asks for is the ServiceAccount's
    /// `eks.amazonaws.com/role-arn` annotation, with the store's `role` assumed on top (ESO's
    /// order); without the annotation, the store's `role` itself.
    pub fn with_service_account(
        mut self,
        namespace: String,
        name: String,
        audiences: Vec<String>,
        annotated_role: Option<String>,
    ) -> Option<Self> {
        let role_arn = match annotated_role {
            Some(role) => role,
            None => self.role.take()?,
        };
        let audiences = if audiences.is_empty() { vec![STS_AUDIENCE.to_string()] } else { audiences };
        self.service_account = Some(ServiceAccountIdentity { namespace, name, audiences, role_arn });
        Some(self)
    }
}

/// What an AssumeRole session carries besides the role.
pub struct Session<'a> {
    pub name: &'a str,
    pub external_id: Option<&'a str>,
    pub tags: &'a [(String, String)],
    pub transitive_tag_keys: &'a [String],
}

/// The audience of a ServiceAccount token for STS, unless a store names others.
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";

/// An STS client that signs nothing (AssumeRoleWithWebIdentity is unsigned), on the store's STS
/// endpoint when it has one.
fn unsigned_sts(cfg: &StoreConfig, endpoint: Option<&String>) -> aws_sdk_sts::Client {
    let mut conf = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(cfg.region.clone()));
    if let Some(ep) = endpoint {
        conf = conf.endpoint_url(ep.clone());
    }
    aws_sdk_sts::Client::from_conf(conf.build())
}

/// Build a store's AWS: credentials (static, a ServiceAccount's web identity, or ambient), then
/// AssumeRole on top if asked, with STS calls sent to the configured endpoint; every call, STS's
/// included, through `calls`.
pub async fn build(cfg: &StoreConfig, calls: Arc<Calls>, tokens: Arc<dyn ServiceAccountTokens>) -> StoreClient {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(cfg.region.clone()))
        .timeout_config(timeouts);
    let sts_endpoint = cfg.sts_endpoint.as_ref().or(cfg.endpoint.as_ref());
    if let Some(keys) = &cfg.keys {
        loader = loader.credentials_provider(Credentials::new(
            keys.access_key_id.clone(),
            keys.secret_access_key.clone(),
            keys.session_token.clone(),
            None,
            "lockstep-secret-ref",
        ));
    } else if let Some(sa) = &cfg.service_account {
        let sts = unsigned_sts(cfg, sts_endpoint);
        let web = StsCredentials::service_account(sts, sa.clone(), tokens, &cfg.session_name, calls.clone());
        loader = loader.credentials_provider(SharedCredentialsProvider::new(web));
    } else if sts_endpoint.is_some() {
        // IRSA with an STS endpoint override: the SDK's chain would call the public STS.
        let sts = unsigned_sts(cfg, sts_endpoint);
        if let Some(web) = StsCredentials::web_identity_from_env(sts, &cfg.session_name, calls.clone()) {
            loader = loader.credentials_provider(SharedCredentialsProvider::new(web));
        }
    }
    let base: SdkConfig = loader.load().await;

    // The chain: each additional role with the credentials of the one before, then `role` (with
    // the external id and the session tags), as ESO orders them.
    let mut conf = base;
    let chain = cfg.additional_roles.iter().map(|r| (r, None)).chain(cfg.role.iter().map(|r| (r, Some(cfg))));
    for (role, last) in chain {
        let sts_conf = match sts_endpoint {
            Some(ep) => conf.to_builder().endpoint_url(ep.clone()).build(),
            None => conf.clone(),
        };
        let sts = aws_sdk_sts::Client::new(&sts_conf);
        let session = Session {
            name: &cfg.session_name,
            external_id: last.and_then(|c| c.external_id.as_deref()),
            tags: last.map(|c| c.session_tags.as_slice()).unwrap_or_default(),
            transitive_tag_keys: last.map(|c| c.transitive_tag_keys.as_slice()).unwrap_or_default(),
        };
        let provider = StsCredentials::assume_role(sts, role, &session, calls.clone());
        conf = conf.to_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build();
    }

    let mut sm = aws_sdk_secretsmanager::config::Builder::from(&conf);
    if let Some(ep) = &cfg.endpoint {
        sm = sm.endpoint_url(ep.clone());
    }
    let mut sts = aws_sdk_sts::config::Builder::from(&conf);
    if let Some(ep) = sts_endpoint {
        sts = sts.endpoint_url(ep.clone());
    }
    // A long poll holds its request open for 20 s: the attempt timeout must outlast it.
    let sqs = cfg.events.as_ref().map(|events| {
        let long = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(super::LONG_POLL + Duration::from_secs(10))
            .operation_timeout(super::LONG_POLL + Duration::from_secs(20))
            .build();
        let mut sqs = aws_sdk_sqs::config::Builder::from(&conf).timeout_config(long);
        if let Some(ep) = &events.sqs_endpoint {
            sqs = sqs.endpoint_url(ep.clone());
        }
        aws_sdk_sqs::Client::from_conf(sqs.build())
    });
    let sdk = Sdk {
        sm: aws_sdk_secretsmanager::Client::from_conf(sm.build()),
        sts: aws_sdk_sts::Client::from_conf(sts.build()),
        sqs,
    };
    StoreClient::new(Arc::new(sdk), calls).with_events(cfg.events.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_say_who_asked_within_stss_rules() {
        assert_eq!(session_name(Some("team-a"), "aws"), "lockstep-team-a-aws");
        assert_eq!(session_name(None, "shared"), "lockstep-shared");
        let long = session_name(Some(&"n".repeat(63)), &"s".repeat(253));
        assert_eq!(long.len(), SESSION_NAME_MAX);
        assert!(long.starts_with("lockstep-nnn"));
        assert_eq!(session_name(Some("a"), "b:c/d"), "lockstep-a-b-c-d", "characters STS refuses become -");
    }

    #[test]
    fn a_service_account_asks_for_its_annotated_role_and_the_store_role_goes_on_top() {
        let aws = AwsProvider { role: Some("arn:aws:iam::1:role/store".into()), ..Default::default() };
        let base = StoreConfig::new(&aws, None, "s".into());
        let annotated = base
            .clone()
            .with_service_account("ns".into(), "sa".into(), vec![], Some("arn:aws:iam::1:role/sa".into()))
            .expect("a role");
        let sa = annotated.service_account.as_ref().expect("a service account");
        assert_eq!(
            (sa.role_arn.as_str(), annotated.role.as_deref()),
            ("arn:aws:iam::1:role/sa", Some("arn:aws:iam::1:role/store"))
        );
        assert_eq!(sa.audiences, [STS_AUDIENCE]);
        let store_role =
            base.clone().with_service_account("ns".into(), "sa".into(), vec!["x".into()], None).expect("a role");
        let sa = store_role.service_account.as_ref().expect("a service account");
        assert_eq!((sa.role_arn.as_str(), store_role.role.as_deref()), ("arn:aws:iam::1:role/store", None));
        assert_eq!(sa.audiences, ["x"]);
        let no_role = StoreConfig::new(&AwsProvider::default(), None, "s".into());
        assert!(no_role.with_service_account("ns".into(), "sa".into(), vec![], None).is_none(), "no role anywhere");
    }
}
