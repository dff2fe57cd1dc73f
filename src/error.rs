//! Errors of a sync. Each variant knows its condition reason, whether it is transient, and its
//! metric label. Messages name what to fix and never carry a secret value.

use crate::status::Reason;

/// Result of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a sync did not complete.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The AWS secret does not exist (or no version has the stage / id asked for).
    #[error("AWS secret {key:?} not found{}", suffix(detail))]
    SecretNotFound {
        /// Name or ARN.
        key: String,
        /// What AWS or the answer said, when it says more than "not found".
        detail: Option<String>,
    },
    #[error("AWS secret {key:?} is scheduled for deletion; restore it or point remoteRef.key elsewhere")]
    SecretScheduledForDeletion {
        /// Name or ARN.
        key: String,
    },
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
    /// AWS denied the call; the detail is AWS's message (or the HTTP status when it sent none).
    #[error("access denied by AWS{}", suffix(.0))]
    AccessDenied(Option<String>),
    #[error("AWS throttled the request; retrying with backoff")]
    Throttled,
    /// AWS (or the endpoint) could not be reached or failed.
    #[error("AWS Secrets Manager unavailable: {0}")]
    ProviderUnavailable(String),
    /// A store's event queue (SQS) could not be read; polling covers for it.
    #[error("the event queue cannot be read: {0}")]
    EventsUnavailable(String),
    /// The store is missing or its credentials cannot be resolved.
    #[error("{0}")]
    StoreNotReady(String),
    /// The ClusterSecretStore does not admit this namespace.
    #[error("{0}")]
    StoreNotAllowed(String),
    /// The target Secret exists and is not ours to write.
    #[error("{0}")]
    TargetConflict(String),
    #[error("the Secret would hold {size} bytes, over the 1 MiB limit of a Kubernetes Secret")]
    TargetTooLarge {
        /// Bytes of data.
        size: usize,
    },
    /// Every AWS secret the Secret is built from is gone, and the Secret was deleted as
    /// deletionPolicy Delete says.
    #[error("{cause}; deleted Secret {secret:?} as deletionPolicy Delete says")]
    TargetDeleted {
        cause: Box<Error>,
        /// The Secret's name.
        secret: String,
    },
    /// The Kubernetes API failed or refused a call; shown as the apiserver's own message.
    #[error("Kubernetes API: {}", kube_message(.0))]
    Kube(#[from] kube::Error),
}

/// ": detail", or nothing.
fn suffix(detail: &Option<String>) -> String {
    detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
}

/// What the apiserver said, in its words ("Secret \"x\" is invalid: data[..]: ..."), never a
/// Debug dump of the response.
fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} (HTTP {})", status.message, status.code)
        }
        kube::Error::Api(status) => format!("the request failed (HTTP {})", status.code),
        other => other.to_string(),
    }
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
            Error::Throttled => Reason::Throttled,
            Error::ProviderUnavailable(_) | Error::EventsUnavailable(_) => Reason::ProviderUnavailable,
            Error::Kube(_) => Reason::ApplyFailed,
            Error::StoreNotReady(_) => Reason::StoreNotReady,
            Error::StoreNotAllowed(_) => Reason::StoreNotAllowed,
            Error::TargetConflict(_) => Reason::TargetConflict,
            Error::TargetTooLarge { .. } => Reason::TargetTooLarge,
            Error::TargetDeleted { cause, .. } => cause.reason(),
        }
    }

    /// Transient errors retry with capped backoff; the others wait for a change (or the next
    /// refresh).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Throttled | Error::ProviderUnavailable(_) | Error::EventsUnavailable(_) | Error::Kube(_))
    }

    /// The same error for another AWS secret `key` (one failed call answers for several ids).
    pub fn reissue(&self, key: &str) -> Error {
        match self {
            Error::SecretNotFound { detail, .. } => Error::SecretNotFound { key: key.into(), detail: detail.clone() },
            Error::SecretScheduledForDeletion { .. } => Error::SecretScheduledForDeletion { key: key.into() },
            Error::PropertyNotFound { property, .. } => {
                Error::PropertyNotFound { key: key.into(), property: property.clone() }
            }
            Error::InvalidValue(m) => Error::InvalidValue(m.clone()),
            Error::InvalidTemplate(m) => Error::InvalidTemplate(m.clone()),
            Error::KeyConflict(m) => Error::KeyConflict(m.clone()),
            Error::AccessDenied(d) => Error::AccessDenied(d.clone()),
            Error::Throttled => Error::Throttled,
            Error::ProviderUnavailable(m) => Error::ProviderUnavailable(m.clone()),
            Error::EventsUnavailable(m) => Error::EventsUnavailable(m.clone()),
            Error::StoreNotReady(m) => Error::StoreNotReady(m.clone()),
            Error::StoreNotAllowed(m) => Error::StoreNotAllowed(m.clone()),
            Error::TargetConflict(m) => Error::TargetConflict(m.clone()),
            Error::TargetTooLarge { size } => Error::TargetTooLarge { size: *size },
            Error::TargetDeleted { cause, secret } => {
                Error::TargetDeleted { cause: Box::new(cause.reissue(key)), secret: secret.clone() }
            }
            Error::Kube(e) => Error::ProviderUnavailable(kube_message(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apiserver_refusal_reads_as_its_message_not_a_debug_dump() {
        let status = kube::core::Status::failure("Secret \"x\" is invalid: data[..]: Invalid value: \"..\"", "Invalid")
            .with_code(422);
        let shown = Error::Kube(kube::Error::Api(Box::new(status))).to_string();
        assert!(!shown.contains("Status {") && !shown.contains("Some("), "{shown}");
        assert!(shown.contains("is invalid") && shown.contains("422"), "{shown}");
    }
}
