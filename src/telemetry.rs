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
    #[error("--log-level {filter:?} is not a valid filter: {source}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// The parse error.
        source: ParseError,
    },
    /// Another subscriber was installed first.
    #[error("cannot install the log subscriber: {0}")]
    Init(#[from] TryInitError),
}

/// Targets whose trace-level events can carry request or response bodies: the AWS SDK logs
/// SecretString at trace when `LOG_SENSITIVE_BODIES=true` is in the environment, and the HTTP and
/// Kubernetes client stacks log what they send and receive. Their trace events are dropped whatever
/// the filter asks (their debug events stay), so no log level shows a secret value.
pub const BODY_LOGGERS: &[&str] =
    &["aws_smithy", "aws_sigv4", "aws_sdk", "aws_config", "hyper", "h2", "kube_client", "tower_http", "rustls"];

/// Whether an event or span of `target` at `level` may be logged at all, whatever the filter.
pub fn allowed(target: &str, level: &Level) -> bool {
    *level != Level::TRACE || !BODY_LOGGERS.iter().any(|t| target.starts_with(t))
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
    let filter = parsed.and(filter_fn(|meta| allowed(meta.target(), meta.level())));
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
        for target in [
            "aws_smithy_runtime::client::orchestrator",
            "aws_sigv4::http_request::sign",
            "hyper::proto",
            "kube_client::client",
        ] {
            assert!(!allowed(target, &Level::TRACE), "{target}");
            assert!(allowed(target, &Level::DEBUG), "{target}");
        }
        assert!(allowed("lockstep::controller", &Level::TRACE));
        assert!(allowed("kube_runtime::controller", &Level::TRACE));
    }
}
