//! Change metadata of AWS secrets (which version id holds each stage; tags) and the pure rules
//! of listing them: ListSecrets filters, `dataFrom.find` matching, name prefixes.

use std::collections::BTreeMap;

use crate::api::FindRef;

/// What is known of one AWS secret without reading its value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretMeta {
    pub name: String,
    pub arn: String,
    /// Stage -> the version id holding it.
    pub stages: StageMap,
    pub tags: BTreeMap<String, String>,
}

impl SecretMeta {
    /// Whether `key` (a name or an ARN, possibly partial) names this secret.
    pub fn is_named(&self, key: &str) -> bool {
        refers_to(key, &self.name, &self.arn)
    }
}

/// Stage -> the version id holding it, sorted by stage. A secret has two or three stages, and one
/// map is kept per AWS secret a store reads, so a vector (about 150 bytes) rather than a B-tree
/// map (a 540 byte node: 4 MiB for 8,000 secrets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageMap(Vec<(String, String)>);

impl StageMap {
    /// The version id holding `stage`.
    pub fn get(&self, stage: &str) -> Option<&String> {
        let at = self.0.binary_search_by(|(s, _)| s.as_str().cmp(stage)).ok()?;
        Some(&self.0[at].1)
    }

    /// Put `version` at `stage`; returns the version that held it.
    pub fn insert(&mut self, stage: String, version: String) -> Option<String> {
        match self.0.binary_search_by(|(s, _)| s.cmp(&stage)) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, version)),
            Err(at) => {
                self.0.insert(at, (stage, version));
                None
            }
        }
    }

    /// (stage, version id), by stage.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(s, v)| (s, v))
    }
}

#[cfg(test)]
impl std::ops::Index<&str> for StageMap {
    type Output = String;

    fn index(&self, stage: &str) -> &String {
        self.get(stage).unwrap_or_else(|| panic!("no stage {stage}"))
    }
}

impl FromIterator<(String, String)> for StageMap {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut map = StageMap::default();
        for (stage, version) in pairs {
            map.insert(stage, version);
        }
        map.0.shrink_to_fit();
        map
    }
}

/// Stage -> version id, from AWS's version id -> stages.
pub fn stages_of<'a>(versions: impl IntoIterator<Item = (&'a String, &'a Vec<String>)>) -> StageMap {
    versions
        .into_iter()
        .flat_map(|(version, labels)| labels.iter().map(move |label| (label.clone(), version.clone())))
        .collect()
}

/// Whether `key` (a name or an ARN, possibly partial) refers to the secret `name` / `arn`.
pub fn refers_to(key: &str, name: &str, arn: &str) -> bool {
    key == name || (!arn.is_empty() && (key == arn || (key.starts_with("arn:") && arn.starts_with(key))))
}

/// A ListSecrets filter (AWS matches each as a prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListFilter {
    Name(String),
    TagKey(String),
    TagValue(String),
}

/// The filter selecting every secret whose name starts with `prefix` (none when it is empty).
pub fn name_prefix(prefix: &str) -> Vec<ListFilter> {
    if prefix.is_empty() { vec![] } else { vec![ListFilter::Name(prefix.to_string())] }
}

/// ListSecrets filters that narrow a find server-side (a superset: AWS filters match prefixes).
pub fn find_filters(find: &FindRef) -> Vec<ListFilter> {
    let from_regexp = find.name.as_ref().map(|n| literal_prefix(&n.regexp)).unwrap_or_default();
    let path = find.path.clone().unwrap_or_default();
    let prefix = if from_regexp.starts_with(&path) { from_regexp } else { path };
    let mut filters = name_prefix(&prefix);
    // AWS takes at most 10 filters; the rest of the tags are matched here only.
    for (k, v) in find.tags.iter().take(4) {
        filters.push(ListFilter::TagKey(k.clone()));
        if !v.is_empty() {
            filters.push(ListFilter::TagValue(v.clone()));
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
    fn a_stage_map_is_a_sorted_map() {
        let mut m: StageMap =
            [("b", "2"), ("a", "1")].map(|(k, v)| (k.to_string(), v.to_string())).into_iter().collect();
        assert_eq!(m.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(m.insert("a".into(), "3".into()), Some("1".into()));
        assert_eq!(m.insert("c".into(), "4".into()), None);
        assert_eq!((m.get("a"), m.get("c"), m.get("z")), (Some(&"3".to_string()), Some(&"4".to_string()), None));
        assert_eq!(m["b"], "2");
    }

    #[test]
    fn stages_are_inverted() {
        let v =
            [("v2".to_string(), vec!["AWSCURRENT".to_string()]), ("v1".to_string(), vec!["AWSPREVIOUS".to_string()])];
        let m = SecretMeta {
            name: "n".into(),
            arn: "arn:aws:secretsmanager:r:1:secret:n-AbCdEf".into(),
            stages: stages_of(v.iter().map(|(a, b)| (a, b))),
            ..Default::default()
        };
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
        assert_eq!(
            filters[0],
            ListFilter::Name("prod/app/".into()),
            "the longer of path and the regexp's literal prefix"
        );
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
