//! PURE: fetched values + spec -> the data of the desired Secret.
//!
//! No IO here: everything is tested with plain fixtures.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::{ExternalSecretSpec, RemoteRef, SourceStatus};
use crate::error::{Error, Result};
use crate::value::{Payload, SecretBytes};

/// The largest Secret the apiserver stores (its data, keys included).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// Which version of an AWS secret is read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VersionSel {
    /// A staging label (AWSCURRENT unless the spec says otherwise).
    Stage(String),
    /// A version id.
    Id(String),
}

/// One AWS secret version to fetch: what a (store, secret, version) fetch is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    /// Name or ARN as written in the spec.
    pub key: String,
    /// Stage or version id.
    pub version: VersionSel,
}

impl From<&RemoteRef> for SourceKey {
    fn from(r: &RemoteRef) -> Self {
        let version = match (&r.version_id, r.stage()) {
            (Some(id), _) => VersionSel::Id(id.clone()),
            (None, stage) => VersionSel::Stage(stage.unwrap_or(crate::api::AWSCURRENT).to_string()),
        };
        SourceKey { key: r.key.clone(), version }
    }
}

/// A fetched version of an AWS secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The value.
    pub payload: Payload,
    /// The version id that was read.
    pub version_id: String,
    /// LastChangedDate or CreatedDate of the version, RFC 3339, when known.
    pub last_changed: Option<String>,
}

/// The desired data of the target Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Secret data.
    pub data: BTreeMap<String, SecretBytes>,
    /// sha256 of the data, hex (never the data itself).
    pub hash: String,
    /// The versions the data was built from.
    pub sources: Vec<SourceStatus>,
}

/// Every AWS secret version a spec reads, without duplicates, in a stable order.
pub fn sources(spec: &ExternalSecretSpec) -> Vec<SourceKey> {
    let mut out: Vec<SourceKey> = spec
        .data
        .iter()
        .map(|d| SourceKey::from(&d.remote_ref))
        .chain(spec.data_from.iter().filter_map(|d| d.extract.as_ref()).map(SourceKey::from))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Build the Secret data from fetched values.
pub fn render(spec: &ExternalSecretSpec, fetched: &BTreeMap<SourceKey, Fetched>) -> Result<Desired> {
    let get = |r: &RemoteRef| -> Result<&Fetched> {
        fetched
            .get(&SourceKey::from(r))
            .ok_or_else(|| Error::SecretNotFound { key: r.key.clone(), detail: String::new() })
    };
    let mut data: BTreeMap<String, SecretBytes> = BTreeMap::new();

    // dataFrom first, so explicit `data` entries win over extracted keys.
    for extract in spec.data_from.iter().filter_map(|d| d.extract.as_ref()) {
        let fetched = get(extract)?;
        let mut json = parse_json(&extract.key, fetched.payload.bytes())?;
        if let Some(property) = &extract.property {
            json = lookup(&json, property)
                .ok_or_else(|| Error::PropertyNotFound { key: extract.key.clone(), property: property.clone() })?
                .clone();
        }
        let Value::Object(map) = json else {
            return Err(Error::InvalidValue(format!(
                "dataFrom.extract needs a JSON object in AWS secret {:?}, found another JSON type",
                extract.key
            )));
        };
        for (k, v) in map {
            if !is_valid_secret_key(&k) {
                return Err(Error::InvalidValue(format!(
                    "AWS secret {:?} has key {k:?}, which is not a valid Secret key (letters, digits, '-', '_', '.')",
                    extract.key
                )));
            }
            data.insert(k, json_to_bytes(v));
        }
    }

    for d in &spec.data {
        let r = &d.remote_ref;
        let fetched = get(r)?;
        let bytes = match &r.property {
            None => fetched.payload.bytes().clone(),
            Some(property) => {
                let json = parse_json(&r.key, fetched.payload.bytes())?;
                let v = lookup(&json, property)
                    .ok_or_else(|| Error::PropertyNotFound { key: r.key.clone(), property: property.clone() })?;
                json_to_bytes(v.clone())
            }
        };
        data.insert(d.secret_key.clone(), bytes);
    }

    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_SECRET_BYTES {
        return Err(Error::TargetTooLarge { size });
    }

    let sources = sources(spec)
        .into_iter()
        .filter_map(|s| {
            let f = fetched.get(&s)?;
            Some(SourceStatus {
                version_stage: match &s.version {
                    VersionSel::Stage(stage) => Some(stage.clone()),
                    VersionSel::Id(_) => None,
                },
                key: s.key,
                version_id: f.version_id.clone(),
                last_changed_date: f.last_changed.clone(),
            })
        })
        .collect();

    Ok(Desired { hash: hash(&data), data, sources })
}

/// sha256 over the sorted keys and values, length-prefixed so no two maps collide by concatenation.
pub fn hash(data: &BTreeMap<String, SecretBytes>) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.expose());
    }
    hex::encode(h.finalize())
}

/// Whether `key` may be a key of Secret data.
pub fn is_valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn parse_json(key: &str, bytes: &SecretBytes) -> Result<Value> {
    // The serde error is dropped on purpose: it may quote part of the value.
    serde_json::from_slice(bytes.expose()).map_err(|_| {
        Error::InvalidValue(format!(
            "AWS secret {key:?} is not JSON, so no property can be read from it; remove property to take the whole value"
        ))
    })
}

/// A string value as-is; any other JSON value serialized.
fn json_to_bytes(v: Value) -> SecretBytes {
    match v {
        Value::String(s) => SecretBytes::from(s),
        other => SecretBytes::from(other.to_string()),
    }
}

/// Split a property path on dots; `\.` is a literal dot and `\\` a literal backslash.
pub fn parse_path(path: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => parts.last_mut().map(|p| p.push(next)).unwrap_or_default(),
                None => parts.last_mut().map(|p| p.push('\\')).unwrap_or_default(),
            },
            '.' => parts.push(String::new()),
            c => parts.last_mut().map(|p| p.push(c)).unwrap_or_default(),
        }
    }
    parts
}

/// Find a property: a top-level key spelled exactly as `property` wins (so `a.b` reaches a key
/// named "a.b"), else the dotted path is walked (numeric segments index arrays).
pub fn lookup<'a>(json: &'a Value, property: &str) -> Option<&'a Value> {
    if let Some(v) = json.as_object().and_then(|m| m.get(property)) {
        return Some(v);
    }
    parse_path(property).iter().try_fold(json, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ExternalSecretData, ExternalSecretDataFrom};
    use serde_json::json;

    fn rref(key: &str, property: Option<&str>) -> RemoteRef {
        RemoteRef { key: key.into(), property: property.map(Into::into), ..Default::default() }
    }

    fn fetched(value: &str) -> Fetched {
        Fetched {
            payload: Payload::String(SecretBytes::from(value.to_string())),
            version_id: "v1".into(),
            last_changed: None,
        }
    }

    fn spec(data: Vec<(&str, RemoteRef)>, extract: Vec<RemoteRef>) -> ExternalSecretSpec {
        ExternalSecretSpec {
            data: data.into_iter().map(|(k, r)| ExternalSecretData { secret_key: k.into(), remote_ref: r }).collect(),
            data_from: extract.into_iter().map(|e| ExternalSecretDataFrom { extract: Some(e) }).collect(),
            ..Default::default()
        }
    }

    fn store(entries: &[(&str, &str)]) -> BTreeMap<SourceKey, Fetched> {
        entries.iter().map(|(k, v)| (SourceKey::from(&rref(k, None)), fetched(v))).collect()
    }

    fn text(d: &Desired, k: &str) -> String {
        String::from_utf8(d.data[k].expose().to_vec()).unwrap_or_default()
    }

    #[test]
    fn whole_value_and_properties() {
        let s = spec(
            vec![
                ("raw", rref("db", None)),
                ("user", rref("db", Some("username"))),
                ("port", rref("db", Some("port"))),
                ("nested", rref("db", Some("a.b"))),
                ("dotted", rref("db", Some("host.name"))),
                ("escaped", rref("db", Some("x.y\\.z"))),
                ("idx", rref("db", Some("list.1"))),
            ],
            vec![],
        );
        let v = r#"{"username":"app","port":5432,"a":{"b":"deep"},"host.name":"h","x":{"y.z":"e"},"list":["p","q"]}"#;
        let d = render(&s, &store(&[("db", v)])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text(&d, "raw"), v);
        assert_eq!(text(&d, "user"), "app");
        assert_eq!(text(&d, "port"), "5432");
        assert_eq!(text(&d, "nested"), "deep");
        assert_eq!(text(&d, "dotted"), "h");
        assert_eq!(text(&d, "escaped"), "e");
        assert_eq!(text(&d, "idx"), "q");
        assert_eq!(d.sources.len(), 1);
        assert_eq!(d.sources[0].version_stage.as_deref(), Some("AWSCURRENT"));
    }

    #[test]
    fn extract_renders_non_strings_as_json_and_data_wins() {
        let s = spec(vec![("a", rref("other", None))], vec![rref("db", None)]);
        let d = render(&s, &store(&[("db", r#"{"a":"x","n":1,"o":{"k":true}}"#), ("other", "plain")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text(&d, "a"), "plain");
        assert_eq!(text(&d, "n"), "1");
        assert_eq!(text(&d, "o"), r#"{"k":true}"#);
    }

    #[test]
    fn errors_name_the_problem_without_the_value() {
        let s = spec(vec![("p", rref("db", Some("missing")))], vec![]);
        let e = render(&s, &store(&[("db", r#"{"password":"sentinel-XYZ"}"#)])).err();
        assert!(matches!(e, Some(Error::PropertyNotFound { .. })), "{e:?}");

        let s = spec(vec![("p", rref("db", Some("password")))], vec![]);
        let e = render(&s, &store(&[("db", "sentinel-XYZ not json")])).err().map(|e| e.to_string());
        let msg = e.unwrap_or_default();
        assert!(msg.contains("not JSON") && !msg.contains("sentinel"), "{msg}");

        let s = spec(vec![], vec![rref("db", None)]);
        let e = render(&s, &store(&[("db", r#"{"bad key":"v"}"#)])).err();
        assert!(matches!(e, Some(Error::InvalidValue(_))), "{e:?}");

        let e = render(&s, &store(&[("db", r#"["sentinel-XYZ"]"#)])).err().map(|e| e.to_string());
        assert!(!e.unwrap_or_default().contains("sentinel"));

        let s = spec(vec![("p", rref("nope", None))], vec![]);
        assert!(matches!(render(&s, &store(&[])), Err(Error::SecretNotFound { .. })));
    }

    #[test]
    fn binary_is_kept_as_is() {
        let s = spec(vec![("bin", rref("b", None))], vec![]);
        let mut st = BTreeMap::new();
        st.insert(
            SourceKey::from(&rref("b", None)),
            Fetched {
                payload: Payload::Binary(SecretBytes::new(vec![0, 159, 146, 150])),
                version_id: "v".into(),
                last_changed: None,
            },
        );
        let d = render(&s, &st).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.data["bin"].expose(), &[0, 159, 146, 150]);
    }

    #[test]
    fn too_large_is_refused() {
        let big = "x".repeat(MAX_SECRET_BYTES);
        let s = spec(vec![("k", rref("big", None))], vec![]);
        assert!(matches!(render(&s, &store(&[("big", &big)])), Err(Error::TargetTooLarge { .. })));
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let s = spec(vec![("k", rref("a", None))], vec![]);
        let one = render(&s, &store(&[("a", "1")])).map(|d| d.hash).unwrap_or_default();
        let again = render(&s, &store(&[("a", "1")])).map(|d| d.hash).unwrap_or_default();
        let two = render(&s, &store(&[("a", "2")])).map(|d| d.hash).unwrap_or_default();
        assert_eq!(one, again);
        assert_ne!(one, two);
        assert_eq!(one.len(), 64);
    }

    #[test]
    fn path_parsing() {
        assert_eq!(parse_path("a.b"), vec!["a", "b"]);
        assert_eq!(parse_path("a\\.b"), vec!["a.b"]);
        assert_eq!(parse_path("a\\\\.b"), vec!["a\\", "b"]);
        assert_eq!(lookup(&json!({"a.b": 1}), "a.b"), Some(&json!(1)));
    }

    #[test]
    fn secret_keys() {
        assert!(is_valid_secret_key("tls.crt"));
        assert!(is_valid_secret_key("A_b-9"));
        assert!(!is_valid_secret_key(""));
        assert!(!is_valid_secret_key(".."));
        assert!(!is_valid_secret_key("a/b"));
        assert!(!is_valid_secret_key("a b"));
    }
}
