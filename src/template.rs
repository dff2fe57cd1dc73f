//! PURE: `target.template`: Go `text/template` with Sprig's and External Secrets' functions
//! ([`funcs`]), rendered over the fetched data as External Secrets' v2 engine does: `.` is a map of
//! Secret key -> value, so `{{ .password }}` and `{{ index . "tls.crt" }}` work. Also the checks of
//! well-known Secret types.
//!
//! The engine (gtmpl-ng) has no IO and bounds each render (iterations, output, value sizes, nesting).
//! Error messages name the template, the line and what is wrong; they never carry a value (a
//! detail that would quote one is withheld).

mod funcs;
mod pkcs12;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use gtmpl_ng::{Context, ExecError, Limits, ParseError, Template, TemplateError, Value};

use crate::api::{SecretTemplate, TemplateMergePolicy, TemplateScope, TemplateTarget};
use crate::error::{Error, Result};
use crate::value::SecretBytes;

/// The largest value a function may build or a template may write: a whole Secret's limit.
const MAX_VALUE: usize = 1024 * 1024;

/// Bound on the loop iterations of one render, summed over every loop.
const MAX_ITERATIONS: usize = 100_000;

/// What Go writes for a missing key; a render that writes it used a name that is not a key.
const NO_VALUE: &str = "<no value>";

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

/// The ConfigMaps and Secrets `templateFrom` names, as read by the sync: name -> key -> text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TemplateObjects {
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// One `templateFrom` template, resolved to its text.
#[derive(Clone, Debug, PartialEq)]
pub struct FromTemplate {
    /// What messages call it: `templateFrom[0] ConfigMap "tpl" key "app.yaml"`.
    pub name: String,
    /// The key it renders to (templateAs Values); `None`: it renders YAML `key: value` lines.
    pub key: Option<String>,
    pub target: TemplateTarget,
    pub source: String,
}

/// The `templateFrom` templates of `template` with their texts from `objects`, in order. A
/// ConfigMap, Secret or key that is not there is an InvalidTemplate naming it.
pub fn resolve_from(template: &SecretTemplate, objects: &TemplateObjects) -> Result<Vec<FromTemplate>> {
    let mut out = Vec::new();
    for (i, from) in template.template_from.iter().enumerate() {
        if let Some(literal) = &from.literal {
            let name = format!("templateFrom[{i}] literal");
            out.push(FromTemplate { name, key: None, target: from.target, source: literal.clone() });
        }
        let refs = [("ConfigMap", &from.config_map, &objects.config_maps), ("Secret", &from.secret, &objects.secrets)];
        for (kind, r, read) in refs {
            let Some(r) = r else { continue };
            let keys = read.get(&r.name).ok_or_else(|| {
                Error::InvalidTemplate(format!("templateFrom[{i}]: {kind} {:?} not found in the namespace", r.name))
            })?;
            for item in &r.items {
                let source = keys.get(&item.key).ok_or_else(|| {
                    Error::InvalidTemplate(format!("templateFrom[{i}]: {kind} {:?} has no key {:?}", r.name, item.key))
                })?;
                let name = format!("templateFrom[{i}] {kind} {:?} key {:?}", r.name, item.key);
                let key = (item.template_as == TemplateScope::Values).then(|| item.key.clone());
                out.push(FromTemplate { name, key, target: from.target, source: source.clone() });
            }
        }
    }
    Ok(out)
}

/// sha256 of the `templateFrom` texts read from ConfigMaps and Secrets (what the spec does not
/// hold), hex; `None` when there are none. Recorded on the Secret, so that an edit of a template
/// is a change the fast path sees.
pub fn inputs_hash(from: &[FromTemplate]) -> Option<String> {
    use sha2::{Digest, Sha256};
    let read: Vec<&FromTemplate> = from.iter().filter(|f| !f.name.ends_with(" literal")).collect();
    if read.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    for f in read {
        for part in [f.name.as_bytes(), f.source.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    Some(hex::encode(h.finalize()))
}

/// Apply `template` to the fetched `data` (Secret key -> value, the template's inputs): its
/// `templateFrom` templates (`from`, see [`resolve_from`]) in order, then its own metadata and
/// data, which win on the same key.
pub fn apply(
    template: &SecretTemplate,
    data: BTreeMap<String, SecretBytes>,
    from: &[FromTemplate],
) -> Result<Rendered> {
    let texts: HashMap<String, Value> =
        data.iter().map(|(k, v)| (k.clone(), Value::from(funcs::bytes_to_text(v.expose())))).collect();
    let context = Context::from(Value::Map(texts));
    let values: Vec<String> = data.values().map(|v| String::from_utf8_lossy(v.expose()).into_owned()).collect();
    let render = |name: String, source: &str| -> Result<String> {
        render_one(&name, source, &context, &values).map_err(Error::InvalidTemplate)
    };

    let mut rendered = Rendered::default();
    let mut out = BTreeMap::new();
    for f in from {
        let text = render(f.name.clone(), &f.source)?;
        let pairs = match &f.key {
            Some(key) => vec![(key.clone(), text)],
            None => key_value_lines(&f.name, &text)?,
        };
        for (key, value) in pairs {
            match f.target {
                TemplateTarget::Data => {
                    secret_key(&f.name, &key)?;
                    out.insert(key, SecretBytes::new(funcs::text_to_bytes(&value)));
                }
                TemplateTarget::Labels => {
                    label(&format!("{} label {key:?}", f.name), &key, &value)?;
                    rendered.labels.insert(key, value);
                }
                TemplateTarget::Annotations => {
                    metadata_key(&f.name, &key)?;
                    rendered.annotations.insert(key, value);
                }
            }
        }
    }
    if let Some(meta) = &template.metadata {
        for (k, src) in &meta.labels {
            let value = render(format!("metadata.labels[{k:?}]"), src)?;
            label(&format!("metadata.labels[{k:?}]"), k, &value)?;
            rendered.labels.insert(k.clone(), value);
        }
        for (k, src) in &meta.annotations {
            rendered.annotations.insert(k.clone(), render(format!("metadata.annotations[{k:?}]"), src)?);
        }
    }
    let writes_data = !template.data.is_empty() || from.iter().any(|f| f.target == TemplateTarget::Data);
    if !writes_data {
        rendered.data = data;
        return Ok(rendered);
    }
    for (k, src) in &template.data {
        let key = if k.contains("{{") { render(format!("key {k:?}"), k)? } else { k.clone() };
        secret_key(&format!("key {k:?}"), &key)?;
        let value = render(format!("data[{k:?}]"), src)?;
        out.insert(key, SecretBytes::new(funcs::text_to_bytes(&value)));
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

/// Checked here: the apiserver's refusal would quote the key, which may hold a value.
fn secret_key(what: &str, key: &str) -> Result<()> {
    match crate::render::is_valid_secret_key(key) {
        true => Ok(()),
        false => Err(Error::InvalidTemplate(format!(
            "template {what} renders to an invalid Secret key (1 to 253 letters, digits, '-', '_' or '.')"
        ))),
    }
}

/// A label key and value the apiserver takes (checked here: its refusal would quote the value).
fn label(what: &str, key: &str, value: &str) -> Result<()> {
    metadata_key(what, key)?;
    match is_label_value(value) {
        true => Ok(()),
        false => Err(Error::InvalidTemplate(format!(
            "template {what} renders to an invalid label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        ))),
    }
}

/// A label or annotation key: an optional DNS prefix and `/`, then a name of at most 63 letters,
/// digits, '-', '_' or '.' starting and ending with a letter or digit.
fn metadata_key(what: &str, key: &str) -> Result<()> {
    let (prefix, name) = key.rsplit_once('/').map_or((None, key), |(p, n)| (Some(p), n));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    });
    match prefix_ok && !name.is_empty() && is_label_value(name) {
        true => Ok(()),
        false => Err(Error::InvalidTemplate(format!(
            "template {what} renders to an invalid label or annotation key (an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.')"
        ))),
    }
}

/// The `key: value` lines a KeysAndValues template or a literal renders (a YAML map of scalars).
/// Errors say where, never what: the text may hold values.
fn key_value_lines(name: &str, text: &str) -> Result<Vec<(String, String)>> {
    let bad = |why: &str| Error::InvalidTemplate(format!("template {name}: {why}"));
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let map: serde_yaml::Mapping = serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(at) => bad(&format!("the output is not YAML `key: value` lines (line {})", at.line())),
        None => bad("the output is not YAML `key: value` lines"),
    })?;
    let scalar = |v: &serde_yaml::Value| match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Null => Some(String::new()),
        _ => None,
    };
    map.iter()
        .map(|(k, v)| match (scalar(k), scalar(v)) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(bad("each output line must be `key: value` with a plain value (no lists or maps)")),
        })
        .collect()
}

/// One template rendered, or the message that says why not ("template data["url"] line 2: ...").
fn render_one(name: &str, source: &str, context: &Context, values: &[String]) -> std::result::Result<String, String> {
    funcs::forget_produced();
    let rendered = parsed(source).and_then(|t| t.render(context).map_err(Into::into));
    let described = rendered.map_err(|e| describe(name, &e, values));
    funcs::forget_produced();
    let output = described?;
    // Go's missingkey=error, which External Secrets sets: Go writes <no value> otherwise.
    if output.contains(NO_VALUE) && !source.contains(NO_VALUE) && !values.iter().any(|v| v.contains(NO_VALUE)) {
        return Err(format!("template {name}: a name used is not a key of data or dataFrom (Go wrote {NO_VALUE})"));
    }
    Ok(output)
}

/// How much template source [`parsed`] keeps parsed (a parsed tree is a few times its source);
/// past that it starts afresh.
const PARSED_SOURCE_BYTES: usize = 2 * 1024 * 1024;

/// The templates parsed so far. A parse costs about 70 µs
/// (gtmpl-ng lexes on a thread of its own), a render of a parsed template about 1 µs, and a
/// template's source changes only with its spec.
static PARSED: LazyLock<Mutex<Parsed>> = LazyLock::new(Mutex::default);

/// Parsed templates by source, and the bytes of source they hold.
type Parsed = (HashMap<String, Arc<Template>>, usize);

/// The template parsed from `source`, with the functions and the bounds of every render.
fn parsed(source: &str) -> std::result::Result<Arc<Template>, TemplateError> {
    let cached = PARSED.lock().unwrap_or_else(PoisonError::into_inner).0.get(source).cloned();
    if let Some(t) = cached {
        return Ok(t);
    }
    let mut limits = Limits::default();
    limits.total_iterations = Some(MAX_ITERATIONS);
    limits.output_bytes = Some(MAX_VALUE);
    limits.function_output = Some(MAX_VALUE);
    let mut tmpl = Template::with_limits(limits);
    tmpl.add_funcs(funcs::FUNCS);
    tmpl.parse(source)?;
    let tmpl = Arc::new(tmpl);
    let mut guard = PARSED.lock().unwrap_or_else(PoisonError::into_inner);
    let (cache, bytes) = &mut *guard;
    if *bytes + source.len() > PARSED_SOURCE_BYTES {
        cache.clear();
        *bytes = 0;
    }
    if cache.insert(source.to_string(), Arc::clone(&tmpl)).is_none() {
        *bytes += source.len();
    }
    Ok(tmpl)
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

/// "template data["url"] line 3: ..." with the engine's detail withheld when it may show a value:
/// when it shares a run of characters with a value or with a string a function produced.
fn describe(name: &str, e: &TemplateError, values: &[String]) -> String {
    let (line, detail) = match e {
        TemplateError::ParseError(ParseError::WithContext(at, msg)) => (Some(at.line), msg.clone()),
        TemplateError::ExecError(ExecError::Structured(s)) => (Some(s.context.line), s.message.clone()),
        other => (None, other.to_string()),
    };
    let line = line.map(|l| format!(" line {l}")).unwrap_or_default();
    let produced = funcs::produced();
    let mut tainted = values.iter().chain(&produced);
    let detail = if tainted.any(|t| quotes(&detail, t)) {
        "(detail withheld: it would show a secret value)".to_string()
    } else {
        detail
    };
    format!("template {name}{line}: {detail}")
}

/// Whether `message` holds `value`, or any run of [`QUOTE_RUN`] of its bytes.
fn quotes(message: &str, value: &str) -> bool {
    const QUOTE_RUN: usize = 6;
    if value.len() >= 3 && message.contains(value) {
        return true;
    }
    let bytes = message.as_bytes();
    (0..bytes.len().saturating_sub(QUOTE_RUN - 1))
        .filter_map(|i| message.get(i..i + QUOTE_RUN))
        .any(|run| value.contains(run))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apply` without `templateFrom`.
    fn apply0(t: &SecretTemplate, d: BTreeMap<String, SecretBytes>) -> Result<Rendered> {
        apply(t, d, &[])
    }
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

    /// A template whose `templateFrom` is `from` (JSON as in a manifest), with `objects` read.
    fn from_template(from: serde_json::Value, data_templates: &[(&str, &str)]) -> SecretTemplate {
        let mut t = template(data_templates);
        t.template_from = serde_json::from_value(from).expect("templateFrom entries");
        t
    }

    fn objects() -> TemplateObjects {
        let cm = [
            ("config.yaml", "user: {{ .user }}"),
            ("env", "DB_USER: {{ .user }}\nDB_PASSWORD: {{ .password | quote }}\n"),
            ("labels", "tier: {{ .tier }}"),
            ("nested", "a:\n  b: {{ .user }}"),
        ];
        let cm = cm.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let secret = [("sealed".to_string(), "token={{ .password }}".to_string())].into();
        TemplateObjects {
            config_maps: [("tpl".to_string(), cm)].into(),
            secrets: [("held".to_string(), secret)].into(),
        }
    }

    #[test]
    fn template_from_config_maps_secrets_and_literals_in_order_with_data_winning() {
        let values = data(&[("user", "app"), ("password", "sentinel-PW"), ("tier", "gold")]);
        let from = serde_json::json!([
            {"configMap": {"name": "tpl", "items": [{"key": "config.yaml"}, {"key": "env", "templateAs": "KeysAndValues"}]}},
            {"secret": {"name": "held", "items": [{"key": "sealed"}]}},
            {"configMap": {"name": "tpl", "items": [{"key": "labels", "templateAs": "KeysAndValues"}]}, "target": "Labels"},
            {"literal": "example.com/for: {{ .user }}", "target": "Annotations"},
            {"literal": "DB_USER: overridden-by-data"}
        ]);
        let t = from_template(from, &[("DB_USER", "{{ .user }}-from-data")]);
        let resolved = resolve_from(&t, &objects()).expect("resolves");
        let r = apply(&t, values, &resolved).expect("renders");
        let text = |k: &str| String::from_utf8_lossy(r.data[k].expose()).to_string();
        assert_eq!(text("config.yaml"), "user: app");
        assert_eq!(text("DB_PASSWORD"), "sentinel-PW");
        assert_eq!(text("sealed"), "token=sentinel-PW");
        assert_eq!(text("DB_USER"), "app-from-data", "template.data wins over templateFrom");
        assert!(!r.data.contains_key("user"), "Replace: only what the templates write");
        assert_eq!(r.labels.get("tier").map(String::as_str), Some("gold"));
        assert_eq!(r.annotations.get("example.com/for").map(String::as_str), Some("app"));
    }

    #[test]
    fn template_from_errors_name_the_object_and_key_and_never_a_value() {
        let values = || data(&[("user", "sentinel-USER"), ("password", "sentinel-PW")]);
        let cases = [
            (
                serde_json::json!([{"configMap": {"name": "gone", "items": [{"key": "k"}]}}]),
                "ConfigMap \"gone\" not found",
            ),
            (serde_json::json!([{"configMap": {"name": "tpl", "items": [{"key": "nope"}]}}]), "has no key \"nope\""),
            (serde_json::json!([{"secret": {"name": "tpl", "items": [{"key": "k"}]}}]), "Secret \"tpl\" not found"),
            (
                serde_json::json!([{"configMap": {"name": "tpl", "items": [{"key": "nested", "templateAs": "KeysAndValues"}]}}]),
                "plain value",
            ),
            (serde_json::json!([{"literal": "{{ .user }}"}]), "not YAML `key: value` lines"),
            (serde_json::json!([{"literal": "bad key!: {{ .user }}"}]), "invalid Secret key"),
            (serde_json::json!([{"literal": "tier: {{ .password }}!", "target": "Labels"}]), "invalid label value"),
        ];
        for (from, want) in cases {
            let t = from_template(from.clone(), &[]);
            let e = resolve_from(&t, &objects())
                .and_then(|resolved| apply(&t, values(), &resolved))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(want), "{from}: {e}");
            assert!(!e.contains("sentinel"), "{from}: {e}");
        }
    }

    #[test]
    fn the_inputs_hash_follows_what_was_read_not_literals() {
        let t =
            from_template(serde_json::json!([{"configMap": {"name": "tpl", "items": [{"key": "config.yaml"}]}}]), &[]);
        let before = inputs_hash(&resolve_from(&t, &objects()).expect("resolves"));
        let mut edited = objects();
        if let Some(cm) = edited.config_maps.get_mut("tpl") {
            cm.insert("config.yaml".into(), "user: {{ .user }}!".into());
        }
        let after = inputs_hash(&resolve_from(&t, &edited).expect("resolves"));
        assert!(before.is_some() && before != after, "an edit of the ConfigMap changes the hash");
        let literal = from_template(serde_json::json!([{"literal": "a: b"}]), &[]);
        assert_eq!(
            inputs_hash(&resolve_from(&literal, &objects()).expect("resolves")),
            None,
            "a literal is in the spec"
        );
    }

    fn text(r: &Rendered, k: &str) -> String {
        r.data.get(k).map(|v| String::from_utf8_lossy(v.expose()).to_string()).unwrap_or_default()
    }

    fn err(t: &SecretTemplate, d: BTreeMap<String, SecretBytes>) -> String {
        apply0(t, d).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn postgres_url_replaces_the_inputs() {
        let t = template(&[("url", "postgres://{{ .user }}:{{ .password }}@{{ .host }}:5432/app\n")]);
        let r = apply0(&t, data(&[("user", "app"), ("password", "pw"), ("host", "db")])).unwrap_or_default();
        assert_eq!(text(&r, "url"), "postgres://app:pw@db:5432/app\n", "the trailing newline is kept");
        assert_eq!(r.data.len(), 1, "Replace keeps only the template's keys");

        let mut merge = t.clone();
        merge.merge_policy = TemplateMergePolicy::Merge;
        let r = apply0(&merge, data(&[("user", "app"), ("password", "pw"), ("host", "db")])).unwrap_or_default();
        assert_eq!(r.data.len(), 4);
    }

    #[test]
    fn go_template_constructs() {
        let d = || data(&[("tls.crt", "C"), ("user", "u"), ("n", "3"), ("cfg", r#"{"hosts":["a","b"],"port":5432}"#)]);
        let cases: &[(&str, &str)] = &[
            (r#"{{ index . "tls.crt" }}"#, "C"),
            ("{{ .user | upper | printf \"%s-%s\" \"x\" }}", "x-U"),
            ("a\n  {{- .user -}}  \nb", "aub"),
            (r#"{{ if eq .user "u" }}yes{{ else }}no{{ end }}"#, "yes"),
            (r#"{{ if and (ne .user "v") (not (eq .n "4")) }}ok{{ end }}"#, "ok"),
            ("{{ $c := .cfg | fromJson }}{{ range $i, $h := $c.hosts }}{{ $i }}={{ $h }};{{ end }}", "0=a;1=b;"),
            ("{{ with $c := .cfg | fromJson }}{{ $c.port }}{{ end }}", "5432"),
            ("{{ range $k, $v := . }}{{ $k }} {{ end }}", "cfg n tls.crt user "),
            ("{{ lt (len .user) 2 }}", "true"),
            (r#"{{ printf "%s:%s" .user .n | b64enc }}"#, "dToz"),
            ("{{/* a comment */}}x", "x"),
        ];
        for (src, want) in cases {
            let r = apply0(&template(&[("k", src)]), d()).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(text(&r, "k"), *want, "{src}");
        }
    }

    #[test]
    fn a_missing_name_is_an_error_and_a_missing_index_empty() {
        let msg = err(&template(&[("k", "{{ .nope }}")]), data(&[("a", "1")]));
        assert!(msg.contains("not a key of data"), "{msg}");
        let r = apply0(&template(&[("k", r#"[{{ index . "nope" }}]"#)]), data(&[("a", "1")])).unwrap_or_default();
        assert_eq!(text(&r, "k"), "[]", "Go's zero value of a map[string]string");
    }

    #[test]
    fn templated_keys_must_render_to_secret_keys() {
        let t = template(&[("{{ .name }}-url", "{{ .host }}")]);
        let r = apply0(&t, data(&[("name", "db"), ("host", "h")])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text(&r, "db-url"), "h");
        let msg = err(&t, data(&[("name", "a secret/value"), ("host", "h")]));
        assert!(msg.contains("template key \"{{ .name }}-url\"") && msg.contains("invalid Secret key"), "{msg}");
        assert!(!msg.contains("secret/value"), "{msg}");
    }

    #[test]
    fn binary_values_pass_through_as_bytes() {
        let raw = SecretBytes::new(vec![0xff, 0x00, b'a', 0x80]);
        let d: BTreeMap<String, SecretBytes> = [("bin".to_string(), raw.clone())].into();
        let r = apply0(&template(&[("copy", "{{ .bin }}"), ("b64", "{{ .bin | b64enc }}")]), d).unwrap_or_default();
        assert_eq!(r.data.get("copy"), Some(&raw));
        assert_eq!(text(&r, "b64"), "/wBhgA==");
    }

    #[test]
    fn pkcs12_files_go_in_as_bytes_and_come_out_as_bytes() {
        let p12 = SecretBytes::new(include_bytes!("template/testdata/p12-pbes2.p12").to_vec());
        let pass = SecretBytes::new(b"p12-test-pass".to_vec());
        let d: BTreeMap<String, SecretBytes> = [("p12".to_string(), p12), ("pass".to_string(), pass)].into();
        let t = template(&[
            ("tls.crt", "{{ .p12 | pkcs12certPass .pass }}"),
            ("tls.key", "{{ .p12 | pkcs12keyPass .pass }}"),
            (
                "out.p12",
                r#"{{ fullPemToPkcs12Pass (.p12 | pkcs12certPass .pass) (.p12 | pkcs12keyPass .pass) "x" | b64dec }}"#,
            ),
        ]);
        let r = apply0(&t, d).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text(&r, "tls.crt"), include_str!("template/testdata/p12-chain.pem"));
        assert_eq!(text(&r, "tls.key"), include_str!("template/testdata/p12-key.pem"));
        let out = r.data.get("out.p12").map(|v| v.expose().to_vec()).unwrap_or_default();
        let pfx = pkcs12::decode(&out, "x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pfx.certs.len(), 3);
    }

    #[test]
    fn dockerconfigjson() {
        let t = template(&[(
            ".dockerconfigjson",
            r#"{"auths":{"{{ .registry }}":{"auth":"{{ printf "%s:%s" .username .password | b64enc }}"}}}"#,
        )]);
        let r = apply0(&t, data(&[("registry", "r.example"), ("username", "u"), ("password", "p")]))
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
                labels: [("env".to_string(), "{{ .env }}".to_string())].into(),
                annotations: [("plain".to_string(), "x".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = apply0(&t, data(&[("env", "prod"), ("k", "v")])).unwrap_or_default();
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
        let d = || data(&[("password", "sentinel-XYZ!"), ("n", "7")]);
        let msg = err(&template(&[("url", "a\n{{ .password }\n")]), d());
        assert!(msg.starts_with("template data[\"url\"] line 2: "), "{msg}");
        let msg = err(&template(&[("url", "a\n\n{{ .pasword }}")]), d());
        assert!(msg.contains("not a key of data"), "{msg}");
        let msg = err(&template(&[("url", "{{ .password | nope }}")]), d());
        assert!(msg.contains("nope not defined") && msg.contains("line 1"), "{msg}");
        for src in [
            "{{ .password | fromJson }}",
            "{{ .password | b64dec }}",
            "{{ lt .password 1 }}",
            "{{ range .password }}{{ end }}",
            "{{ .password.x.y }}",
            "{{ slice .password 0 9 | fromJson }}",
            "{{ lt (slice .password 0 9) 1 }}",
            "{{ lt (.password | b64enc) 1 }}",
            "{{ .password | filterPEM \"CERTIFICATE\" }}",
            "{{ range 100000000 }}{{ end }}",
            "{{ range 1000 }}{{ range 1000 }}{{ end }}{{ end }}",
            "{{ $s := .password }}{{ range 100 }}{{ $s = printf \"%s%s\" $s $s }}{{ end }}",
            "{{ define \"r\" }}{{ template \"r\" . }}{{ end }}{{ template \"r\" . }}",
        ] {
            let msg = err(&template(&[("k", src)]), d());
            assert!(msg.starts_with("template data[\"k\"]"), "{src} should fail: {msg}");
            assert!(!msg.contains("sentinel"), "{src}: {msg}");
        }
    }
}
