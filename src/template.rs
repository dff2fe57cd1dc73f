//! PURE: `target.template`: minijinja templates rendered over the fetched values, and the checks of
//! well-known Secret types.
//!
//! Error messages name the template, the line and what is wrong; they never carry a value (a
//! detail that would quote one is withheld).

use std::collections::BTreeMap;

use base64::Engine;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};

use crate::api::{SecretTemplate, TemplateMergePolicy};
use crate::error::{Error, Result};
use crate::value::SecretBytes;

/// Bound on the work one template may do (loops over huge ranges end with an error).
const FUEL: u64 = 200_000;

/// What a template makes of the fetched data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rendered {
    /// Secret data.
    pub data: BTreeMap<String, SecretBytes>,
    /// Labels, rendered.
    pub labels: BTreeMap<String, String>,
    /// Annotations, rendered.
    pub annotations: BTreeMap<String, String>,
}

/// Apply `template` to the fetched `data` (Secret key -> value, the template's inputs).
pub fn apply(template: &SecretTemplate, data: BTreeMap<String, SecretBytes>) -> Result<Rendered> {
    let env = environment();
    let context: BTreeMap<&str, Value> = data.iter().map(|(k, v)| (k.as_str(), to_value(v))).collect();
    let context = Value::from(context);
    let secrets: Vec<&[u8]> = data.values().map(SecretBytes::expose).collect();
    let render = |name: String, source: &str| -> Result<String> {
        env.template_from_named_str(&name, source)
            .and_then(|t| t.render(&context))
            .map_err(|e| Error::InvalidTemplate(describe(&name, &e, &secrets)))
    };

    let mut rendered = Rendered::default();
    if let Some(meta) = &template.metadata {
        for (k, src) in &meta.labels {
            let value = render(format!("metadata.labels[{k:?}]"), src)?;
            // Checked here: the apiserver's refusal would quote the value.
            if !is_label_value(&value) {
                return Err(Error::InvalidTemplate(format!(
                    "template metadata.labels[{k:?}] renders to an invalid label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
                )));
            }
            rendered.labels.insert(k.clone(), value);
        }
        for (k, src) in &meta.annotations {
            rendered.annotations.insert(k.clone(), render(format!("metadata.annotations[{k:?}]"), src)?);
        }
    }
    if template.data.is_empty() {
        rendered.data = data;
        return Ok(rendered);
    }
    let mut out = BTreeMap::new();
    for (k, src) in &template.data {
        out.insert(k.clone(), SecretBytes::from(render(format!("data[{k:?}]"), src)?));
    }
    rendered.data = match template.merge_policy {
        TemplateMergePolicy::Replace => out,
        TemplateMergePolicy::Merge => {
            let mut merged = data;
            merged.extend(out);
            merged
        }
    };
    Ok(rendered)
}

/// The keys a Secret of a well-known type must hold. Checked before writing, so a missing key is a
/// clear condition rather than an apiserver refusal.
pub fn check_type(type_: &str, data: &BTreeMap<String, SecretBytes>) -> Result<()> {
    let need = |keys: &[&str], all: bool| -> Result<()> {
        let missing: Vec<&str> = keys.iter().copied().filter(|k| !data.contains_key(*k)).collect();
        let ok = if all { missing.is_empty() } else { missing.len() < keys.len() };
        if ok {
            return Ok(());
        }
        let what = if all { "needs the keys" } else { "needs at least one of the keys" };
        Err(Error::InvalidTemplate(format!(
            "Secret type {type_} {what} {}; missing {}: add them to data or target.template.data",
            keys.join(", "),
            missing.join(", ")
        )))
    };
    match type_ {
        "kubernetes.io/dockerconfigjson" => {
            need(&[".dockerconfigjson"], true)?;
            json_object(type_, ".dockerconfigjson", data, "{\"auths\": {...}}")
        }
        "kubernetes.io/dockercfg" => {
            need(&[".dockercfg"], true)?;
            json_object(type_, ".dockercfg", data, "{\"registry.example.com\": {\"auth\": \"...\"}}")
        }
        "kubernetes.io/tls" => need(&["tls.crt", "tls.key"], true),
        "kubernetes.io/basic-auth" => need(&["username", "password"], false),
        "kubernetes.io/ssh-auth" => need(&["ssh-privatekey"], true),
        _ => Ok(()),
    }
}

/// A key that must hold a JSON object, checked here: the apiserver's refusal quotes the value.
fn json_object(type_: &str, key: &str, data: &BTreeMap<String, SecretBytes>, example: &str) -> Result<()> {
    let valid = data
        .get(key)
        .is_some_and(|v| serde_json::from_slice::<serde_json::Value>(v.expose()).is_ok_and(|j| j.is_object()));
    if valid {
        return Ok(());
    }
    Err(Error::InvalidTemplate(format!("Secret type {type_}: {key} is not a JSON object such as {example}")))
}

/// Whether `v` is a valid label value (empty, or up to 63 alphanumerics, '-', '_', '.' with
/// alphanumeric ends).
fn is_label_value(v: &str) -> bool {
    let inner = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    let ends = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    v.is_empty() || (v.len() <= 63 && v.bytes().all(inner) && ends(v.as_bytes().first()) && ends(v.as_bytes().last()))
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Like ESO's Go templates: a file's last newline is part of it.
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build() {
        env.set_syntax(syntax);
    }
    env.set_fuel(Some(FUEL));
    env.add_filter("b64enc", b64enc);
    env.add_filter("b64dec", b64dec);
    env.add_filter("fromJson", from_json);
    env.add_filter("toJson", to_json);
    env.add_filter("filterPEM", filter_pem);
    env.add_filter("pemCerts", |s: &str| filter_pem(s, "CERTIFICATE"));
    env.add_filter("pemKey", pem_key);
    env
}

fn to_value(v: &SecretBytes) -> Value {
    match std::str::from_utf8(v.expose()) {
        Ok(s) => Value::from(s),
        Err(_) => Value::from_bytes(v.expose().to_vec()),
    }
}

/// "template data["url"] line 3: undefined value: ..." with any detail that would show a value withheld.
fn describe(name: &str, e: &minijinja::Error, secrets: &[&[u8]]) -> String {
    let line = e.line().map(|l| format!(" line {l}")).unwrap_or_default();
    let detail = e.detail().map(|d| {
        let leaks = secrets.iter().any(|s| s.len() >= 3 && d.as_bytes().windows(s.len()).any(|w| w == *s));
        if leaks { "(detail withheld: it would show a secret value)".to_string() } else { d.to_string() }
    });
    let hint = match e.kind() {
        ErrorKind::UndefinedError => ": a name used is not a key of data or dataFrom",
        ErrorKind::UnknownFilter => {
            ": filters are b64enc, b64dec, fromJson, toJson, filterPEM, pemCerts, pemKey and Jinja's builtins"
        }
        _ => "",
    };
    match detail {
        Some(d) => format!("template {name}{line}: {}: {d}{hint}", e.kind()),
        None => format!("template {name}{line}: {}{hint}", e.kind()),
    }
}

fn op_error(msg: &str) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, msg.to_string())
}

fn bytes_of(v: &Value) -> Vec<u8> {
    match (v.as_bytes(), v.as_str()) {
        (_, Some(s)) => s.as_bytes().to_vec(),
        (Some(b), None) => b.to_vec(),
        (None, None) => v.to_string().into_bytes(),
    }
}

fn b64enc(v: Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes_of(&v))
}

fn b64dec(v: Value) -> std::result::Result<String, minijinja::Error> {
    let bytes =
        crate::codec::decode_base64_any(&bytes_of(&v)).ok_or_else(|| op_error("b64dec: the input is not base64"))?;
    String::from_utf8(bytes).map_err(|_| op_error("b64dec: the decoded bytes are not UTF-8 text"))
}

fn from_json(s: &str) -> std::result::Result<Value, minijinja::Error> {
    // The serde error is dropped: it may quote the input.
    let json: serde_json::Value = serde_json::from_str(s).map_err(|_| op_error("fromJson: the input is not JSON"))?;
    Ok(Value::from(minijinja::value::Serde(&json)))
}

fn to_json(v: Value) -> std::result::Result<String, minijinja::Error> {
    serde_json::to_string(&v).map_err(|_| op_error("toJson: the value cannot be written as JSON"))
}

/// Every PEM block of one type (`CERTIFICATE`, `PRIVATE KEY`, ...), each ending in a newline.
fn filter_pem(s: &str, kind: &str) -> String {
    pem_blocks(s).into_iter().filter(|(label, _)| *label == kind).map(|(_, block)| format!("{block}\n")).collect()
}

/// The first private key block (PKCS#8, RSA, EC, ...).
fn pem_key(s: &str) -> std::result::Result<String, minijinja::Error> {
    pem_blocks(s)
        .into_iter()
        .find(|(label, _)| label.ends_with("PRIVATE KEY"))
        .map(|(_, block)| format!("{block}\n"))
        .ok_or_else(|| op_error("pemKey: no PRIVATE KEY block in the input"))
}

/// (label, whole block from BEGIN to END line) for each well-formed PEM block.
fn pem_blocks(s: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else { break };
        let label = &after[..label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else { break };
        let stop = start + end + end_marker.len();
        out.push((label, &rest[start..stop]));
        rest = &rest[stop..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TemplateMetadata;

    fn data(entries: &[(&str, &str)]) -> BTreeMap<String, SecretBytes> {
        entries.iter().map(|(k, v)| (k.to_string(), SecretBytes::from(v.to_string()))).collect()
    }

    fn template(entries: &[(&str, &str)]) -> SecretTemplate {
        SecretTemplate {
            data: entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn text(r: &Rendered, k: &str) -> String {
        r.data.get(k).map(|v| String::from_utf8_lossy(v.expose()).to_string()).unwrap_or_default()
    }

    fn err(t: &SecretTemplate, d: BTreeMap<String, SecretBytes>) -> String {
        apply(t, d).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn postgres_url_replaces_the_inputs() {
        let t = template(&[("url", "postgres://{{ user }}:{{ password }}@{{ host }}:5432/app\n")]);
        let r = apply(&t, data(&[("user", "app"), ("password", "pw"), ("host", "db")])).unwrap_or_default();
        assert_eq!(text(&r, "url"), "postgres://app:pw@db:5432/app\n", "the trailing newline is kept");
        assert_eq!(r.data.len(), 1, "Replace keeps only the template's keys");

        let mut merge = t.clone();
        merge.merge_policy = TemplateMergePolicy::Merge;
        let r = apply(&merge, data(&[("user", "app"), ("password", "pw"), ("host", "db")])).unwrap_or_default();
        assert_eq!(r.data.len(), 4);
    }

    #[test]
    fn filters() {
        let t = template(&[
            ("auth", "{{ (user ~ ':' ~ password) | b64enc }}"),
            ("dec", "{{ encoded | b64dec }}"),
            ("field", "{{ (json | fromJson).a.b }}"),
            ("back", "{{ (json | fromJson) | toJson }}"),
            ("certs", "{{ bundle | pemCerts }}"),
            ("key", "{{ bundle | pemKey }}"),
            ("only", "{{ bundle | filterPEM('CERTIFICATE') | length > 0 }}"),
        ]);
        let bundle = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\njunk\n-----BEGIN PRIVATE KEY-----\nKKK\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let d = data(&[
            ("user", "u"),
            ("password", "p"),
            ("encoded", "aGVsbG8"),
            ("json", r#"{"a":{"b":"deep"}}"#),
            ("bundle", bundle),
        ]);
        let r = apply(&t, d).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text(&r, "auth"), "dTpw");
        assert_eq!(text(&r, "dec"), "hello");
        assert_eq!(text(&r, "field"), "deep");
        assert_eq!(text(&r, "back"), r#"{"a":{"b":"deep"}}"#);
        assert_eq!(
            text(&r, "certs"),
            "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(text(&r, "key"), "-----BEGIN PRIVATE KEY-----\nKKK\n-----END PRIVATE KEY-----\n");
        assert_eq!(text(&r, "only"), "True");
    }

    #[test]
    fn dockerconfigjson() {
        let t = template(&[(
            ".dockerconfigjson",
            r#"{"auths":{"{{ registry }}":{"auth":"{{ (username ~ ':' ~ password) | b64enc }}"}}}"#,
        )]);
        let r = apply(&t, data(&[("registry", "r.example"), ("username", "u"), ("password", "p")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text(&r, ".dockerconfigjson"), r#"{"auths":{"r.example":{"auth":"dTpw"}}}"#);
        assert!(check_type("kubernetes.io/dockerconfigjson", &r.data).is_ok());
        let bad = data(&[(".dockerconfigjson", "not json")]);
        assert!(matches!(check_type("kubernetes.io/dockerconfigjson", &bad), Err(Error::InvalidTemplate(_))));
    }

    #[test]
    fn type_checks() {
        let msg = check_type("kubernetes.io/tls", &data(&[("tls.crt", "c")])).err().map(|e| e.to_string());
        assert!(msg.unwrap_or_default().contains("missing tls.key"));
        assert!(check_type("kubernetes.io/tls", &data(&[("tls.crt", "c"), ("tls.key", "k")])).is_ok());
        assert!(check_type("kubernetes.io/basic-auth", &data(&[("password", "p")])).is_ok());
        assert!(check_type("kubernetes.io/basic-auth", &data(&[("other", "p")])).is_err());
        assert!(check_type("Opaque", &BTreeMap::new()).is_ok());
    }

    #[test]
    fn metadata_is_templated_and_data_passes_without_data_templates() {
        let t = SecretTemplate {
            metadata: Some(TemplateMetadata {
                labels: [("env".to_string(), "{{ env }}".to_string())].into(),
                annotations: [("plain".to_string(), "x".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = apply(&t, data(&[("env", "prod"), ("k", "v")])).unwrap_or_default();
        assert_eq!(r.labels["env"], "prod");
        assert_eq!(r.annotations["plain"], "x");
        assert_eq!(r.data.len(), 2);

        let msg = err(&t, data(&[("env", "sentinel value!")]));
        assert!(msg.contains("invalid label value") && !msg.contains("sentinel"), "{msg}");
        assert!(
            is_label_value("")
                && is_label_value("a.b-c_d")
                && !is_label_value("-a")
                && !is_label_value(&"a".repeat(64))
        );
    }

    #[test]
    fn errors_have_the_line_and_no_value() {
        let d = || data(&[("password", "sentinel-XYZ"), ("n", "7")]);
        let msg = err(&template(&[("url", "a\n{{ password }\n")]), d());
        assert!(msg.contains("data[\"url\"] line 2") && msg.contains("syntax error"), "{msg}");
        let msg = err(&template(&[("url", "{{ pasword }}")]), d());
        assert!(msg.contains("undefined") && msg.contains("line 1"), "{msg}");
        let msg = err(&template(&[("url", "{{ password | nope }}")]), d());
        assert!(msg.contains("unknown filter"), "{msg}");
        for src in [
            "{{ password | fromJson }}",
            "{{ password | b64dec }}",
            "{{ password + 1 }}",
            "{{ password | int }}",
            "{{ password.x.y }}",
            "{{ password[5:2] | pemKey }}",
            "{% for i in range(100000000) %}{{ i }}{% endfor %}",
        ] {
            let msg = err(&template(&[("k", src)]), d());
            assert!(!msg.is_empty(), "{src} should fail");
            assert!(!msg.contains("sentinel"), "{src}: {msg}");
        }
    }
}
