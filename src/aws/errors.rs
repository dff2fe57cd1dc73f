use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::Error;

/// Turn an SDK error into a sync error. `key` names the AWS secret the call was about.
///
/// Response bodies are never quoted: a body that failed to parse may hold a secret value.
pub fn classify<E>(err: &SdkError<E, Response>, key: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let e = ctx.err();
            let code = e.code().unwrap_or_default();
            let message = e.message().unwrap_or_default();
            classify_code(code, message, status, key)
        }
        SdkError::ResponseError(ctx) => {
            let status = ctx.raw().status().as_u16();
            classify_code("", "", status, key)
        }
        SdkError::TimeoutError(_) => Error::ProviderUnavailable("the request timed out".into()),
        SdkError::DispatchFailure(f) => {
            if let Some(cause) = f.as_other() {
                Error::ProviderUnavailable(format!("{cause:?} error: {}", DisplayErrorContext(err)))
            } else {
                Error::ProviderUnavailable(DisplayErrorContext(err).to_string())
            }
        }
        SdkError::ConstructionFailure(_) => Error::StoreNotReady(format!(
            "could not build the request (credentials or configuration): {}",
            DisplayErrorContext(err)
        )),
        _ => Error::ProviderUnavailable(DisplayErrorContext(err).to_string()),
    }
}

/// Map an error code (and HTTP status, for answers without a parseable code) to a sync error.
pub fn classify_code(code: &str, message: &str, status: u16, key: &str) -> Error {
    let detail = if message.is_empty() { format!(" ({code}, HTTP {status})") } else { format!(": {message}") };
    match code {
        "ResourceNotFoundException" => Error::SecretNotFound { key: key.into(), detail: String::new() },
        "InvalidRequestException" if message.to_ascii_lowercase().contains("delet") => {
            Error::SecretScheduledForDeletion { key: key.into() }
        }
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "InvalidSignatureException"
        | "DecryptionFailure" => Error::AccessDenied(detail),
        "ThrottlingException" | "Throttling" | "TooManyRequestsException" | "RequestLimitExceeded" => {
            Error::Throttled(String::new())
        }
        "InvalidParameterException" | "InvalidRequestException" => {
            Error::InvalidValue(format!("AWS rejected the request for {key:?}{detail}"))
        }
        _ => match status {
            403 | 401 => Error::AccessDenied(format!(" (HTTP {status})")),
            429 => Error::Throttled(String::new()),
            404 => Error::SecretNotFound { key: key.into(), detail: String::new() },
            _ => Error::ProviderUnavailable(format!("unexpected answer{detail}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Reason;

    #[test]
    fn codes_map_to_reasons() {
        let r = |code: &str, msg: &str, status| classify_code(code, msg, status, "k").reason();
        assert_eq!(r("ResourceNotFoundException", "", 400), Reason::SecretNotFound);
        assert_eq!(r("InvalidRequestException", "marked for deletion", 400), Reason::SecretNotFound);
        assert_eq!(r("InvalidRequestException", "other", 400), Reason::InvalidValue);
        assert_eq!(r("AccessDeniedException", "", 400), Reason::AccessDenied);
        assert_eq!(r("", "", 403), Reason::AccessDenied, "moto's XML 403 has no parseable code");
        assert_eq!(r("ThrottlingException", "", 400), Reason::Throttled);
        assert_eq!(r("", "", 429), Reason::Throttled);
        assert_eq!(r("InternalServiceError", "", 500), Reason::ProviderUnavailable);
        assert!(classify_code("ThrottlingException", "", 400, "k").is_transient());
        assert!(!classify_code("ResourceNotFoundException", "", 400, "k").is_transient());
    }
}
