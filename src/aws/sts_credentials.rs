//! Credentials from STS, with the call sent to the store's STS endpoint and made through the
//! store's [`Calls`] (limited and counted like every AWS call): AssumeRole on top of other
//! credentials, and IRSA web identity.
//!
//! The SDK's own providers build their STS client from the environment (so with an endpoint
//! override, a VPC endpoint or the local emulator, web identity would still call the public STS)
//! and make calls the metrics cannot see. The SDK's identity cache wraps these providers, so STS is
//! called once per credential lifetime, not per request.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError, future};

use super::classify;
use super::client::{ServiceAccountIdentity, ServiceAccountTokens, Session};
use super::seam::Calls;

#[derive(Debug)]
enum Call {
    AssumeRole { external_id: Option<String>, tags: Vec<(String, String)>, transitive_tag_keys: Vec<String> },
    WebIdentity { token_file: PathBuf },
    ServiceAccount { sa: ServiceAccountIdentity, tokens: Arc<dyn ServiceAccountTokens> },
}

/// A credentials provider that asks STS.
#[derive(Debug)]
pub struct StsCredentials {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    session_name: String,
    call: Call,
    calls: Arc<Calls>,
}

impl StsCredentials {
    /// AssumeRole with the credentials `sts` is configured with.
    pub fn assume_role(sts: aws_sdk_sts::Client, role_arn: &str, session: &Session<'_>, calls: Arc<Calls>) -> Self {
        let call = Call::AssumeRole {
            external_id: session.external_id.map(String::from),
            tags: session.tags.to_vec(),
            transitive_tag_keys: session.transitive_tag_keys.to_vec(),
        };
        Self { sts, role_arn: role_arn.into(), session_name: session.name.into(), call, calls }
    }

    /// AssumeRoleWithWebIdentity with a token requested for a ServiceAccount, a fresh one each time
    /// the credentials are renewed.
    pub fn service_account(
        sts: aws_sdk_sts::Client,
        sa: ServiceAccountIdentity,
        tokens: Arc<dyn ServiceAccountTokens>,
        session_name: &str,
        calls: Arc<Calls>,
    ) -> Self {
        let role_arn = sa.role_arn.clone();
        Self { sts, role_arn, session_name: session_name.into(), call: Call::ServiceAccount { sa, tokens }, calls }
    }

    /// AssumeRoleWithWebIdentity from `AWS_ROLE_ARN` and `AWS_WEB_IDENTITY_TOKEN_FILE` (what IRSA
    /// injects), if both are set.
    pub fn web_identity_from_env(sts: aws_sdk_sts::Client, session_name: &str, calls: Arc<Calls>) -> Option<Self> {
        let role_arn = std::env::var("AWS_ROLE_ARN").ok().filter(|v| !v.is_empty())?;
        let token_file = std::env::var_os("AWS_WEB_IDENTITY_TOKEN_FILE").filter(|v| !v.is_empty())?;
        let call = Call::WebIdentity { token_file: PathBuf::from(token_file) };
        Some(Self { sts, role_arn, session_name: session_name.into(), call, calls })
    }

    async fn with_web_identity(
        &self,
        token: &str,
    ) -> Result<Option<aws_sdk_sts::types::Credentials>, crate::error::Error> {
        let role = self.role_arn.as_str();
        let send = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(role)
            .role_session_name(&self.session_name)
            .web_identity_token(token.trim())
            .send();
        let sent = async { send.await.map(|o| o.credentials).map_err(|e| classify(&e, role)) };
        self.calls.call("AssumeRoleWithWebIdentity", sent).await
    }

    async fn load(&self) -> provider::Result {
        let role = self.role_arn.as_str();
        let credentials = match &self.call {
            Call::AssumeRole { external_id, tags, transitive_tag_keys } => {
                let tags = tags
                    .iter()
                    .map(|(k, v)| aws_sdk_sts::types::Tag::builder().key(k).value(v).build())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(CredentialsError::invalid_configuration)?;
                let send = self
                    .sts
                    .assume_role()
                    .role_arn(role)
                    .role_session_name(&self.session_name)
                    .set_external_id(external_id.clone())
                    .set_tags((!tags.is_empty()).then_some(tags))
                    .set_transitive_tag_keys((!transitive_tag_keys.is_empty()).then(|| transitive_tag_keys.clone()))
                    .send();
                let sent = async { send.await.map(|o| o.credentials).map_err(|e| classify(&e, role)) };
                self.calls.call("AssumeRole", sent).await
            }
            Call::WebIdentity { token_file } => {
                let token = tokio::fs::read_to_string(token_file).await.map_err(CredentialsError::provider_error)?;
                self.with_web_identity(&token).await
            }
            Call::ServiceAccount { sa, tokens } => {
                let token = tokens.token(sa).await.map_err(CredentialsError::not_loaded)?;
                self.with_web_identity(&token).await
            }
        };
        // Say which role was refused: the store's status shows this message.
        let credentials = credentials.map_err(|e| match e {
            crate::error::Error::AccessDenied(detail) => crate::error::Error::AccessDenied(Some(format!(
                "STS refused to let these credentials assume {role}{}",
                detail.map(|d| format!(": {d}")).unwrap_or_default()
            ))),
            other => other,
        });
        let c = credentials
            .map_err(CredentialsError::provider_error)?
            .ok_or_else(|| CredentialsError::unhandled("STS returned no credentials"))?;
        let expiry = SystemTime::try_from(c.expiration).ok();
        Ok(Credentials::new(c.access_key_id, c.secret_access_key, Some(c.session_token), expiry, "lockstep-sts"))
    }
}

impl ProvideCredentials for StsCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.load())
    }
}
