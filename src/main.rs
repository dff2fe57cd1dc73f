//! `lockstep`: run the controller, print the CRDs, or print the version.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use kube::api::ListParams;
use kube::{Api, Client};
use lockstep::api::ExternalSecret;
use lockstep::controller::{self, Context};
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

fn init_tracing(args: &RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("--log-level {:?} is not a valid filter", args.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(&args)?;
    let client =
        Client::try_default().await.context("cannot build a Kubernetes client (KUBECONFIG or in-cluster config)")?;
    check_crds(&client, args.namespace.as_deref()).await?;

    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context::new(
        client,
        metrics.clone(),
        args.namespace.clone(),
        std::time::Duration::from_secs(args.restart_debounce_seconds),
        (args.aws_qps, args.aws_burst),
    ));
    let ready = Arc::new(AtomicBool::new(false));
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
        lockstep::admin::AdminState { metrics, ready: ready.clone() },
        stopped(),
    );
    info!(addr = %args.metrics_addr, namespace = args.namespace.as_deref().unwrap_or("<all>"), "starting");
    ready.store(true, Ordering::Relaxed);

    let cluster_stores = {
        let ctx = ctx.clone();
        let stop = stopped();
        async move {
            if ctx.namespace.is_none() {
                controller::run_cluster_stores(ctx, stop).await;
            }
        }
    };
    let (admin_res, (), (), ()) = tokio::join!(
        admin,
        controller::run_external_secrets(ctx.clone(), args.concurrency, stopped()),
        controller::run_stores(ctx.clone(), stopped()),
        cluster_stores,
    );
    admin_res.context("admin server failed")?;
    Ok(())
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
