//! The objects the tests apply, one builder per kind, each turning into the JSON that
//! [`crate::apply`] takes:
//!
//! ```text
//! secret_store("aws", &endpoint)                            SecretStore, keys from Secret aws-creds
//! cluster_store(&name, &endpoint).creds_in(ns)              ClusterSecretStore, keys from ns/aws-creds
//! es("aws").refresh("1s").key("k", &src)                    ExternalSecret spec: k = the whole of src
//! es("aws").refresh("1h").property("password", &db, "password").manifest("db")
//! creds(), secret(name, string_data), deployment(name)
//! ```

use serde_json::{Value, json};

use crate::merge;

pub const API_VERSION: &str = "lockstep.dev/v1alpha1";

/// The credential Secret that [`creds`] writes and the store builders read keys from by default.
pub const CREDS: &str = "aws-creds";

/// A Lockstep object of `kind` named `name` with `spec`.
pub fn object(kind: &str, name: &str, spec: impl Into<Value>) -> Value {
    json!({"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec.into()})
}

/// A Secret `name` with `string_data` (an object of strings).
pub fn secret(name: &str, string_data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": string_data})
}

/// Secret [`CREDS`] with moto's keys, under the key names the store builders reference.
pub fn creds() -> Value {
    secret(CREDS, json!({"access-key-id": "testing", "secret-access-key": "testing"}))
}

/// A Deployment `name` (a rollout-restart target; no pod ever runs on the rig).
pub fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "example.invalid/app:1"}]}}}})
}

/// A SecretStore or ClusterSecretStore in region us-east-1 with an endpoint.
#[derive(Clone, Debug)]
pub struct Store {
    kind: &'static str,
    name: String,
    aws: Value,
    keys: Option<Keys>,
    conditions: Option<Value>,
}

/// Where a store's static keys come from: `access-key-id`, `secret-access-key` and, when asked for,
/// `session-token` of one Secret.
#[derive(Clone, Debug, Default)]
struct Keys {
    secret: String,
    namespace: Option<String>,
    session_token: bool,
}

/// SecretStore `name` against `endpoint`, with the keys of Secret [`CREDS`] (see [`creds`]).
pub fn secret_store(name: &str, endpoint: &str) -> Store {
    Store::new("SecretStore", name, endpoint)
}

/// ClusterSecretStore `name` against `endpoint`, with the keys of Secret [`CREDS`] in the namespace
/// given by [`Store::creds_in`] (or [`Store::ambient`] credentials).
pub fn cluster_store(name: &str, endpoint: &str) -> Store {
    Store::new("ClusterSecretStore", name, endpoint)
}

impl Store {
    fn new(kind: &'static str, name: &str, endpoint: &str) -> Store {
        Store {
            kind,
            name: name.to_string(),
            aws: json!({"service": "SecretsManager", "region": "us-east-1", "endpoint": endpoint}),
            keys: Some(Keys { secret: CREDS.to_string(), namespace: None, session_token: false }),
            conditions: None,
        }
    }

    /// Keys from Secret `secret` instead of [`CREDS`].
    pub fn creds(mut self, secret: &str) -> Store {
        self.keys.get_or_insert_with(Keys::default).secret = secret.to_string();
        self
    }

    /// The credential Secret is in `namespace` (what a ClusterSecretStore must say).
    pub fn creds_in(mut self, namespace: &str) -> Store {
        if let Some(keys) = self.keys.as_mut() {
            keys.namespace = Some(namespace.to_string());
        }
        self
    }

    /// A session token too, under key `session-token` of the credential Secret.
    pub fn session_token(mut self) -> Store {
        if let Some(keys) = self.keys.as_mut() {
            keys.session_token = true;
        }
        self
    }

    /// No `auth`: the operator's own (ambient) credentials.
    pub fn ambient(mut self) -> Store {
        self.keys = None;
        self
    }

    /// Fields merged into `spec.provider.aws` (`role`, `externalID`, ...).
    pub fn aws(mut self, fields: Value) -> Store {
        merge(&mut self.aws, fields);
        self
    }

    /// `spec.conditions` (which namespaces a ClusterSecretStore admits).
    pub fn conditions(mut self, conditions: Value) -> Store {
        self.conditions = Some(conditions);
        self
    }
}

impl From<Store> for Value {
    fn from(store: Store) -> Value {
        let mut aws = store.aws;
        if let Some(keys) = store.keys {
            let key_ref = |key: &str| {
                let mut r = json!({"name": keys.secret, "key": key});
                if let Some(ns) = &keys.namespace {
                    r["namespace"] = json!(ns);
                }
                r
            };
            let mut secret_ref = json!({
                "accessKeyIDSecretRef": key_ref("access-key-id"),
                "secretAccessKeySecretRef": key_ref("secret-access-key"),
            });
            if keys.session_token {
                secret_ref["sessionTokenSecretRef"] = key_ref("session-token");
            }
            merge(&mut aws, json!({"auth": {"secretRef": secret_ref}}));
        }
        let mut spec = json!({"provider": {"aws": aws}});
        if let Some(conditions) = store.conditions {
            spec["conditions"] = conditions;
        }
        object(store.kind, &store.name, spec)
    }
}

/// An ExternalSecret spec; [`Es::manifest`] names it.
#[derive(Clone, Debug)]
pub struct Es {
    spec: Value,
}

/// An ExternalSecret spec reading from SecretStore `store`, with no data yet.
pub fn es(store: &str) -> Es {
    Es { spec: json!({"secretStoreRef": {"name": store}}) }
}

impl Es {
    /// The kind of the store it reads from (`SecretStore` or `ClusterSecretStore`).
    pub fn kind(mut self, kind: &str) -> Es {
        self.spec["secretStoreRef"]["kind"] = json!(kind);
        self
    }

    /// `refreshInterval` (`"1s"`, `"1h"`, `"0"`).
    pub fn refresh(mut self, interval: &str) -> Es {
        self.spec["refreshInterval"] = json!(interval);
        self
    }

    /// Key `secret_key` holds the whole value of AWS secret `key`.
    pub fn key(self, secret_key: &str, key: &str) -> Es {
        self.remote(secret_key, json!({"key": key}))
    }

    /// Key `secret_key` holds `property` of the JSON value of AWS secret `key`.
    pub fn property(self, secret_key: &str, key: &str, property: &str) -> Es {
        self.remote(secret_key, json!({"key": key, "property": property}))
    }

    /// Key `secret_key` with a `remoteRef` of its own (versions, decoding, invalid ones).
    pub fn remote(self, secret_key: &str, remote_ref: Value) -> Es {
        self.push("data", json!({"secretKey": secret_key, "remoteRef": remote_ref}))
    }

    /// Every property of the JSON value of AWS secret `key`, one key each.
    pub fn extract(self, key: &str) -> Es {
        self.data_from(json!({"extract": {"key": key}}))
    }

    /// A `dataFrom` entry (`extract` with options, `find`, `rewrite`).
    pub fn data_from(self, entry: Value) -> Es {
        self.push("dataFrom", entry)
    }

    /// Fields merged into `target` (`name`, `creationPolicy`, `deletionPolicy`).
    pub fn target(mut self, fields: Value) -> Es {
        merge(&mut self.spec["target"], fields);
        self
    }

    /// Fields merged into `target.template` (`data`, `type`, `metadata`).
    pub fn template(self, fields: Value) -> Es {
        self.target(json!({"template": fields}))
    }

    /// A rollout restart of workload `kind`/`name` when the Secret changes.
    pub fn restart(self, kind: &str, name: &str) -> Es {
        self.push("rolloutRestartTargets", json!({"kind": kind, "name": name}))
    }

    /// The whole object, named `name`.
    pub fn manifest(self, name: &str) -> Value {
        object("ExternalSecret", name, self.spec)
    }

    fn push(mut self, field: &str, entry: Value) -> Es {
        match self.spec[field].as_array_mut() {
            Some(entries) => entries.push(entry),
            None => self.spec[field] = json!([entry]),
        }
        self
    }
}

impl From<Es> for Value {
    fn from(es: Es) -> Value {
        es.spec
    }
}
