//! Logging: the subscriber, the filter that keeps secret values and credentials out of every log
//! level, and the panic hook.

use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterExt, ParseError, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Why logging could not be set up.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The filter does not parse.
    #[error("--log-level {filter:?} is not a valid filter")]
    Filter {
        /// The filter as given.
        filter: String,
        /// The parse error.
        source: ParseError,
    },
    /// Another subscriber was installed first.
    #[error("cannot install the log subscriber")]
    Init(#[from] TryInitError),
}

/// Targets whose trace-level events can carry request or response bodies: the AWS SDK logs
/// SecretString at trace when `LOG_SENSITIVE_BODIES=true` is in the environment, and the HTTP and
/// Kubernetes client stacks log what they send and receive. Their trace events are dropped whatever
/// the filter asks (their debug events stay), so no log level shows a secret value.
pub const BODY_LOGGERS: &[&str] =
    &["aws_smithy", "aws_sigv4", "aws_sdk", "aws_config", "hyper", "h2", "kube_client", "tower_http", "rustls"];

/// Fields of AWS SDK events and spans whose `Debug` shows an access key id (the SDK redacts only the
/// secret key). Events and spans with any of them are dropped at every level:
/// - `endpoint_params`: the endpoint resolver's parameters carry the resolved identity; logged at
///   debug on every call (`aws_smithy_runtime::client::orchestrator::endpoints`);
/// - `identity`, `runtime_components`: the resolved identity, and the client's identity resolvers
///   (static credentials among them);
/// - `creds`, `chain`, `base`, `access_key_id`: credentials as the profile-file chain and the SDK's
///   AssumeRole provider load them (at info and debug).
pub const CREDENTIAL_FIELDS: &[&str] =
    &["endpoint_params", "identity", "runtime_components", "creds", "chain", "base", "access_key_id"];

/// Whether an event or span of `target` at `level` with `fields` may be logged at all, whatever the
/// filter asks.
pub fn allowed<'a>(target: &str, level: &Level, mut fields: impl Iterator<Item = &'a str>) -> bool {
    let shows_bodies = *level == Level::TRACE && BODY_LOGGERS.iter().any(|t| target.starts_with(t));
    let shows_credentials = target.starts_with("aws_") && fields.any(|f| CREDENTIAL_FIELDS.contains(&f));
    !(shows_bodies || shows_credentials)
}

/// The layer that writes the log: `filter` (an `EnvFilter` directive such as `info` or
/// `lockstep=debug,info`) narrowed by [`allowed`].
pub fn layer<S, W>(
    filter: &str,
    format: Format,
    writer: W,
    ansi: bool,
) -> Result<Box<dyn Layer<S> + Send + Sync>, Error>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let parsed = EnvFilter::try_new(filter).map_err(|source| Error::Filter { filter: filter.to_string(), source })?;
    let filter =
        parsed.and(filter_fn(|meta| allowed(meta.target(), meta.level(), meta.fields().iter().map(|f| f.name()))));
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi);
    Ok(match format {
        Format::Text => fmt.with_filter(filter).boxed(),
        Format::Json => fmt.json().with_filter(filter).boxed(),
    })
}

/// Log to stderr from here on, and log panics (see [`describe_panic`]).
pub fn init(filter: &str, format: Format) -> Result<(), Error> {
    use tracing_subscriber::layer::SubscriberExt;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry().with(layer(filter, format, std::io::stderr, ansi)?).try_init()?;
    std::panic::set_hook(Box::new(|info| tracing::error!("{}", describe_panic(info.payload(), info.location()))));
    Ok(())
}

/// What a panic shows: where it happened and, when the message is a literal of the code, the
/// message. A formatted message (a `String` payload) is withheld: it could have been built from a
/// value. Release builds abort after this (`panic = "abort"`).
pub fn describe_panic(payload: &(dyn std::any::Any + Send), location: Option<&std::panic::Location<'_>>) -> String {
    let at = location.map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
    match payload.downcast_ref::<&'static str>() {
        Some(literal) => format!("panicked{at}: {literal}"),
        None => format!("panicked{at} (message withheld: it may hold a secret value)"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn a_panic_shows_literal_messages_and_withholds_formatted_ones() {
        let literal: &'static str = "invariant broken";
        assert!(describe_panic(&literal, None).ends_with(": invariant broken"));
        let formatted = format!("value was {}", "SENTINEL-7f3a");
        let shown = describe_panic(&formatted, std::panic::Location::caller().into());
        assert!(!shown.contains("SENTINEL") && shown.contains("withheld") && shown.contains("telemetry.rs"), "{shown}");
    }

    #[test]
    fn trace_events_of_body_loggers_are_dropped_and_their_debug_events_kept() {
        let none = || std::iter::empty();
        for target in [
            "aws_smithy_runtime::client::orchestrator",
            "aws_sigv4::http_request::sign",
            "hyper::proto",
            "kube_client::client",
        ] {
            assert!(!allowed(target, &Level::TRACE, none()), "{target}");
            assert!(allowed(target, &Level::DEBUG, none()), "{target}");
        }
        assert!(allowed("lockstep::controller", &Level::TRACE, none()));
        assert!(allowed("kube_runtime::controller", &Level::TRACE, none()));
    }

    #[test]
    fn sdk_events_with_a_field_that_shows_credentials_are_dropped_at_every_level() {
        let endpoints = "aws_smithy_runtime::client::orchestrator::endpoints";
        for level in [Level::ERROR, Level::INFO, Level::DEBUG] {
            assert!(!allowed(endpoints, &level, ["endpoint_params", "message"].into_iter()), "{level}");
            assert!(!allowed("aws_config::profile::credentials", &level, ["creds", "message"].into_iter()));
        }
        // The credential chain names the provider that answered: a name, no credential.
        assert!(allowed("aws_config::meta::credentials::chain", &Level::DEBUG, ["provider", "message"].into_iter()));
        assert!(allowed(endpoints, &Level::DEBUG, ["endpoint_prefix", "message"].into_iter()));
        // Lockstep's own fields are its own: `identity` is the leader's holder identity.
        assert!(allowed("lockstep::leader", &Level::INFO, ["lease", "identity", "message"].into_iter()));
    }

    /// The log lines, shared with the layer that writes them.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
        }
    }

    const ISSUED: [&str; 3] = ["ASIASENTINELISSUED", "SENTINEL-issued-secret", "SENTINEL-issued-token"];

    /// A loopback stand-in for STS and Secrets Manager: AssumeRole issues `ISSUED`, GetCallerIdentity
    /// answers, every Secrets Manager call is a ResourceNotFoundException.
    async fn fake_aws(listener: tokio::net::TcpListener) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0u8; 8192];
                let request = loop {
                    let Ok(n @ 1..) = conn.read(&mut chunk).await else { return };
                    request.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
                    let length = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:")?.trim().parse().ok());
                    if body.len() >= length.unwrap_or(0) {
                        break text;
                    }
                };
                let xml = |op: &str, result: &str| {
                    let ns = "https://sts.amazonaws.com/doc/2011-06-15/";
                    format!("<{op}Response xmlns=\"{ns}\"><{op}Result>{result}</{op}Result></{op}Response>")
                };
                let [id, key, token] = ISSUED;
                let (status, kind, body) = if request.contains("Action=AssumeRole") {
                    let creds = format!(
                        "<AccessKeyId>{id}</AccessKeyId><SecretAccessKey>{key}</SecretAccessKey><SessionToken>{token}</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>"
                    );
                    ("200 OK", "text/xml", xml("AssumeRole", &format!("<Credentials>{creds}</Credentials>")))
                } else if request.contains("Action=GetCallerIdentity") {
                    (
                        "200 OK",
                        "text/xml",
                        xml(
                            "GetCallerIdentity",
                            "<Arn>arn:aws:iam::123456789012:user/u</Arn><Account>123456789012</Account>",
                        ),
                    )
                } else {
                    (
                        "400 Bad Request",
                        "application/x-amz-json-1.1",
                        r#"{"__type":"ResourceNotFoundException","message":"no"}"#.to_string(),
                    )
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            });
        }
    }

    /// Static keys, then the keys STS issues for a role, through STS and Secrets Manager calls: at
    /// trace, in either format, no key id, secret key or session token reaches the log, and the SDK's
    /// debug events that show none stay.
    #[tokio::test]
    async fn sdk_calls_at_trace_log_no_credentials() -> Result<(), Box<dyn std::error::Error>> {
        use aws_credential_types::Credentials;
        use tracing_subscriber::layer::SubscriberExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        tokio::spawn(fake_aws(listener));
        let static_keys = ["SENTINEL-static-akid", "SENTINEL-static-secret", "SENTINEL-static-token"];
        for format in [Format::Text, Format::Json] {
            let log = Captured::default();
            let writer = log.clone();
            let subscriber =
                tracing_subscriber::registry().with(layer("trace", format, move || writer.clone(), false)?);
            let _default = tracing::subscriber::set_default(subscriber);
            let [id, key, token] = static_keys;
            let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(&endpoint)
                .credentials_provider(Credentials::new(id, key, Some(token.into()), None, "test"))
                .load()
                .await;
            let sts = aws_sdk_sts::Client::new(&conf);
            sts.get_caller_identity().send().await?;
            let assumed =
                sts.assume_role().role_arn("arn:aws:iam::123456789012:role/r").role_session_name("t").send().await?;
            let c = assumed.credentials.ok_or("AssumeRole returned no credentials")?;
            let issued = Credentials::new(c.access_key_id, c.secret_access_key, Some(c.session_token), None, "sts");
            let sm_conf = aws_sdk_secretsmanager::config::Builder::from(&conf).credentials_provider(issued).build();
            let sm = aws_sdk_secretsmanager::Client::from_conf(sm_conf);
            assert!(sm.get_secret_value().secret_id("x").send().await.is_err());
            assert!(sm.describe_secret().secret_id("x").send().await.is_err());
            let text = log.text();
            for credential in static_keys.iter().chain(&ISSUED) {
                assert!(!text.contains(credential), "{format:?}: {credential} in the log:\n{text}");
            }
            assert!(text.contains("will apply endpoint"), "{format:?}: the SDK's endpoint debug event stays:\n{text}");
        }
        Ok(())
    }
}
