//! `lockstep convert`: ESO's `external-secrets.io` manifests in, Lockstep's out. The API is ESO's,
//! so converting is changing `apiVersion` and dropping what the apiserver set (status, uid,
//! managedFields, ...). What Lockstep does not support is found by walking each object against
//! Lockstep's own CRD schemas (fields they do not declare, and those they declare only to refuse,
//! described as [`crate::api::UNSUPPORTED`]): such an object is not written, and a warning names
//! it and the field.

use std::fmt;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{JSONSchemaProps, JSONSchemaPropsOrArray};
use serde_json::Value;

/// ESO kinds and what they become.
const KINDS: &[&str] = &["ExternalSecret", "SecretStore", "ClusterSecretStore", "ClusterExternalSecret"];
/// Fields of `metadata` the apiserver sets: not carried over.
const SERVER_SET: &[&str] =
    &["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink", "deletionTimestamp"];
/// Annotations not carried over.
const DROPPED_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];
/// Values the schema accepts only so that admission can refuse them with a message.
const REFUSED_VALUES: &[(&str, &str)] = &[("service", "ParameterStore"), ("engineVersion", "v1")];

/// Why an object was not converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// `Kind namespace/name`.
    pub object: String,
    /// The field path (`spec.data[0].sourceRef`), or empty for the whole object.
    pub field: String,
    pub why: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field.as_str() {
            "" => write!(f, "{}: {}", self.object, self.why),
            field => write!(f, "{}: {field}: {}", self.object, self.why),
        }
    }
}

/// What converting a set of documents gave.
#[derive(Debug, Default)]
pub struct Converted {
    /// The documents to write: converted ESO objects, and every other document as it was.
    pub objects: Vec<Value>,
    pub warnings: Vec<Warning>,
    /// Objects left out on purpose (not a failure): ExternalSecrets an ESO ClusterExternalSecret
    /// created, which the converted ClusterExternalSecret creates again as its own.
    pub notes: Vec<Warning>,
}

/// PURE: convert every document; an ESO object with anything unsupported is left out and warned
/// about, with every field that stops it.
pub fn convert(docs: Vec<Value>) -> Converted {
    let crds = crate::api::crds();
    let mut out = Converted::default();
    for doc in docs {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        if !api_version.starts_with("external-secrets.io/") {
            if !doc.is_null() {
                out.objects.push(doc);
            }
            continue;
        }
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let object = describe(&doc);
        if let Some(owner) = cluster_external_secret_owner(&doc) {
            let why = format!(
                "created by ClusterExternalSecret {owner}, which creates it again once converted (an ExternalSecret of the name that is not its own would be in its way)"
            );
            out.notes.push(Warning { object, field: String::new(), why });
            continue;
        }
        let Some(schema) = crds
            .iter()
            .find(|c| c.spec.names.kind == kind && KINDS.contains(&kind.as_str()))
            .and_then(|c| c.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.clone())
        else {
            out.warnings.push(Warning {
                object,
                field: String::new(),
                why: format!("{kind} is not supported by Lockstep"),
            });
            continue;
        };
        let converted = lockstep_shape(doc);
        let mut found = Vec::new();
        if let Some(spec) = converted.get("spec") {
            check(spec, &schema_of(&schema, "spec"), "spec", &mut found);
        }
        if found.is_empty() {
            out.objects.push(converted);
        }
        out.warnings.extend(found.into_iter().map(|(field, why)| Warning { object: object.clone(), field, why }));
    }
    out
}

/// The name of the ESO ClusterExternalSecret that controls `doc`, if one does.
fn cluster_external_secret_owner(doc: &Value) -> Option<&str> {
    doc["metadata"]["ownerReferences"].as_array()?.iter().find_map(|o| {
        let eso = o["apiVersion"].as_str().is_some_and(|v| v.starts_with("external-secrets.io/"));
        (eso && o["kind"] == "ClusterExternalSecret" && o["controller"] == true).then(|| o["name"].as_str())?
    })
}

fn describe(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or("object");
    let name = doc["metadata"]["name"].as_str().unwrap_or("<unnamed>");
    match doc["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The object with Lockstep's apiVersion and nothing the apiserver set.
fn lockstep_shape(mut doc: Value) -> Value {
    doc["apiVersion"] = Value::String(format!("{}/{}", crate::api::GROUP, crate::api::VERSION));
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("status");
    }
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_SET {
            meta.remove(*field);
        }
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.retain(|k, _| !DROPPED_ANNOTATIONS.contains(&k.as_str()));
            if annotations.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    doc
}

fn schema_of(schema: &JSONSchemaProps, field: &str) -> JSONSchemaProps {
    schema.properties.as_ref().and_then(|p| p.get(field)).cloned().unwrap_or_default()
}

/// Walk `value` against `schema`, noting each field the schema does not declare and each field
/// Lockstep declares only to refuse it.
fn check(value: &Value, schema: &JSONSchemaProps, path: &str, found: &mut Vec<(String, String)>) {
    if schema.description.as_deref() == Some(crate::api::UNSUPPORTED) {
        found.push((path.to_string(), "is not supported by Lockstep (see README, Migrating from ESO)".into()));
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let field = format!("{path}.{k}");
                if let Some(refused) = REFUSED_VALUES.iter().find(|(f, val)| f == k && v == val) {
                    found.push((field.clone(), format!("{} {} is not supported by Lockstep", refused.0, refused.1)));
                    continue;
                }
                match (schema.properties.as_ref().and_then(|p| p.get(k)), &schema.additional_properties) {
                    (Some(s), _) => check(v, s, &field, found),
                    (None, Some(_)) => {}
                    (None, None) => found.push((field, "is not a field Lockstep knows".into())),
                }
            }
        }
        Value::String(_) if schema.enum_.as_ref().is_some_and(|e| !e.iter().any(|allowed| allowed.0 == *value)) => {
            found.push((path.to_string(), format!("{value} is not a value Lockstep supports")));
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                for (i, v) in items.iter().enumerate() {
                    check(v, item, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

/// Read every YAML document of `text` (a file or stdin).
pub fn documents(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(doc)?;
        out.push(value);
    }
    Ok(out)
}

/// The documents as one YAML stream.
pub fn to_yaml(objects: &[Value]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(o)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn es(spec: Value) -> Value {
        json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
               "metadata": {"name": "app", "namespace": "team", "uid": "u", "resourceVersion": "7",
                            "managedFields": [{}], "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
               "spec": spec, "status": {"conditions": []}})
    }

    #[test]
    fn an_exported_object_becomes_ours_without_what_the_apiserver_set() {
        let spec = json!({"refreshInterval": "1h0m0s", "secretStoreRef": {"name": "aws", "kind": "SecretStore"},
            "target": {"creationPolicy": "Owner", "deletionPolicy": "Retain"},
            "data": [{"secretKey": "k", "remoteRef": {"key": "db", "version": "AWSPREVIOUS",
                "conversionStrategy": "Default", "decodingStrategy": "None", "metadataPolicy": "None", "nullBytePolicy": "Ignore"}}]});
        let out = convert(vec![
            es(spec.clone()),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        ]);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        assert_eq!(out.objects.len(), 2, "other documents pass through");
        let o = &out.objects[0];
        assert_eq!(o["apiVersion"], "lockstep.dev/v1alpha1");
        assert_eq!(o["spec"], spec, "the spec is ESO's, unchanged");
        assert!(
            o.get("status").is_none()
                && o["metadata"].get("uid").is_none()
                && o["metadata"].get("managedFields").is_none()
        );
        assert!(o["metadata"].get("annotations").is_none());
        assert_eq!(o["metadata"]["namespace"], "team");
    }

    #[test]
    fn a_cluster_external_secret_converts_and_its_external_secret_spec_is_checked() {
        let ces = |es_spec: Value| {
            json!({"apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret",
                "metadata": {"name": "shared", "uid": "u"},
                "spec": {"externalSecretName": "db", "refreshTime": "1m",
                    "namespaceSelectors": [{"matchLabels": {"team": "a"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]}],
                    "namespaces": ["legacy"],
                    "externalSecretMetadata": {"labels": {"app": "x"}, "annotations": {"note": "y"}},
                    "externalSecretSpec": es_spec},
                "status": {"provisionedNamespaces": ["team-a"]}})
        };
        let spec = json!({"secretStoreRef": {"name": "aws", "kind": "ClusterSecretStore"},
            "data": [{"secretKey": "k", "remoteRef": {"key": "db"}}]});
        let out = convert(vec![ces(spec.clone())]);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let o = &out.objects[0];
        assert_eq!(o["apiVersion"], "lockstep.dev/v1alpha1");
        assert_eq!(o["spec"], ces(spec)["spec"], "the spec is ESO's, unchanged");
        assert!(o.get("status").is_none() && o["metadata"].get("uid").is_none());

        // What ESO's ClusterExternalSecret created is left to Lockstep's to create.
        let mut made =
            es(json!({"secretStoreRef": {"name": "aws"}, "data": [{"secretKey": "k", "remoteRef": {"key": "db"}}]}));
        made["metadata"]["ownerReferences"] = json!([{"apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret",
            "name": "shared", "uid": "u", "controller": true}]);
        let out = convert(vec![made]);
        assert!(out.objects.is_empty() && out.warnings.is_empty(), "{:?}", out.warnings);
        assert!(out.notes[0].why.contains("ClusterExternalSecret shared"), "{:?}", out.notes);

        let generator = json!({"secretStoreRef": {"name": "aws"},
            "dataFrom": [{"sourceRef": {"generatorRef": {"kind": "Password", "name": "p"}}}]});
        let out = convert(vec![ces(generator)]);
        assert!(out.objects.is_empty());
        assert_eq!(out.warnings[0].object, "ClusterExternalSecret shared");
        assert_eq!(out.warnings[0].field, "spec.externalSecretSpec.dataFrom[0].sourceRef");
    }

    #[test]
    fn what_lockstep_does_not_support_is_named_and_not_written() {
        let rows = [
            (
                json!({"secretStoreRef": {"name": "s"}, "data": [{"secretKey": "k", "remoteRef": {"key": "a"}, "sourceRef": {"storeRef": {"name": "x"}}}]}),
                "spec.data[0].sourceRef",
            ),
            (json!({"secretStoreRef": {"name": "s"}, "syncWindows": []}), "spec.syncWindows"),
            (
                json!({"secretStoreRef": {"name": "s"}, "target": {"template": {"engineVersion": "v1"}}}),
                "spec.target.template.engineVersion",
            ),
        ];
        for (spec, field) in rows {
            let out = convert(vec![es(spec)]);
            assert!(out.objects.is_empty(), "{field}: not written");
            assert!(out.warnings.iter().any(|w| w.field == field), "{field}: {:?}", out.warnings);
            assert!(out.warnings.iter().all(|w| w.object == "ExternalSecret team/app"));
        }
        let store = json!({"apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": {"name": "s"},
            "spec": {"provider": {"aws": {"service": "ParameterStore", "region": "eu-west-1"}}}});
        let out = convert(vec![store]);
        assert_eq!(out.warnings[0].field, "spec.provider.aws.service");
        let push =
            json!({"apiVersion": "external-secrets.io/v1alpha1", "kind": "PushSecret", "metadata": {"name": "p"}});
        assert!(convert(vec![push]).warnings[0].why.contains("PushSecret is not supported"));
    }
}
