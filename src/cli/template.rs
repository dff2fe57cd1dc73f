//! `lockstep template`: the Secret an ExternalSecret would write, rendered offline from a values
//! file with the operator's own code (`render::render`, then `target::desired_secret`): no
//! cluster, no AWS. Values are masked unless `--show-values`.
//!
//! The values file is a JSON object: AWS secret name (as the spec writes it) -> its value. A key
//! `NAME#STAGE` or `NAME#uuid/VERSIONID` gives the value of that stage or version (plain `NAME`
//! is AWSCURRENT); `NAME#tags` its tags as a JSON object (for `metadataPolicy: Fetch`). A string value is the SecretString; any other JSON value is taken as its JSON
//! text exactly as written in the file.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

use super::{CliError, EXIT_NOT_READY, EXIT_OK, Format, serialize};
use crate::api::{AWSCURRENT, ExternalSecret};
use crate::aws::metadata::{SecretMeta, find_matches};
use crate::render::Values;
use crate::source::{Fetched, FindResults, SourceRef, Sources, Version};
use crate::value::{Payload, SecretBytes};

/// The version id the offline Secret names for a stage (AWS alone knows the real one).
pub const OFFLINE_VERSION: &str = "offline";

/// PURE: the values file as fetched values.
pub fn values(json: &str) -> Result<Values, CliError> {
    let raw: BTreeMap<String, Box<RawValue>> = serde_json::from_str(json)
        .map_err(|e| CliError::Input(format!("the values file is not a JSON object: {e}")))?;
    let mut out = Values::new();
    for (key, value) in raw {
        let (name, version) = match key.split_once('#') {
            None => (key.as_str(), Version::Stage(AWSCURRENT.into())),
            Some((name, "tags")) => (name, Version::Tags),
            Some((name, v)) => match v.strip_prefix("uuid/") {
                Some(id) => (name, Version::Id(id.to_string())),
                None => (name, Version::Stage(v.to_string())),
            },
        };
        let text = match serde_json::from_str::<Value>(value.get()) {
            Ok(Value::String(s)) => s,
            _ => value.get().to_string(),
        };
        let version_id = match &version {
            Version::Id(id) => id.clone(),
            Version::Stage(_) | Version::Tags => OFFLINE_VERSION.to_string(),
        };
        let fetched = Fetched { payload: Payload::String(SecretBytes::from(text)), version_id, created_date: None };
        out.insert(SourceRef { key: name.to_string(), version }, fetched);
    }
    Ok(out)
}

/// PURE: what each `dataFrom.find` selects among the values file's AWSCURRENT secrets (by path
/// and name; tags cannot be known offline and are taken as present).
fn found(es: &ExternalSecret, values: &Values) -> Result<FindResults, CliError> {
    let mut out = FindResults::new();
    for (i, from) in es.spec.data_from.iter().enumerate() {
        let Some(find) = &from.find else { continue };
        let name = match &find.name {
            Some(n) => Some(
                regex::Regex::new(&n.regexp)
                    .map_err(|e| CliError::Input(format!("dataFrom[{i}].find.name.regexp: {e}")))?,
            ),
            None => None,
        };
        let names = values
            .keys()
            .filter(|s| s.stage() == Some(AWSCURRENT))
            .filter(|s| {
                let meta = SecretMeta { name: s.key.clone(), tags: find.tags.clone(), ..Default::default() };
                find_matches(find, name.as_ref(), &meta)
            })
            .map(|s| s.key.clone())
            .collect();
        out.insert(i, names);
    }
    Ok(out)
}

/// The outcome of rendering: the Secret, or the Ready reason and message the operator would
/// report.
pub enum Rendered {
    Secret(Box<k8s_openapi::api::core::v1::Secret>),
    Refused { reason: &'static str, message: String },
}

/// PURE: render the ExternalSecret in `es_yaml` with the values in `values_json`.
pub fn render(es_yaml: &str, values_json: &str) -> Result<Rendered, CliError> {
    let es: ExternalSecret =
        serde_yaml::from_str(es_yaml).map_err(|e| CliError::Input(format!("not an ExternalSecret: {e}")))?;
    let values = values(values_json)?;
    for source in Sources::of(&es.spec).named {
        if !values.contains_key(&source) {
            let key = match &source.version {
                Version::Stage(s) if s == AWSCURRENT => source.key.clone(),
                Version::Stage(s) => format!("{}#{s}", source.key),
                Version::Id(id) => format!("{}#uuid/{id}", source.key),
                Version::Tags => format!("{}#tags", source.key),
            };
            return Err(CliError::Input(format!("the values file has no value for {key:?}")));
        }
    }
    let found = found(&es, &values)?;
    Ok(match crate::render::render(&es.spec, &values, &found) {
        Ok(desired) => Rendered::Secret(Box::new(crate::controller::target::desired_secret(&es, &desired))),
        Err(e) => Rendered::Refused { reason: e.reason().as_str(), message: e.to_string() },
    })
}

/// PURE: the Secret as printed: every data value replaced by its size unless `show`, and so is a
/// label or annotation rendered from a template that reads values (one with a `{`).
pub fn masked(secret: &k8s_openapi::api::core::v1::Secret, es_yaml: &str, show: bool) -> Result<Value, CliError> {
    let mut v = serde_json::to_value(secret).map_err(|e| CliError::Output(e.to_string()))?;
    if show {
        return Ok(v);
    }
    if let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) {
        for (k, value) in data.iter_mut() {
            let size = secret.data.as_ref().and_then(|d| d.get(k)).map_or(0, |b| b.0.len());
            *value = Value::String(format!("<masked: {size} bytes>"));
        }
    }
    let es: ExternalSecret = serde_yaml::from_str(es_yaml).map_err(|e| CliError::Input(e.to_string()))?;
    let meta = es.spec.target.template.and_then(|t| t.metadata).unwrap_or_default();
    for (field, templates) in [("labels", meta.labels), ("annotations", meta.annotations)] {
        if let Some(map) = v.pointer_mut(&format!("/metadata/{field}")).and_then(Value::as_object_mut) {
            for (k, t) in templates {
                if t.contains('{')
                    && let Some(value) = map.get_mut(&k)
                {
                    *value = Value::String("<masked>".into());
                }
            }
        }
    }
    Ok(v)
}

/// What `lockstep template` asks.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Args {
    /// The ExternalSecret manifest (YAML or JSON; `-` for stdin).
    #[arg(short = 'f', long = "filename")]
    pub file: String,
    /// The values file (JSON): AWS secret name, or `NAME#STAGE` / `NAME#uuid/ID`, -> value.
    #[arg(long)]
    pub values: String,
    /// Print the Secret's data (base64, as in the Secret) instead of masking it.
    #[arg(long)]
    pub show_values: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
}

fn read(path: &str) -> Result<String, CliError> {
    let read = if path == "-" { std::io::read_to_string(std::io::stdin()) } else { std::fs::read_to_string(path) };
    read.map_err(|e| CliError::Read { path: path.to_string(), reason: e.to_string() })
}

/// Render, print the Secret to `out` (or the refusal to `err`), and return the exit code:
/// [`EXIT_NOT_READY`] when the operator would refuse the spec.
pub fn run(args: &Args, out: &mut impl std::io::Write, err: &mut impl std::io::Write) -> Result<u8, CliError> {
    let (es, values) = (read(&args.file)?, read(&args.values)?);
    let write =
        |w: &mut dyn std::io::Write, s: &str| w.write_all(s.as_bytes()).map_err(|e| CliError::Output(e.to_string()));
    match render(&es, &values)? {
        Rendered::Secret(secret) => {
            let shown = masked(&secret, &es, args.show_values)?;
            let format = if args.output == Format::Json { Format::Json } else { Format::Yaml };
            write(out, &serialize(&shown, format)?)?;
            if !args.show_values {
                write(err, "values masked; --show-values prints them\n")?;
            }
            Ok(EXIT_OK)
        }
        Rendered::Refused { reason, message } => {
            write(err, &format!("{reason}: {message}\n"))?;
            if let Some(fix) = super::fix(reason) {
                write(err, &format!("fix: {fix}\n"))?;
            }
            Ok(EXIT_NOT_READY)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ES: &str = r#"
apiVersion: lockstep.dev/v1alpha1
kind: ExternalSecret
metadata: {name: app, namespace: team}
spec:
  secretStoreRef: {name: aws}
  target:
    template:
      metadata:
        labels: {tier: backend, user: '{{ "u" }}'}
  data:
    - secretKey: user
      remoteRef: {key: prod/db, property: user}
    - secretKey: password
      remoteRef: {key: prod/db, property: password}
"#;
    const VALUES: &str = r#"{"prod/db": {"user": "u", "password": "SENTINEL-pw"}}"#;

    fn secret(es: &str, values: &str) -> k8s_openapi::api::core::v1::Secret {
        match render(es, values).expect("renders") {
            Rendered::Secret(s) => *s,
            Rendered::Refused { reason, message } => panic!("{reason}: {message}"),
        }
    }

    #[test]
    fn renders_the_secret_the_operator_would_write() {
        let s = secret(ES, VALUES);
        let data = s.data.clone().unwrap_or_default();
        assert_eq!(data.get("password").map(|b| b.0.clone()), Some(b"SENTINEL-pw".to_vec()));
        assert_eq!(s.metadata.name.as_deref(), Some("app"));
        let annotations = s.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.get(crate::SOURCE_VERSIONS_ANNOTATION).map(String::as_str), Some("prod/db=offline"));
        let shown = serde_json::to_string(&masked(&s, ES, false).expect("masks")).expect("json");
        assert!(!shown.contains("SENTINEL") && !shown.contains("U0VOVElORUw"), "{shown}");
        assert!(shown.contains("<masked: 11 bytes>") && shown.contains(r#""tier":"backend""#), "{shown}");
        assert!(shown.contains(r#""user":"<masked>""#), "a label templated from a value is masked: {shown}");
        let full = serde_json::to_string(&masked(&s, ES, true).expect("shows")).expect("json");
        assert!(full.contains(r#""user":"u""#), "{full}");
    }

    #[test]
    fn stages_versions_json_text_and_what_is_missing() {
        let es = r#"{"metadata": {"name": "x"}, "spec": {"secretStoreRef": {"name": "aws"}, "data": [
            {"secretKey": "old", "remoteRef": {"key": "k", "version": "AWSPREVIOUS"}},
            {"secretKey": "pinned", "remoteRef": {"key": "k", "version": "uuid/v7"}},
            {"secretKey": "cfg", "remoteRef": {"key": "cfg"}}]}}"#;
        let values = r#"{"k#AWSPREVIOUS": "o", "k#uuid/v7": "p", "cfg": {"n": 1e400 }}"#;
        let s = secret(es, values);
        let data = s.data.unwrap_or_default();
        let text = |k: &str| data.get(k).map(|b| String::from_utf8_lossy(&b.0).to_string());
        assert_eq!(
            (text("old"), text("pinned"), text("cfg")),
            (Some("o".into()), Some("p".into()), Some(r#"{"n": 1e400 }"#.into()))
        );
        match render(es, r#"{"k#AWSPREVIOUS": "o", "cfg": "c"}"#) {
            Err(CliError::Input(m)) => assert!(m.contains(r#""k#uuid/v7""#), "{m}"),
            _ => panic!("a missing value is an input error"),
        }
    }

    #[test]
    fn a_spec_the_operator_refuses_gives_its_reason() {
        let es = ES.replace("property: password", "property: nope");
        match render(&es, VALUES).expect("reads") {
            Rendered::Refused { reason, .. } => assert_eq!(reason, "PropertyNotFound"),
            Rendered::Secret(_) => panic!("rendered"),
        }
    }
}
