//! Lockstep keeps Kubernetes Secrets in lockstep with AWS Secrets Manager.
//!
//! Data flows down: `api` (the CRDs) -> `source` (what a spec reads) -> `aws` (the one AWS seam
//! per store) -> `controller` (reconcile as named steps) using the pure `render`, `template`,
//! `codec` and `status`. IO lives in `aws` and `controller`; the rest is pure and unit-tested.

pub mod admin;
pub mod api;
pub mod aws;
pub mod cli;
pub mod codec;
pub mod controller;
pub mod convert;
pub mod error;
pub mod events;
pub mod json_path;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod source;
pub mod status;
pub mod telemetry;
pub mod template;
pub mod value;

#[cfg(test)]
mod proptests;

pub use error::{Error, Result};

/// Field manager of every server-side apply, and the value of the managed-by label.
pub const MANAGER: &str = "lockstep";
/// Label on every Secret Lockstep writes; the controller watches only Secrets carrying it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Annotation holding the sha256 of the written data (never the data).
pub const DATA_HASH_ANNOTATION: &str = "lockstep.dev/data-hash";
/// Annotation `lockstep refresh` sets on an ExternalSecret to have it synced at once (any change of
/// its annotations does); it is not copied to the Secret.
pub const REFRESH_ANNOTATION: &str = "lockstep.dev/refresh-requested";
/// Annotation naming the AWS secret versions the data was built from.
pub const SOURCE_VERSIONS_ANNOTATION: &str = "lockstep.dev/source-versions";

/// On a Secret rendered with `templateFrom` ConfigMaps or Secrets: sha256 of those templates (an
/// edit of one is then a change the fast path sees).
pub const TEMPLATE_INPUTS_ANNOTATION: &str = "lockstep.dev/template-inputs";

/// The User-Agent of every request to the apiserver (`lockstep/<version>`), so an audit log or an
/// apiserver's request metrics tell this operator's requests from other clients'.
pub const USER_AGENT: &str = concat!("lockstep/", env!("CARGO_PKG_VERSION"));

/// `config` with Lockstep's [`USER_AGENT`] on every request.
pub fn with_user_agent(mut config: kube::Config) -> kube::Config {
    config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_static(USER_AGENT)));
    config
}

/// A mutex's guard; a poisoned mutex (a panic while it was held) is used as it is: every value
/// guarded here stays consistent between statements, and release builds abort on panic anyway.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod redaction_tests {
    #[test]
    fn debug_of_every_value_holding_type_redacts() {
        const V: &str = "SENTINEL-7f3a-debug";
        let bytes = || crate::value::SecretBytes::from(V.to_string());
        let data: std::collections::BTreeMap<String, crate::value::SecretBytes> = [("k".to_string(), bytes())].into();
        let shown = [
            format!("{:?}", bytes()),
            format!("{:?}", crate::value::Payload::String(bytes())),
            format!("{:?}", crate::value::Payload::Binary(bytes())),
            format!(
                "{:?}",
                crate::source::Fetched {
                    payload: crate::value::Payload::String(bytes()),
                    version_id: "v1".into(),
                    created_date: None
                }
            ),
            format!("{:?}", crate::render::Desired { data: data.clone(), ..Default::default() }),
            // The template's inputs and outputs.
            format!("{data:?}"),
            format!("{:?}", crate::template::Rendered { data, ..Default::default() }),
            format!(
                "{:?}",
                crate::aws::StaticKeys {
                    access_key_id: "AKIA".into(),
                    secret_access_key: V.into(),
                    session_token: Some(V.into())
                }
            ),
        ];
        for s in shown {
            assert!(!s.contains("SENTINEL"), "Debug shows a value: {s}");
        }
    }
}
