//! PURE: fetched values + spec -> the data of the desired Secret.
//!
//! No IO here: everything is tested with plain fixtures.

use std::collections::BTreeMap;

use crate::api::{
    ConversionStrategy, CreationPolicy, ExternalSecretDataFrom, ExternalSecretSpec, NullBytePolicy, RemoteRef, Rewrite,
    SourceStatus,
};
use crate::codec::{data_hash, decode};
use crate::error::{Error, Result};
use crate::json_path::{self, JsonError};
use crate::source::{Fetched, FindResults, SourceRef, Sources};
use crate::value::SecretBytes;

/// The largest Secret the apiserver stores (its data, keys included).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// The fetched values of a sync, by source.
pub type Values = BTreeMap<SourceRef, Fetched>;

/// The desired data of the target Secret.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    pub data: BTreeMap<String, SecretBytes>,
    /// sha256 of the data, hex (never the data itself).
    pub hash: String,
    /// The versions the data was built from.
    pub sources: Vec<SourceStatus>,
    /// Labels from the template, rendered.
    pub labels: BTreeMap<String, String>,
    /// Annotations from the template, rendered.
    pub annotations: BTreeMap<String, String>,
    /// sha256 of the templates read from ConfigMaps and Secrets (`templateFrom`), if any.
    pub inputs: Option<String>,
}

/// Build the Secret from fetched values: `dataFrom` first, so explicit `data` entries win over
/// extracted or found keys; then the template; then the size limit.
pub fn render(spec: &ExternalSecretSpec, values: &Values, found: &FindResults) -> Result<Desired> {
    render_with(spec, values, found, &crate::template::TemplateObjects::default())
}

/// [`render`] with the ConfigMaps and Secrets `templateFrom` names.
pub fn render_with(
    spec: &ExternalSecretSpec,
    values: &Values,
    found: &FindResults,
    objects: &crate::template::TemplateObjects,
) -> Result<Desired> {
    let mut data: BTreeMap<String, SecretBytes> = BTreeMap::new();
    for (i, from) in spec.data_from.iter().enumerate() {
        data.extend(data_from_entries(i, from, values, found)?);
    }
    for d in &spec.data {
        let r = &d.remote_ref;
        let fetched = value_of(values, &SourceRef::from(r))?;
        let bytes = match &r.property {
            None => fetched.payload.bytes().clone(),
            Some(property) => json_path::lookup(fetched.payload.bytes().expose(), property).map_err(|e| match e {
                JsonError::NotJson => Error::InvalidValue(format!(
                    "AWS secret {:?} is not JSON, so no property can be read from it; remove property to take the whole value",
                    r.key
                )),
                _ => Error::PropertyNotFound { key: r.key.clone(), property: property.clone() },
            })?,
        };
        let what = format!("the value for {:?} (AWS secret {:?})", d.secret_key, r.key);
        let value = decode(r.decoding_strategy, bytes, &what)?;
        check_null_bytes(r.null_byte_policy, &value, &what)?;
        data.insert(d.secret_key.clone(), value);
    }

    let template = spec.target.template.as_ref();
    let (rendered, inputs) = match template {
        Some(t) => {
            let from = crate::template::resolve_from(t, objects)?;
            (crate::template::apply(t, data, &from)?, crate::template::inputs_hash(&from))
        }
        None => (crate::template::Rendered { data, ..Default::default() }, None),
    };
    if spec.target.creation_policy != CreationPolicy::Merge
        && let Some(type_) = template.and_then(|t| t.type_.as_deref())
    {
        crate::template::check_type(type_, &rendered.data)?;
    }
    let data = rendered.data;
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_SECRET_BYTES {
        return Err(Error::TargetTooLarge { size });
    }
    let sources = source_status(spec, values, found);
    Ok(Desired {
        hash: data_hash(&data),
        data,
        sources,
        labels: rendered.labels,
        annotations: rendered.annotations,
        inputs,
    })
}

fn value_of<'a>(values: &'a Values, source: &SourceRef) -> Result<&'a Fetched> {
    values.get(source).ok_or_else(|| Error::SecretNotFound { key: source.key.clone(), detail: None })
}

/// The keys one `dataFrom` entry (index `i`) gives, rewritten and converted, checked for validity
/// and conflicts among themselves.
fn data_from_entries(
    i: usize,
    from: &ExternalSecretDataFrom,
    values: &Values,
    found: &FindResults,
) -> Result<BTreeMap<String, SecretBytes>> {
    let (entries, conversion) = if let Some(extract) = &from.extract {
        (extract_entries(extract, values)?, extract.conversion_strategy)
    } else if let Some(find) = &from.find {
        let mut entries = Vec::new();
        for name in found.get(&i).into_iter().flatten() {
            let what = format!("AWS secret {name:?}");
            let bytes = value_of(values, &SourceRef::current(name))?.payload.bytes().clone();
            entries.push((name.clone(), decode(find.decoding_strategy, bytes, &what)?, what));
        }
        (entries, find.conversion_strategy)
    } else {
        return Ok(BTreeMap::new());
    };

    let rules = compile_rewrites(i, &from.rewrite)?;
    let mut origins: BTreeMap<String, String> = BTreeMap::new();
    let mut data = BTreeMap::new();
    for (raw, value, what) in entries {
        let rewritten = rules.iter().fold(raw, |k, (re, target)| re.replace_all(&k, target.as_str()).into_owned());
        let key = convert_key(&rewritten, conversion);
        if !is_valid_secret_key(&key) {
            return Err(Error::InvalidValue(format!(
                "{what} gives Secret key {key:?}, which is not valid (letters, digits, '-', '_', '.'; at most 253); set conversionStrategy Unicode or add a rewrite rule"
            )));
        }
        if let Some(first) = origins.insert(key.clone(), what.clone()) {
            return Err(Error::KeyConflict(format!(
                "dataFrom[{i}]: {first} and {what} both map to Secret key {key:?}; add or change a rewrite rule so each key is unique"
            )));
        }
        data.insert(key, value);
    }
    Ok(data)
}

/// (key as read, value, where it came from: names only) for every top-level key of the JSON
/// object `extract` reads; values as the exact JSON text AWS holds (strings unquoted).
fn extract_entries(extract: &RemoteRef, values: &Values) -> Result<Vec<(String, SecretBytes, String)>> {
    let fetched = value_of(values, &SourceRef::from(extract))?;
    let entries = json_path::extract(fetched.payload.bytes().expose(), extract.property.as_deref()).map_err(|e| {
        let key = &extract.key;
        match e {
            JsonError::NotJson => Error::InvalidValue(format!(
                "AWS secret {key:?} is not JSON, so dataFrom.extract cannot take keys from it; read it with data[].remoteRef instead"
            )),
            JsonError::NotAnObject => Error::InvalidValue(format!(
                "dataFrom.extract needs a JSON object in AWS secret {key:?}, found another JSON type"
            )),
            JsonError::PropertyNotFound => {
                Error::PropertyNotFound { key: key.clone(), property: extract.property.clone().unwrap_or_default() }
            }
        }
    })?;
    entries
        .into_iter()
        .map(|(k, v)| {
            let what = format!("key {k:?} of AWS secret {:?}", extract.key);
            let value = decode(extract.decoding_strategy, v, &what)?;
            check_null_bytes(extract.null_byte_policy, &value, &what)?;
            Ok((k, value, what))
        })
        .collect()
}

/// The versions the data was built from, as status shows them.
fn source_status(spec: &ExternalSecretSpec, values: &Values, found: &FindResults) -> Vec<SourceStatus> {
    let sources = Sources { found: found.clone(), ..Sources::of(spec) };
    sources
        .all()
        .into_iter()
        .filter_map(|s| {
            let f = values.get(&s)?;
            Some(SourceStatus {
                version_stage: s.stage().map(String::from),
                key: s.key,
                version_id: f.version_id.clone(),
                created_date: f.created_date.clone(),
            })
        })
        .collect()
}

fn compile_rewrites(i: usize, rules: &[Rewrite]) -> Result<Vec<(regex::Regex, String)>> {
    rules
        .iter()
        .enumerate()
        .filter_map(|(j, r)| Some((j, r.regexp.as_ref()?)))
        .map(|(j, r)| {
            regex::Regex::new(&r.source).map(|re| (re, r.target.clone())).map_err(|e| {
                Error::InvalidValue(format!(
                    "dataFrom[{i}].rewrite[{j}].regexp.source is not a valid regular expression: {e}"
                ))
            })
        })
        .collect()
}

/// Make a key valid (ESO's conversions): Default turns each invalid character into `_`, Unicode
/// into `_U<hex>_`.
pub fn convert_key(key: &str, strategy: ConversionStrategy) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    match strategy {
        ConversionStrategy::Default => key.chars().map(|c| if valid(c) { c } else { '_' }).collect(),
        ConversionStrategy::Unicode => {
            key.chars().map(|c| if valid(c) { c.to_string() } else { format!("_U{:04x}_", u32::from(c)) }).collect()
        }
    }
}

/// Refuse a value holding a NUL byte when `policy` says so (`what` names it, never shows it).
fn check_null_bytes(policy: NullBytePolicy, value: &SecretBytes, what: &str) -> Result<()> {
    if policy == NullBytePolicy::Fail && value.expose().contains(&0) {
        return Err(Error::InvalidValue(format!(
            "{what} holds a NUL byte and nullBytePolicy is Fail; fix the value or set nullBytePolicy Ignore"
        )));
    }
    Ok(())
}

/// Whether `key` may be a key of Secret data. The apiserver's rule (a ConfigMap key): 1 to 253 of letters, digits, '-', '_' and '.', not `.`,
/// and not starting with `..`.
pub fn is_valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && !key.starts_with("..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DecodingStrategy;
    use crate::api::{ExternalSecretData, ExternalSecretDataFrom, FindRef, RewriteRegexp, SecretTemplate};
    use crate::value::Payload;

    fn rref(key: &str, property: Option<&str>) -> RemoteRef {
        RemoteRef { key: key.into(), property: property.map(Into::into), ..Default::default() }
    }

    fn fetched(value: &str) -> Fetched {
        Fetched {
            payload: Payload::String(SecretBytes::from(value.to_string())),
            version_id: "v1".into(),
            created_date: None,
        }
    }

    fn spec(data: Vec<(&str, RemoteRef)>, extract: Vec<RemoteRef>) -> ExternalSecretSpec {
        ExternalSecretSpec {
            data: data
                .into_iter()
                .map(|(k, r)| ExternalSecretData { secret_key: k.into(), remote_ref: r, ..Default::default() })
                .collect(),
            data_from: extract
                .into_iter()
                .map(|e| ExternalSecretDataFrom { extract: Some(e), ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    fn store(entries: &[(&str, &str)]) -> Values {
        entries.iter().map(|(k, v)| (SourceRef::from(&rref(k, None)), fetched(v))).collect()
    }

    fn text(d: &Desired, k: &str) -> String {
        String::from_utf8(d.data[k].expose().to_vec()).expect("utf-8")
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
        let d = render(&s, &store(&[("db", v)]), &FindResults::new()).expect("renders");
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
        let d =
            render(&s, &store(&[("db", r#"{"a":"x","n":1,"o":{"k":true}}"#), ("other", "plain")]), &FindResults::new())
                .expect("renders");
        assert_eq!(text(&d, "a"), "plain");
        assert_eq!(text(&d, "n"), "1");
        assert_eq!(text(&d, "o"), r#"{"k":true}"#, "the text as AWS holds it");
    }

    #[test]
    fn errors_name_the_problem_without_the_value() {
        let s = spec(vec![("p", rref("db", Some("missing")))], vec![]);
        let e = render(&s, &store(&[("db", r#"{"password":"sentinel-XYZ"}"#)]), &FindResults::new()).err();
        assert!(matches!(e, Some(Error::PropertyNotFound { .. })), "{e:?}");

        let s = spec(vec![("p", rref("db", Some("password")))], vec![]);
        let e =
            render(&s, &store(&[("db", "sentinel-XYZ not json")]), &FindResults::new()).err().map(|e| e.to_string());
        let msg = e.unwrap_or_default();
        assert!(msg.contains("not JSON") && !msg.contains("sentinel"), "{msg}");

        let s = spec(vec![], vec![rref("db", None)]);
        let d = render(&s, &store(&[("db", r#"{"bad key":"v"}"#)]), &FindResults::new()).expect("converted");
        assert_eq!(text(&d, "bad_key"), "v", "conversionStrategy Default turns invalid characters into _");
        let e = render(&s, &store(&[("db", r#"{"..":"v"}"#)]), &FindResults::new()).err();
        assert!(matches!(e, Some(Error::InvalidValue(_))), "{e:?}");

        let e = render(&s, &store(&[("db", r#"["sentinel-XYZ"]"#)]), &FindResults::new()).err().map(|e| e.to_string());
        assert!(!e.unwrap_or_default().contains("sentinel"));

        let s = spec(vec![("p", rref("nope", None))], vec![]);
        assert!(matches!(render(&s, &store(&[]), &FindResults::new()), Err(Error::SecretNotFound { .. })));
    }

    #[test]
    fn binary_is_kept_as_is() {
        let s = spec(vec![("bin", rref("b", None))], vec![]);
        let mut st = BTreeMap::new();
        st.insert(
            SourceRef::from(&rref("b", None)),
            Fetched {
                payload: Payload::Binary(SecretBytes::new(vec![0, 159, 146, 150])),
                version_id: "v".into(),
                created_date: None,
            },
        );
        let d = render(&s, &st, &FindResults::new()).expect("renders");
        assert_eq!(d.data["bin"].expose(), &[0, 159, 146, 150]);
    }

    #[test]
    fn too_large_is_refused() {
        let big = "x".repeat(MAX_SECRET_BYTES);
        let s = spec(vec![("k", rref("big", None))], vec![]);
        assert!(matches!(render(&s, &store(&[("big", &big)]), &FindResults::new()), Err(Error::TargetTooLarge { .. })));
    }

    fn find_spec(find: FindRef, rewrite: &[(&str, &str)]) -> ExternalSecretSpec {
        let rewrite = rewrite
            .iter()
            .map(|(s, t)| Rewrite {
                regexp: Some(RewriteRegexp { source: s.to_string(), target: t.to_string() }),
                ..Default::default()
            })
            .collect();
        ExternalSecretSpec {
            data_from: vec![ExternalSecretDataFrom { find: Some(find), rewrite, ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn find_keys_rewrite_and_conflicts() {
        let st = store(&[("prod/app/db", "d"), ("prod/app/api-key", "k"), ("prod/other/db", "o")]);
        let found: FindResults = [(0, vec!["prod/app/api-key".to_string(), "prod/app/db".to_string()])].into();
        let d = render(&find_spec(FindRef::default(), &[]), &st, &found).expect("renders");
        assert_eq!(d.data.keys().collect::<Vec<_>>(), ["prod_app_api-key", "prod_app_db"]);
        assert_eq!(d.sources.len(), 2);
        assert_eq!(d.sources[0].version_stage.as_deref(), Some("AWSCURRENT"));

        let d = render(&find_spec(FindRef::default(), &[("^prod/app/", "")]), &st, &found).expect("renders");
        assert_eq!(d.data.keys().collect::<Vec<_>>(), ["api-key", "db"]);

        let unicode = FindRef { conversion_strategy: ConversionStrategy::Unicode, ..Default::default() };
        let d = render(&find_spec(unicode, &[]), &st, &found).expect("renders");
        assert!(d.data.contains_key("prod_U002f_app_U002f_db"));

        let both: FindResults = [(0, vec!["prod/app/db".to_string(), "prod/other/db".to_string()])].into();
        let e = render(&find_spec(FindRef::default(), &[("^prod/[a-z]+/", "")]), &st, &both).err();
        let msg = e.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(matches!(e, Some(Error::KeyConflict(_))), "{msg}");
        assert!(
            msg.contains("\"prod/app/db\"") && msg.contains("\"prod/other/db\"") && msg.contains("\"db\""),
            "{msg}"
        );

        let e = render(&find_spec(FindRef::default(), &[("(", "")]), &st, &found).err();
        assert!(matches!(e, Some(Error::InvalidValue(_))), "{e:?}");
        let e = render(&find_spec(FindRef::default(), &[(".*", "")]), &st, &found).err();
        assert!(matches!(e, Some(Error::InvalidValue(_))), "an empty key is refused: {e:?}");
    }

    #[test]
    fn decoding() {
        let mut r = rref("b", None);
        r.decoding_strategy = DecodingStrategy::Base64;
        let s = spec(vec![("k", r.clone())], vec![]);
        let d = render(&s, &store(&[("b", "aGVsbG8=\n")]), &FindResults::new()).expect("renders");
        assert_eq!(text(&d, "k"), "hello");
        let e = render(&s, &store(&[("b", "sentinel-XYZ!")]), &FindResults::new()).err().map(|e| e.to_string());
        let msg = e.unwrap_or_default();
        assert!(msg.contains("not valid base64") && !msg.contains("sentinel"), "{msg}");

        r.decoding_strategy = DecodingStrategy::Base64Url;
        let s = spec(vec![("k", r.clone())], vec![]);
        let d = render(&s, &store(&[("b", "_-8")]), &FindResults::new()).expect("renders");
        assert_eq!(d.data["k"].expose(), &[255, 239]);

        r.decoding_strategy = DecodingStrategy::Auto;
        let s = spec(vec![("k", r)], vec![]);
        let d = render(&s, &store(&[("b", "not base64!")]), &FindResults::new()).expect("renders");
        assert_eq!(text(&d, "k"), "not base64!");

        let mut e = rref("j", None);
        e.decoding_strategy = DecodingStrategy::Base64;
        e.conversion_strategy = ConversionStrategy::Unicode;
        let s = spec(vec![], vec![e]);
        let d = render(&s, &store(&[("j", r#"{"a/b":"aGk="}"#)]), &FindResults::new()).expect("renders");
        assert_eq!(text(&d, "a_U002f_b"), "hi");
    }

    #[test]
    fn templates_and_types_apply_after_mapping() {
        let mut s = spec(vec![("user", rref("u", None)), ("password", rref("p", None))], vec![]);
        s.target.template = Some(SecretTemplate {
            type_: Some("kubernetes.io/basic-auth".into()),
            data: [("username".to_string(), "{{ .user }}".to_string())].into(),
            merge_policy: crate::api::TemplateMergePolicy::Merge,
            ..Default::default()
        });
        let d = render(&s, &store(&[("u", "app"), ("p", "pw")]), &FindResults::new()).expect("renders");
        assert_eq!(text(&d, "username"), "app");
        assert_eq!(text(&d, "password"), "pw");

        s.target.template = Some(SecretTemplate { type_: Some("kubernetes.io/tls".into()), ..Default::default() });
        let e = render(&s, &store(&[("u", "app"), ("p", "pw")]), &FindResults::new()).err();
        assert!(matches!(e, Some(Error::InvalidTemplate(_))), "{e:?}");
        s.target.creation_policy = CreationPolicy::Merge;
        assert!(render(&s, &store(&[("u", "app"), ("p", "pw")]), &FindResults::new()).is_ok(), "Merge writes no type");
    }

    #[test]
    fn json_values_reach_the_secret_as_the_text_aws_holds() {
        let v = r#"{"big": 123456789012345678901234, "neg": -9999999999999999999, "e": 1e3, "huge": 1e400,
            "obj": {"b": 1,  "a": [1, 2]}, "s": "x\u0041"}"#;
        let keys = ["big", "neg", "e", "huge", "obj", "s"];
        let s = spec(keys.iter().map(|k| (*k, rref("db", Some(k)))).collect(), vec![]);
        let d = render(&s, &store(&[("db", v)]), &FindResults::new()).expect("renders");
        assert_eq!(text(&d, "big"), "123456789012345678901234");
        assert_eq!(text(&d, "neg"), "-9999999999999999999");
        assert_eq!(text(&d, "e"), "1e3");
        assert_eq!(text(&d, "huge"), "1e400");
        assert_eq!(text(&d, "obj"), r#"{"b": 1,  "a": [1, 2]}"#);
        assert_eq!(text(&d, "s"), "xA");
        let x = spec(vec![], vec![rref("db", None)]);
        let d = render(&x, &store(&[("db", v)]), &FindResults::new()).expect("renders");
        assert_eq!(text(&d, "huge"), "1e400");
        assert_eq!(text(&d, "obj"), r#"{"b": 1,  "a": [1, 2]}"#);
    }

    #[test]
    fn secret_keys() {
        assert!(is_valid_secret_key("tls.crt"));
        assert!(is_valid_secret_key("A_b-9"));
        assert!(!is_valid_secret_key(""));
        assert!(!is_valid_secret_key(".."));
        assert!(!is_valid_secret_key("..foo"));
        assert!(!is_valid_secret_key("."));
        assert!(is_valid_secret_key(".foo") && is_valid_secret_key("a..b"));
        assert!(!is_valid_secret_key("a/b"));
        assert!(!is_valid_secret_key("a b"));
    }
}
