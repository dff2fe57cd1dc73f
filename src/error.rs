//! Errors of a sync. Each variant knows its condition reason, whether it is transient, and its
//! metric label. Messages name what to fix and never carry a secret value.

use crate::status::Reason;

/// Result of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a sync did not complete.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The AWS secret does not exist (or no version has the stage / id asked for).
    #[error("AWS secret {key:?} not found{detail}")]
    SecretNotFound {
        /// Name or ARN.
        key: String,
        /// Extra context, starting with a separator, or empty.
        detail: String,
    },
    /// The AWS secret is scheduled for deletion.
    #[error("AWS secret {key:?} is scheduled for deletion; restore it or point remoteRef.key elsewhere")]
    SecretScheduledForDeletion {
        /// Name or ARN.
        key: String,
    },
    /// The JSON value has no such property.
    #[error("property {property:?} not found in AWS secret {key:?}")]
    PropertyNotFound {
        /// Name or ARN.
        key: String,
        /// The property path as written.
        property: String,
    },
    /// The value cannot be used as asked (not JSON where a property is asked, invalid key, ...).
    #[error("{0}")]
    InvalidValue(String),
    /// A template does not parse or render, or the Secret type lacks a required key.
    #[error("{0}")]
    InvalidTemplate(String),
    /// Two sources map to the same Secret key.
    #[error("{0}")]
    KeyConflict(String),
    /// AWS denied the call.
    #[error("access denied by AWS{0}")]
    AccessDenied(String),
    /// AWS throttled the call.
    #[error("AWS throttled the request{0}; retrying with backoff")]
    Throttled(String),
    /// AWS (or the endpoint) could not be reached or failed.
    #[error("AWS Secrets Manager unavailable: {0}")]
    ProviderUnavailable(String),
    /// The store is missing or its credentials cannot be resolved.
    #[error("{0}")]
    StoreNotReady(String),
    /// The ClusterSecretStore does not admit this namespace.
    #[error("{0}")]
    StoreNotAllowed(String),
    /// The target Secret exists and is not ours to write.
    #[error("{0}")]
    TargetConflict(String),
    /// The rendered Secret exceeds the 1 MiB limit.
    #[error("the Secret would hold {size} bytes, over the 1 MiB limit of a Kubernetes Secret")]
    TargetTooLarge {
        /// Bytes of data.
        size: usize,
    },
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// The condition reason this error is reported as.
    pub fn reason(&self) -> Reason {
        match self {
            Error::SecretNotFound { .. } | Error::SecretScheduledForDeletion { .. } => Reason::SecretNotFound,
            Error::PropertyNotFound { .. } => Reason::PropertyNotFound,
            Error::InvalidValue(_) => Reason::InvalidValue,
            Error::InvalidTemplate(_) => Reason::InvalidTemplate,
            Error::KeyConflict(_) => Reason::KeyConflict,
            Error::AccessDenied(_) => Reason::AccessDenied,
            Error::Throttled(_) => Reason::Throttled,
            Error::ProviderUnavailable(_) => Reason::ProviderUnavailable,
            Error::Kube(_) => Reason::ApplyFailed,
            Error::StoreNotReady(_) => Reason::StoreNotReady,
            Error::StoreNotAllowed(_) => Reason::StoreNotAllowed,
            Error::TargetConflict(_) => Reason::TargetConflict,
            Error::TargetTooLarge { .. } => Reason::TargetTooLarge,
        }
    }

    /// Transient errors retry with capped backoff; the others wait for a change (or the next
    /// refresh).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Throttled(_) | Error::ProviderUnavailable(_) | Error::Kube(_))
    }
}
