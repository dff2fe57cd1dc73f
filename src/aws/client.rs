use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, timeout::TimeoutConfig};
use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};

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
    /// Static keys, or None for the ambient chain.
    pub keys: Option<StaticKeys>,
}

impl StoreConfig {
    /// The config for a provider spec and the keys read for it.
    pub fn new(aws: &AwsProvider, keys: Option<StaticKeys>) -> Self {
        Self {
            region: aws.region.clone(),
            endpoint: aws.endpoint.clone(),
            sts_endpoint: aws.sts_endpoint.clone(),
            role: aws.role.clone(),
            external_id: aws.external_id.clone(),
            keys,
        }
    }
}

/// Build a store's AWS: credentials (static or ambient), then AssumeRole on top if asked, with
/// STS calls sent to the configured endpoint; every call, STS's included, through `calls`.
pub async fn build(cfg: &StoreConfig, calls: Arc<Calls>) -> StoreClient {
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
    } else if let Some(ep) = sts_endpoint {
        // IRSA with an STS endpoint override: the SDK's chain would call the public STS.
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(cfg.region.clone()))
                .endpoint_url(ep.clone())
                .build(),
        );
        if let Some(web) = StsCredentials::web_identity_from_env(sts, calls.clone()) {
            loader = loader.credentials_provider(SharedCredentialsProvider::new(web));
        }
    }
    let base: SdkConfig = loader.load().await;

    let sts_base = match sts_endpoint {
        Some(ep) => base.to_builder().endpoint_url(ep.clone()).build(),
        None => base.clone(),
    };

    let conf = match &cfg.role {
        Some(role) => {
            let sts = aws_sdk_sts::Client::new(&sts_base);
            let provider = StsCredentials::assume_role(sts, role, cfg.external_id.as_deref(), calls.clone());
            base.to_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build()
        }
        None => base,
    };

    let mut sm = aws_sdk_secretsmanager::config::Builder::from(&conf);
    if let Some(ep) = &cfg.endpoint {
        sm = sm.endpoint_url(ep.clone());
    }
    let mut sts = aws_sdk_sts::config::Builder::from(&conf);
    if let Some(ep) = sts_endpoint {
        sts = sts.endpoint_url(ep.clone());
    }
    let sdk = Sdk {
        sm: aws_sdk_secretsmanager::Client::from_conf(sm.build()),
        sts: aws_sdk_sts::Client::from_conf(sts.build()),
    };
    StoreClient::new(Arc::new(sdk), calls)
}
