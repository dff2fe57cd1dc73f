//! `lockstep`: run the controller, print the CRDs, or print the version.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use kube::api::ListParams;
use kube::{Api, Client};
use lockstep::admin::Readiness;
use lockstep::api::ExternalSecret;
use lockstep::controller::{self, Context};
use lockstep::leader::{self, Elector, Role};
use lockstep::metrics::Metrics;
use tokio::sync::watch;
use tracing::info;

#[derive(Parser)]
#[command(name = "lockstep", version, about = "Keeps Kubernetes Secrets in lockstep with AWS Secrets Manager")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print every CRD as YAML (the content of crds/).
    Crd,
    /// Print the version.
    Version,
}

#[derive(Parser)]
struct RunArgs {
    /// Watch only this namespace (SecretStores, ExternalSecrets and Secrets in it).
    #[arg(long, env = "LOCKSTEP_NAMESPACE")]
    namespace: Option<String>,
    /// How many ExternalSecrets are reconciled at once.
    #[arg(long, default_value_t = 16, env = "LOCKSTEP_CONCURRENCY")]
    concurrency: u16,
    /// Address of the admin server (/metrics, /livez, /readyz).
    #[arg(long, default_value = "127.0.0.1:8080", env = "LOCKSTEP_METRICS_ADDR")]
    metrics_addr: SocketAddr,
    /// Quiet period, in seconds, after the last data change before rolloutRestartTargets restart.
    #[arg(long, default_value_t = 5, env = "LOCKSTEP_RESTART_DEBOUNCE_SECONDS")]
    restart_debounce_seconds: u64,
    /// AWS calls per second per store (client-side limit).
    #[arg(long, default_value_t = 20.0, env = "LOCKSTEP_AWS_QPS")]
    aws_qps: f64,
    /// AWS calls a store may make at once above --aws-qps.
    #[arg(long, default_value_t = 40, env = "LOCKSTEP_AWS_BURST")]
    aws_burst: u32,
    /// Elect a leader on a Lease; only the leader runs the controllers (for replicas > 1).
    #[arg(long, env = "LOCKSTEP_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, default_value = "lockstep", env = "LOCKSTEP_LEASE_NAME")]
    lease_name: String,
    /// Namespace of the leader Lease [default: $POD_NAMESPACE, else --namespace, else default].
    #[arg(long, env = "LOCKSTEP_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds a Lease that stopped being renewed stays held (the longest handover).
    #[arg(long, default_value_t = 15, env = "LOCKSTEP_LEASE_DURATION_SECONDS")]
    lease_duration_seconds: u64,
    /// Seconds a leader keeps trying to renew before it gives up (and exits).
    #[arg(long, default_value_t = 10, env = "LOCKSTEP_LEASE_RENEW_DEADLINE_SECONDS")]
    lease_renew_deadline_seconds: u64,
    /// Seconds between two tries to acquire or renew the Lease.
    #[arg(long, default_value_t = 2, env = "LOCKSTEP_LEASE_RETRY_SECONDS")]
    lease_retry_seconds: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "LOCKSTEP_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log level or filter (e.g. info, debug, lockstep=trace).
    #[arg(long, default_value = "info", env = "LOCKSTEP_LOG_LEVEL")]
    log_level: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", lockstep::api::crds_yaml()?);
            Ok(())
        }
        Command::Version => {
            println!("lockstep {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

/// Targets whose trace-level events can carry request or response bodies: the AWS SDK logs
/// SecretString at trace when `LOG_SENSITIVE_BODIES=true` is in the environment, and the HTTP and
/// Kubernetes client stacks log what they send and receive. Their trace events are dropped whatever
/// `--log-level` asks (their debug events stay), so no log level shows a secret value.
const BODY_LOGGERS: &[&str] =
    &["aws_smithy", "aws_sigv4", "aws_sdk", "aws_config", "hyper", "h2", "kube_client", "tower_http", "rustls"];

fn init_tracing(args: &RunArgs) -> anyhow::Result<()> {
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("--log-level {:?} is not a valid filter", args.log_level))?;
    let no_bodies = filter_fn(|meta| {
        *meta.level() != tracing::Level::TRACE || !BODY_LOGGERS.iter().any(|t| meta.target().starts_with(t))
    });
    let filter = filter.and(no_bodies);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    match args.log_format {
        LogFormat::Text => tracing_subscriber::registry().with(layer.with_filter(filter)).init(),
        LogFormat::Json => tracing_subscriber::registry().with(layer.json().with_filter(filter)).init(),
    }
    Ok(())
}

/// What a panic shows: where it happened and, when the message is a literal of the code, the
/// message. A formatted message (a `String` payload) is withheld: it could have been built from a
/// value. Release builds abort after this (`panic = "abort"`).
fn describe_panic(payload: &(dyn std::any::Any + Send), location: Option<&std::panic::Location<'_>>) -> String {
    let at = location.map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
    match payload.downcast_ref::<&'static str>() {
        Some(literal) => format!("panicked{at}: {literal}"),
        None => format!("panicked{at} (message withheld: it may hold a secret value)"),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(&args)?;
    std::panic::set_hook(Box::new(|info| tracing::error!("{}", describe_panic(info.payload(), info.location()))));
    let client =
        Client::try_default().await.context("cannot build a Kubernetes client (KUBECONFIG or in-cluster config)")?;
    check_crds(&client, args.namespace.as_deref()).await?;

    let metrics = Arc::new(Metrics::default());
    let elector = match args.leader_elect {
        true => Some(Elector::new(client.clone(), lease_config(&args)?)),
        false => None,
    };
    let readiness = Arc::new(Readiness::new(if elector.is_some() { Role::Unknown } else { Role::Leader }));
    let (ctx, wiring) = Context::new(
        client,
        metrics.clone(),
        readiness.clone(),
        args.namespace.clone(),
        Duration::from_secs(args.restart_debounce_seconds),
        controller::AwsRate { qps: args.aws_qps, burst: args.aws_burst },
    );
    let ctx = Arc::new(ctx);
    metrics.set_leader(elector.is_none());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let admin = lockstep::admin::serve(
        args.metrics_addr,
        lockstep::admin::AdminState { metrics: metrics.clone(), ready: readiness.clone() },
        stopped(),
    );
    info!(addr = %args.metrics_addr, namespace = args.namespace.as_deref().unwrap_or("<all>"), "starting");

    // Followers only wait: the controllers start once this process leads, and never stop leading
    // while the process lives (a lost Lease ends the process).
    let controllers = {
        let ctx = ctx.clone();
        let mut role = elector.as_ref().map(Elector::role);
        let stop = stopped();
        let stopped = stopped.clone();
        async move {
            if let Some(role) = role.as_mut() {
                tokio::select! {
                    r = role.wait_for(|r| *r == Role::Leader) => if r.is_err() { return },
                    () = stop => return,
                }
            }
            controller::run(ctx, wiring, args.concurrency, stopped).await;
        }
    };
    let election = async {
        let Some(elector) = &elector else { return Ok(()) };
        let mut role = elector.role();
        let publish = async {
            loop {
                let r = *role.borrow_and_update();
                readiness.set_role(r);
                metrics.set_leader(r == Role::Leader);
                if role.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            r = elector.run(stopped()) => r,
            () = publish => Ok(()),
        }
    };
    let (admin_res, (), ()) = tokio::join!(admin, controllers, async {
        // A lost Lease ends the process at once (non-zero), before another write can happen.
        if let Err(e) = election.await {
            tracing::error!(error = %e, "leadership lost, exiting");
            std::process::exit(1);
        }
    });
    if let Some(elector) = &elector
        && let Err(e) = elector.release().await
    {
        tracing::warn!(error = %e, "cannot release the leader Lease; a follower takes over when it expires");
    }
    admin_res.context("admin server failed")?;
    Ok(())
}

fn lease_config(args: &RunArgs) -> anyhow::Result<leader::Config> {
    if !(args.lease_retry_seconds < args.lease_renew_deadline_seconds
        && args.lease_renew_deadline_seconds < args.lease_duration_seconds)
    {
        bail!(
            "leader election needs --lease-retry-seconds < --lease-renew-deadline-seconds < --lease-duration-seconds \
             (a leader must give up before others may take over)"
        );
    }
    let namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()))
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| "default".into());
    Ok(leader::Config {
        name: args.lease_name.clone(),
        namespace,
        identity: leader::identity(),
        lease_duration: Duration::from_secs(args.lease_duration_seconds),
        renew_deadline: Duration::from_secs(args.lease_renew_deadline_seconds),
        retry: Duration::from_secs(args.lease_retry_seconds),
    })
}

async fn check_crds(client: &Client, namespace: Option<&str>) -> anyhow::Result<()> {
    let api: Api<ExternalSecret> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            bail!(
                "the Lockstep CRDs are not installed (externalsecrets.lockstep.dev not found): run `kubectl apply --server-side -f crds/`"
            )
        }
        Err(e) => Err(e).context("cannot list ExternalSecrets: check the kubeconfig and RBAC"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
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
        assert!(!shown.contains("SENTINEL") && shown.contains("withheld") && shown.contains("main.rs"), "{shown}");
    }
}
