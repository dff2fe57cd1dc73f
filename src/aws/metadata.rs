//! Change metadata of AWS secrets: which version id holds each stage, and LastChangedDate.
//! Read with DescribeSecret (one secret a call) or ListSecrets (up to 100 a call).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};
use aws_smithy_types::date_time::Format;

use super::classify;
use crate::api::FindRef;
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
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

impl SecretMeta {
    fn new(
        name: Option<&str>,
        arn: Option<&str>,
        versions: Option<&HashMap<String, Vec<String>>>,
        changed: Option<&aws_smithy_types::DateTime>,
        tags: &[Tag],
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
            tags: tags
                .iter()
                .map(|t| (t.key().unwrap_or_default().into(), t.value().unwrap_or_default().into()))
                .collect(),
        }
    }

    /// Whether `key` (a name or an ARN, possibly partial) names this secret.
    pub fn is_named(&self, key: &str) -> bool {
        names(key, &self.name, &self.arn)
    }
}

/// Whether `key` (a name or an ARN, possibly partial) names the secret `name` / `arn`.
pub fn names(key: &str, name: &str, arn: &str) -> bool {
    key == name || key == arn || (key.starts_with("arn:") && !arn.is_empty() && arn.starts_with(key))
}

/// DescribeSecret for one secret. `Ok(None)`: it does not exist (or was deleted).
pub async fn describe(sm: &aws_sdk_secretsmanager::Client, key: &str) -> Result<Option<SecretMeta>> {
    match sm.describe_secret().secret_id(key).send().await {
        Ok(out) => {
            if out.deleted_date().is_some() {
                return Ok(None);
            }
            Ok(Some(SecretMeta::new(
                out.name(),
                out.arn(),
                out.version_ids_to_stages(),
                out.last_changed_date(),
                out.tags(),
            )))
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
    let filters = if prefix.is_empty() { vec![] } else { vec![filter(FilterNameStringType::Name, prefix)] };
    list_filtered(sm, limit, filters).await
}

/// The secrets a `dataFrom.find` selects, sorted by name: ListSecrets narrowed by AWS's (prefix)
/// filters, then matched exactly here. Returns the secrets and the number of calls made.
pub async fn find(
    sm: &aws_sdk_secretsmanager::Client,
    limit: &super::limit::RateLimiter,
    find: &FindRef,
    name: Option<&regex::Regex>,
) -> Result<(Vec<SecretMeta>, u32)> {
    let (all, calls) = list_filtered(sm, limit, find_filters(find)).await?;
    let mut found: Vec<SecretMeta> = all.into_iter().filter(|m| find_matches(find, name, m)).collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((found, calls))
}

/// ListSecrets filters that narrow a find server-side (a superset: AWS filters match prefixes).
pub fn find_filters(find: &FindRef) -> Vec<Filter> {
    let from_regexp = find.name.as_ref().map(|n| literal_prefix(&n.regexp)).unwrap_or_default();
    let path = find.path.clone().unwrap_or_default();
    let prefix = if from_regexp.starts_with(&path) { from_regexp } else { path };
    let mut filters = Vec::new();
    if !prefix.is_empty() {
        filters.push(filter(FilterNameStringType::Name, &prefix));
    }
    // AWS takes at most 10 filters; the rest of the tags are matched here only.
    for (k, v) in find.tags.iter().take(4) {
        filters.push(filter(FilterNameStringType::TagKey, k));
        if !v.is_empty() {
            filters.push(filter(FilterNameStringType::TagValue, v));
        }
    }
    filters
}

/// Whether a listed secret is selected by `find` (its name regexp compiled as `name`).
pub fn find_matches(find: &FindRef, name: Option<&regex::Regex>, meta: &SecretMeta) -> bool {
    find.path.as_deref().is_none_or(|p| meta.name.starts_with(p))
        && name.is_none_or(|re| re.is_match(&meta.name))
        && find.tags.iter().all(|(k, v)| meta.tags.get(k) == Some(v))
}

/// The literal text every match of an anchored regexp (`^prod/app/.*`) starts with; empty when
/// there is none or the regexp is not simple enough to tell.
pub fn literal_prefix(regexp: &str) -> String {
    let Some(rest) = regexp.strip_prefix('^') else { return String::new() };
    if regexp.contains('|') {
        return String::new();
    }
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        let literal = match c {
            '\\' => match chars.next() {
                Some(e) if "./-_+*?()[]{}|^$\\".contains(e) => e,
                _ => break,
            },
            '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '^' | '$' => break,
            c => c,
        };
        if matches!(chars.peek(), Some('?' | '*' | '{')) {
            break;
        }
        out.push(literal);
    }
    out
}

fn filter(key: FilterNameStringType, value: &str) -> Filter {
    Filter::builder().key(key).values(value).build()
}

async fn list_filtered(
    sm: &aws_sdk_secretsmanager::Client,
    limit: &super::limit::RateLimiter,
    filters: Vec<Filter>,
) -> Result<(Vec<SecretMeta>, u32)> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let mut calls = 0u32;
    loop {
        let req = sm
            .list_secrets()
            .max_results(100)
            .set_next_token(token.clone())
            .set_filters((!filters.is_empty()).then(|| filters.clone()));
        calls += 1;
        limit.acquire().await;
        let page = req.send().await.map_err(|e| classify(&e, "ListSecrets"))?;
        for s in page.secret_list() {
            if s.deleted_date().is_none() {
                out.push(SecretMeta::new(
                    s.name(),
                    s.arn(),
                    s.secret_versions_to_stages(),
                    s.last_changed_date(),
                    s.tags(),
                ));
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
        let m = SecretMeta::new(Some("n"), Some("arn:aws:secretsmanager:r:1:secret:n-AbCdEf"), Some(&v), None, &[]);
        assert_eq!(m.stages["AWSCURRENT"], "v2");
        assert!(m.is_named("n"));
        assert!(m.is_named("arn:aws:secretsmanager:r:1:secret:n"));
        assert!(!m.is_named("m"));
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("^prod/app/.*"), "prod/app/");
        assert_eq!(literal_prefix("^prod/ap?p"), "prod/a");
        assert_eq!(literal_prefix("^a\\.b(c)"), "a.b");
        assert_eq!(literal_prefix("prod/"), "");
        assert_eq!(literal_prefix("^a|^b"), "");
        assert_eq!(literal_prefix("^(?i)abc"), "");
    }

    #[test]
    fn find_filters_and_matches() {
        let find = FindRef {
            path: Some("prod/".into()),
            name: Some(crate::api::FindName { regexp: "^prod/app/".into() }),
            tags: [("team".to_string(), "a".to_string())].into(),
            ..Default::default()
        };
        let filters = find_filters(&find);
        assert_eq!(filters.len(), 3);
        assert_eq!(filters[0].values(), ["prod/app/"], "the longer of path and the regexp's literal prefix");
        let re = regex::Regex::new("^prod/app/").ok();
        let meta = |name: &str, team: &str| SecretMeta {
            name: name.into(),
            tags: [("team".to_string(), team.to_string())].into(),
            ..Default::default()
        };
        assert!(find_matches(&find, re.as_ref(), &meta("prod/app/db", "a")));
        assert!(!find_matches(&find, re.as_ref(), &meta("prod/app/db", "ab")), "tags match exactly, not by prefix");
        assert!(!find_matches(&find, re.as_ref(), &meta("prod/other", "a")));
    }
}
