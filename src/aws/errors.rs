use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::Error;

/// Turn an SDK error into a sync error. `key` names what the call was about (an AWS secret, a
/// role), for the messages that name it.
///
/// Response bodies are never quoted: a body that failed to parse may hold a secret value.
pub fn classify<E>(err: &SdkError<E, Response>, key: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    // A failure of our own credentials (STS refused the role, throttled, unreachable) reaches the
    // caller wrapped in the SDK's dispatch or construction error: it is what went wrong, with its
    // own reason, not "could not reach the endpoint".
    if let Some(own) = own_cause(err) {
        return own.reissue(key);
    }
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
            let root = root_cause(err);
            // An endpoint that refused, reset or closed the connection before answering (hyper
            // reports the last as "other", not "io"): for the user, the same thing.
            Error::ProviderUnavailable(if f.is_timeout() {
                format!("the connection timed out: {root}")
            } else if f.is_user() {
                format!("the request could not be sent: {root}")
            } else {
                format!("could not reach the endpoint: {root}")
            })
        }
        SdkError::ConstructionFailure(_) => Error::StoreNotReady(format!(
            "could not build the request (credentials or configuration): {}",
            root_cause(err)
        )),
        _ => Error::ProviderUnavailable(root_cause(err)),
    }
}

/// `err` and its causes, outermost first. Chains are a handful deep; at most 32 links are
/// followed, which only guards against a cycle.
fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source()).take(33)
}

/// One of our own errors in the cause chain of `err` (what a credentials provider of ours failed
/// with), if any.
fn own_cause<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
    causes(err).find_map(|e| e.downcast_ref::<Error>())
}

/// The innermost cause of an error, as text: what went wrong, without the SDK's layers of
/// wrapping (`dispatch failure: io error: client error (SendRequest): ...`) or its Debug dump.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    causes(err).last().map(|e| e.to_string()).unwrap_or_default()
}

/// Map an error code (and HTTP status, for answers without a parseable code) to a sync error.
pub fn classify_code(code: &str, message: &str, status: u16, key: &str) -> Error {
    let detail = if message.is_empty() { format!("{code} (HTTP {status})") } else { message.to_string() };
    match code {
        "ResourceNotFoundException" => Error::SecretNotFound { key: key.into(), detail: None },
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
        | "DecryptionFailure" => Error::AccessDenied(Some(detail)),
        "ThrottlingException" | "Throttling" | "TooManyRequestsException" | "RequestLimitExceeded" => Error::Throttled,
        "InvalidParameterException" | "InvalidRequestException" => {
            Error::InvalidValue(format!("AWS rejected the request for {key:?}: {detail}"))
        }
        _ => match status {
            403 | 401 => Error::AccessDenied(Some(format!("HTTP {status}"))),
            429 => Error::Throttled,
            404 => Error::SecretNotFound { key: key.into(), detail: None },
            _ => Error::ProviderUnavailable(format!("unexpected answer: {detail}")),
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

    #[test]
    fn a_failure_of_our_credentials_keeps_its_reason_whatever_the_sdk_wraps_it_in() {
        use aws_credential_types::provider::error::CredentialsError;
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let denied =
            Error::AccessDenied(Some("STS refused to let these credentials assume arn:aws:iam::1:role/r".into()));
        let wrapped = CredentialsError::provider_error(denied);
        for err in [
            SdkError::<GetSecretValueError, Response>::dispatch_failure(ConnectorError::other(Box::new(wrapped), None)),
            SdkError::construction_failure(CredentialsError::provider_error(Error::Throttled)),
        ] {
            let e = classify(&err, "k");
            assert!(matches!(e.reason(), Reason::AccessDenied | Reason::Throttled), "{e}");
            assert!(!e.to_string().contains("could not reach"), "{e}");
        }
        let e = classify(
            &SdkError::<GetSecretValueError, Response>::dispatch_failure(ConnectorError::other(
                Box::new(CredentialsError::provider_error(Error::AccessDenied(Some(
                    "assume arn:aws:iam::1:role/r".into(),
                )))),
                None,
            )),
            "k",
        );
        assert_eq!(e.reason(), Reason::AccessDenied);
        assert!(e.to_string().contains("arn:aws:iam::1:role/r"), "{e}");
    }

    #[test]
    fn an_unreachable_endpoint_reads_as_its_root_cause() {
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)");
        let err: SdkError<GetSecretValueError, Response> =
            SdkError::dispatch_failure(ConnectorError::io(Box::new(refused)));
        let e = classify(&err, "k");
        assert_eq!(e.reason(), Reason::ProviderUnavailable);
        assert_eq!(
            e.to_string(),
            "AWS Secrets Manager unavailable: could not reach the endpoint: Connection refused (os error 111)"
        );
    }
}
