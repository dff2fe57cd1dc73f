//! PURE: `target.template`: Go `text/template` with Sprig's and External Secrets' functions
//! ([`funcs`]), rendered over the fetched data as External Secrets' v2 engine does: `.` is a map of
//! Secret key -> value, so `{{ .password }}` and `{{ index . "tls.crt" }}` work. Also the checks of
//! well-known Secret types.
//!
//! The engine (gtmpl-ng) has no IO and bounds each render (iterations, output, value sizes, nesting).
//! Error messages name the template, the line and what is wrong; they never carry a value (a
//! detail that would quote one is withheld).

mod funcs;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use gtmpl_ng::{Context, ExecError, Limits, ParseError, Template, TemplateError, Value};

use crate::api::{SecretTemplate, TemplateMergePolicy};
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

/// Apply `template` to the fetched `data` (Secret key -> value, the template's inputs).
pub fn apply(template: &SecretTemplate, data: BTreeMap<String, SecretBytes>) -> Result<Rendered> {
    let texts: HashMap<String, Value> =
        data.iter().map(|(k, v)| (k.clone(), Value::from(funcs::bytes_to_text(v.expose())))).collect();
    let context = Context::from(Value::Map(texts));
    let values: Vec<String> = data.values().map(|v| String::from_utf8_lossy(v.expose()).into_owned()).collect();
    let render = |name: String, source: &str| -> Result<String> {
        render_one(&name, source, &context, &values).map_err(Error::InvalidTemplate)
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
        let key = if k.contains("{{") { render(format!("key {k:?}"), k)? } else { k.clone() };
        // Checked here: the apiserver's refusal would quote the key, which may hold a value.
        if !crate::render::is_valid_secret_key(&key) {
            return Err(Error::InvalidTemplate(format!(
                "template key {k:?} renders to an invalid Secret key (1 to 253 letters, digits, '-', '_' or '.')"
            )));
        }
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
        let t = template(&[("url", "postgres://{{ .user }}:{{ .password }}@{{ .host }}:5432/app\n")]);
        let r = apply(&t, data(&[("user", "app"), ("password", "pw"), ("host", "db")])).unwrap_or_default();
        assert_eq!(text(&r, "url"), "postgres://app:pw@db:5432/app\n", "the trailing newline is kept");
        assert_eq!(r.data.len(), 1, "Replace keeps only the template's keys");

        let mut merge = t.clone();
        merge.merge_policy = TemplateMergePolicy::Merge;
        let r = apply(&merge, data(&[("user", "app"), ("password", "pw"), ("host", "db")])).unwrap_or_default();
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
            let r = apply(&template(&[("k", src)]), d()).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(text(&r, "k"), *want, "{src}");
        }
    }

    #[test]
    fn a_missing_name_is_an_error_and_a_missing_index_empty() {
        let msg = err(&template(&[("k", "{{ .nope }}")]), data(&[("a", "1")]));
        assert!(msg.contains("not a key of data"), "{msg}");
        let r = apply(&template(&[("k", r#"[{{ index . "nope" }}]"#)]), data(&[("a", "1")])).unwrap_or_default();
        assert_eq!(text(&r, "k"), "[]", "Go's zero value of a map[string]string");
    }

    #[test]
    fn templated_keys_must_render_to_secret_keys() {
        let t = template(&[("{{ .name }}-url", "{{ .host }}")]);
        let r = apply(&t, data(&[("name", "db"), ("host", "h")])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text(&r, "db-url"), "h");
        let msg = err(&t, data(&[("name", "a secret/value"), ("host", "h")]));
        assert!(msg.contains("template key \"{{ .name }}-url\"") && msg.contains("invalid Secret key"), "{msg}");
        assert!(!msg.contains("secret/value"), "{msg}");
    }

    #[test]
    fn binary_values_pass_through_as_bytes() {
        let raw = SecretBytes::new(vec![0xff, 0x00, b'a', 0x80]);
        let d: BTreeMap<String, SecretBytes> = [("bin".to_string(), raw.clone())].into();
        let r = apply(&template(&[("copy", "{{ .bin }}"), ("b64", "{{ .bin | b64enc }}")]), d).unwrap_or_default();
        assert_eq!(r.data.get("copy"), Some(&raw));
        assert_eq!(text(&r, "b64"), "/wBhgA==");
    }

    #[test]
    fn dockerconfigjson() {
        let t = template(&[(
            ".dockerconfigjson",
            r#"{"auths":{"{{ .registry }}":{"auth":"{{ printf "%s:%s" .username .password | b64enc }}"}}}"#,
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
                labels: [("env".to_string(), "{{ .env }}".to_string())].into(),
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
