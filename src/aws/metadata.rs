//! Change metadata of AWS secrets: which version id holds each stage, and LastChangedDate.
//! Read with DescribeSecret (one secret a call) or ListSecrets (up to 100 a call).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use aws_smithy_types::date_time::Format;

use super::classify;
use crate::error::{Error, Result};

/// What is known of one AWS secret without reading its value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretMeta {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Stage -> version id.
    pub stages: BTreeMap<String, String>,
    /// LastChangedDate, RFC 3339.
    pub last_changed: Option<String>,
}

impl SecretMeta {
    fn new(
        name: Option<&str>,
        arn: Option<&str>,
        versions: Option<&HashMap<String, Vec<String>>>,
        changed: Option<&aws_smithy_types::DateTime>,
    ) -> Self {
        let mut stages = BTreeMap::new();
        for (version, labels) in versions.into_iter().flatten() {
            for label in labels {
                stages.insert(label.clone(), version.clone());
            }
        }
        Self {
            name: name.unwrap_or_default().to_string(),
            arn: arn.unwrap_or_default().to_string(),
            stages,
            last_changed: changed.and_then(|d| d.fmt(Format::DateTime).ok()),
        }
    }

    /// Whether `key` (a name or an ARN, possibly partial) names this secret.
    pub fn is_named(&self, key: &str) -> bool {
        key == self.name || key == self.arn || (key.starts_with("arn:") && self.arn.starts_with(key))
    }
}

/// DescribeSecret for one secret. `Ok(None)`: it does not exist (or was deleted).
pub async fn describe(sm: &aws_sdk_secretsmanager::Client, key: &str) -> Result<Option<SecretMeta>> {
    match sm.describe_secret().secret_id(key).send().await {
        Ok(out) => {
            if out.deleted_date().is_some() {
                return Ok(None);
            }
            Ok(Some(SecretMeta::new(out.name(), out.arn(), out.version_ids_to_stages(), out.last_changed_date())))
        }
        Err(e) => match classify(&e, key) {
            Error::SecretNotFound { .. } => Ok(None),
            other => Err(other),
        },
    }
}

/// Every secret whose name starts with `prefix` (all when empty), page by page (100 a page).
/// Returns the secrets and the number of calls made.
pub async fn list(
    sm: &aws_sdk_secretsmanager::Client,
    limit: &super::limit::RateLimiter,
    prefix: &str,
) -> Result<(Vec<SecretMeta>, u32)> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let mut calls = 0u32;
    loop {
        let mut req = sm.list_secrets().max_results(100).set_next_token(token.clone());
        if !prefix.is_empty() {
            req = req.filters(Filter::builder().key(FilterNameStringType::Name).values(prefix).build());
        }
        calls += 1;
        limit.acquire().await;
        let page = req.send().await.map_err(|e| classify(&e, "ListSecrets"))?;
        for s in page.secret_list() {
            if s.deleted_date().is_none() {
                out.push(SecretMeta::new(s.name(), s.arn(), s.secret_versions_to_stages(), s.last_changed_date()));
            }
        }
        token = page.next_token().map(String::from).filter(|t| !t.is_empty());
        if token.is_none() || calls >= 10_000 {
            return Ok((out, calls));
        }
    }
}

/// The longest common prefix of secret names (ARNs excluded: they do not narrow a name filter).
pub fn common_prefix<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    let mut prefix: Option<&str> = None;
    for k in keys {
        if k.starts_with("arn:") {
            return String::new();
        }
        prefix = Some(match prefix {
            None => k,
            Some(p) => {
                let n = p.chars().zip(k.chars()).take_while(|(a, b)| a == b).count();
                &p[..p.char_indices().nth(n).map_or(p.len(), |(i, _)| i)]
            }
        });
    }
    prefix.unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(common_prefix(["prod/a", "prod/b", "prod/abc"]), "prod/");
        assert_eq!(common_prefix(["x"]), "x");
        assert_eq!(common_prefix(["a", "b"]), "");
        assert_eq!(common_prefix(["prod/a", "arn:aws:secretsmanager:x"]), "");
    }

    #[test]
    fn stages_are_inverted() {
        let mut v = HashMap::new();
        v.insert("v2".to_string(), vec!["AWSCURRENT".to_string()]);
        v.insert("v1".to_string(), vec!["AWSPREVIOUS".to_string()]);
        let m = SecretMeta::new(Some("n"), Some("arn:aws:secretsmanager:r:1:secret:n-AbCdEf"), Some(&v), None);
        assert_eq!(m.stages["AWSCURRENT"], "v2");
        assert!(m.is_named("n"));
        assert!(m.is_named("arn:aws:secretsmanager:r:1:secret:n"));
        assert!(!m.is_named("m"));
    }
}
