use aws_smithy_types::date_time::Format;

use super::classify;
use crate::error::{Error, Result};
use crate::render::{Fetched, SourceKey, VersionSel};
use crate::value::{Payload, SecretBytes};

/// GetSecretValue for one version, always naming the stage or version id explicitly.
pub async fn get_secret_value(sm: &aws_sdk_secretsmanager::Client, src: &SourceKey) -> Result<Fetched> {
    let mut req = sm.get_secret_value().secret_id(&src.key);
    req = match &src.version {
        VersionSel::Stage(stage) => req.version_stage(stage),
        VersionSel::Id(id) => req.version_id(id),
    };
    let out = req.send().await.map_err(|e| classify(&e, &src.key))?;
    let payload = match (out.secret_string, out.secret_binary) {
        (Some(s), _) => Payload::String(SecretBytes::from(s)),
        (None, Some(b)) => Payload::Binary(SecretBytes::new(b.into_inner())),
        (None, None) => {
            return Err(Error::SecretNotFound { key: src.key.clone(), detail: ": the version holds no value".into() });
        }
    };
    Ok(Fetched {
        payload,
        version_id: out.version_id.unwrap_or_default(),
        last_changed: out.created_date.and_then(|d| d.fmt(Format::DateTime).ok()),
    })
}
