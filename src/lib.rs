//! Lockstep keeps Kubernetes Secrets in lockstep with AWS Secrets Manager.
//!
//! IO lives at the edges (`aws`, `controller`); `render` and `status` are pure and unit-tested.

pub mod admin;
pub mod api;
pub mod aws;
pub mod controller;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod render;
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
/// Annotation naming the AWS secret versions the data was built from.
pub const SOURCE_VERSIONS_ANNOTATION: &str = "lockstep.dev/source-versions";
