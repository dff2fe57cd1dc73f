use aws_smithy_types::date_time::Format;

use super::{StoreClient, classify, classify_code, metadata};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
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
    fetched(&src.key, out.secret_string, out.secret_binary, out.version_id, out.created_date.as_ref())
}

/// BatchGetSecretValue calls allowed ids per call (AWS enforces it; moto does not).
pub const BATCH_MAX: usize = 20;

/// The AWSCURRENT values of many secrets (names or ARNs) with BatchGetSecretValue, 20 ids a call,
/// each call through the store's rate limiter and counted in the AWS-call metrics under `store`.
/// Returns one result per id, in the order of `ids` (a repeated id gets the same answer): a failed
/// call fails only its own ids.
pub async fn batch_get(client: &StoreClient, metrics: &Metrics, store: &str, ids: &[String]) -> Vec<Result<Fetched>> {
    let mut out: Vec<Option<Result<Fetched>>> = ids.iter().map(|_| None).collect();
    for (n, chunk) in ids.chunks(BATCH_MAX).enumerate() {
        let base = n * BATCH_MAX;
        let mut request = chunk.to_vec();
        request.sort();
        request.dedup();
        let mut token: Option<String> = None;
        // Ids only, so every answer fits in one page; the bound guards against a looping token.
        for _ in 0..BATCH_MAX {
            let req =
                client.sm.batch_get_secret_value().set_secret_id_list(Some(request.clone())).set_next_token(token);
            client.limit.acquire().await;
            let page = match req.send().await {
                Ok(page) => {
                    metrics.aws_call(store, "BatchGetSecretValue", None);
                    page
                }
                Err(e) => {
                    metrics.aws_call(store, "BatchGetSecretValue", Some(&classify(&e, "BatchGetSecretValue")));
                    for (i, id) in chunk.iter().enumerate() {
                        out[base + i].get_or_insert_with(|| Err(classify(&e, id)));
                    }
                    break;
                }
            };
            for v in page.secret_values() {
                let (name, arn) = (v.name().unwrap_or_default(), v.arn().unwrap_or_default());
                for (i, id) in chunk.iter().enumerate() {
                    if out[base + i].is_none() && metadata::names(id, name, arn) {
                        let (string, binary) = (v.secret_string().map(String::from), v.secret_binary().cloned());
                        let version = v.version_id().map(String::from);
                        out[base + i] = Some(fetched(id, string, binary, version, v.created_date()));
                    }
                }
            }
            for e in page.errors() {
                let failed = e.secret_id().unwrap_or_default();
                let (code, message) = (e.error_code().unwrap_or_default(), e.message().unwrap_or_default());
                for (i, id) in chunk.iter().enumerate() {
                    if out[base + i].is_none() && id == failed {
                        out[base + i] = Some(Err(classify_code(code, message, 400, id)));
                    }
                }
            }
            token = page.next_token().map(String::from).filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
    }
    out.into_iter()
        .zip(ids)
        .map(|(r, id)| {
            r.unwrap_or_else(|| {
                Err(Error::SecretNotFound { key: id.clone(), detail: ": not in the BatchGetSecretValue answer".into() })
            })
        })
        .collect()
}

fn fetched(
    key: &str,
    string: Option<String>,
    binary: Option<aws_smithy_types::Blob>,
    version_id: Option<String>,
    created: Option<&aws_smithy_types::DateTime>,
) -> Result<Fetched> {
    let payload = match (string, binary) {
        (Some(s), _) => Payload::String(SecretBytes::from(s)),
        (None, Some(b)) => Payload::Binary(SecretBytes::new(b.into_inner())),
        (None, None) => {
            return Err(Error::SecretNotFound { key: key.to_string(), detail: ": the version holds no value".into() });
        }
    };
    Ok(Fetched {
        payload,
        version_id: version_id.unwrap_or_default(),
        last_changed: created.and_then(|d| d.fmt(Format::DateTime).ok()),
    })
}
