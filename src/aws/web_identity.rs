//! IRSA (web identity) credentials whose STS call goes to the store's STS endpoint.
//!
//! The SDK's own web-identity provider builds its STS client from the environment only, so with an
//! endpoint override (VPC endpoint, the local emulator) it would still call the public STS.

use std::path::PathBuf;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError, future};

/// AssumeRoleWithWebIdentity with the projected service-account token, on a given STS client.
#[derive(Debug)]
pub struct WebIdentity {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    token_file: PathBuf,
}

impl WebIdentity {
    /// From `AWS_ROLE_ARN` and `AWS_WEB_IDENTITY_TOKEN_FILE` (what IRSA injects), if both are set.
    pub fn from_env(sts: aws_sdk_sts::Client) -> Option<Self> {
        let role_arn = std::env::var("AWS_ROLE_ARN").ok().filter(|v| !v.is_empty())?;
        let token_file = std::env::var_os("AWS_WEB_IDENTITY_TOKEN_FILE").filter(|v| !v.is_empty())?;
        Some(Self { sts, role_arn, token_file: PathBuf::from(token_file) })
    }

    async fn load(&self) -> provider::Result {
        let token = tokio::fs::read_to_string(&self.token_file).await.map_err(CredentialsError::provider_error)?;
        let out = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name("lockstep")
            .web_identity_token(token.trim())
            .send()
            .await
            .map_err(CredentialsError::provider_error)?;
        let c = out.credentials.ok_or_else(|| CredentialsError::unhandled("STS returned no credentials"))?;
        let expiry = SystemTime::try_from(c.expiration).ok();
        Ok(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            expiry,
            "lockstep-web-identity",
        ))
    }
}

impl ProvideCredentials for WebIdentity {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.load())
    }
}
