//! `lockstep`: run the controller, print the CRDs or the version, and the commands for people
//! (`status`, `refresh`, `template`). Named `kubectl-lockstep` it is a kubectl plugin.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use futures::FutureExt;
use kube::api::ListParams;
use kube::{Api, Client};
use lockstep::admin::{self, AdminState, Readiness};
use lockstep::api::ExternalSecret;
use lockstep::cli::{self, Cluster};
use lockstep::controller::{self, Context};
use lockstep::leader::{self, Elector, Role};
use lockstep::metrics::Metrics;
use lockstep::telemetry;
use tracing::info;

/// jemalloc, not glibc malloc: a cold start allocates and frees response buffers and watch events
/// among the objects it keeps, and glibc's heap kept the holes (at 10,000 ExternalSecrets 130 MiB
/// resident for 60 MiB live; with jemalloc 80 MiB, and less at 1,000 too: BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// ExternalSecrets with their store, Ready reason, last sync and AWS versions; for a
    /// not-Ready one the message and the fix. Exit 3 when one is not Ready.
    Status {
        #[command(flatten)]
        cluster: Cluster,
        #[command(flatten)]
        args: cli::status::Args,
    },
    /// Sync again (fetching afresh) the ExternalSecret NAME, or every one using --store or
    /// reading --aws-secret. Exit 3 when none matched.
    Refresh {
        #[command(flatten)]
        cluster: Cluster,
        #[command(flatten)]
        args: cli::refresh::Args,
    },
    /// Render the Secret an ExternalSecret would write, offline, from a values file. Values are
    /// masked unless --show-values. Exit 3 when the operator would refuse the spec.
    Template(cli::template::Args),
    /// Convert ESO (external-secrets.io) manifests to Lockstep's: files, directories, or stdin.
    Convert(ConvertArgs),
}

#[derive(Parser)]
struct ConvertArgs {
    /// YAML files or directories of them (`-` or nothing: stdin).
    #[arg(short = 'f', long = "filename")]
    files: Vec<std::path::PathBuf>,
    /// Write what converts and exit 0 even when some objects cannot be converted.
    #[arg(long)]
    allow_partial: bool,
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

impl From<LogFormat> for telemetry::Format {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
}

/// One thread: the operator waits on the apiserver and AWS far more than it computes (under a fifth
/// of a core in a cold start of 10,000 ExternalSecrets), and on a multi-thread runtime every
/// response, read on a worker, woke the controllers' thread with a futex call: steady-state CPU
/// per ExternalSecret at 10,000 went from 9.3 to 7.7 ms an hour.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<ExitCode> {
    match parse().command {
        Command::Crd => print!("{}", lockstep::api::crds_yaml()?),
        Command::Version => println!("lockstep {}", env!("CARGO_PKG_VERSION")),
        Command::Run(args) => run(args).await?,
        Command::Convert(args) => convert(args)?,
        Command::Status { cluster, args } => {
            return Ok(people(async {
                let (client, ns) = cluster.connect().await?;
                cli::status::run(client, &ns, &args, &mut std::io::stdout()).await
            })
            .await);
        }
        Command::Refresh { cluster, args } => {
            return Ok(people(async {
                let (client, ns) = cluster.connect().await?;
                cli::refresh::run(client, &ns, &args, &mut std::io::stdout()).await
            })
            .await);
        }
        Command::Template(args) => {
            return Ok(
                people(async { cli::template::run(&args, &mut std::io::stdout(), &mut std::io::stderr()) }).await
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The flags; as `kubectl-lockstep` (a kubectl plugin) usage says `kubectl lockstep`.
fn parse() -> Cli {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let plugin = std::path::Path::new(&argv0).file_name().is_some_and(|n| n.to_string_lossy().starts_with("kubectl-"));
    let command = if plugin { Cli::command().bin_name("kubectl lockstep") } else { Cli::command() };
    Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

/// A command for people: its exit code, or its error on stderr and [`cli::EXIT_FAILED`].
async fn people(command: impl Future<Output = Result<u8, cli::CliError>>) -> ExitCode {
    match command.await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Run until SIGTERM or Ctrl-C, or until this process loses the leader Lease: then it returns an
/// error at once, so the process exits non-zero before another write can happen.
async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(&args.log_level, args.log_format.into())?;
    const NO_CLIENT: &str = "cannot build a Kubernetes client (KUBECONFIG or in-cluster config)";
    let config = kube::Config::infer().await.context(NO_CLIENT)?;
    let client = Client::try_from(lockstep::with_user_agent(config)).context(NO_CLIENT)?;
    check_crds(&client, args.namespace.as_deref()).await?;
    let elector = match args.leader_elect {
        true => Some(Elector::new(client.clone(), lease_config(&args)?)),
        false => None,
    };
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::new(Role::Unknown));
    let (ctx, wiring) = Context::new(
        client,
        metrics.clone(),
        readiness.clone(),
        args.namespace.clone(),
        Duration::from_secs(args.restart_debounce_seconds),
        controller::AwsRate { qps: args.aws_qps, burst: args.aws_burst },
    );
    let ctx = Arc::new(ctx);
    let stop = shutdown_signal().boxed().shared();
    info!(addr = %args.metrics_addr, namespace = args.namespace.as_deref().unwrap_or("<all>"), "starting");

    let admin = async {
        let state = AdminState { metrics: metrics.clone(), ready: readiness.clone() };
        admin::serve(args.metrics_addr, state, stop.clone()).await.context("admin server failed")
    };
    let controllers = async {
        let work = controller::run(ctx, wiring, args.concurrency, stop.clone());
        let gated = leader::gate(elector.as_ref(), &readiness, &metrics, work, stop.clone()).await;
        gated.inspect_err(|e| tracing::error!(error = %e, "leadership lost, exiting")).map_err(anyhow::Error::from)
    };
    tokio::try_join!(admin, controllers)?;
    Ok(())
}

/// `lockstep convert`: converted YAML on stdout, a warning per object left out on stderr; exit 1
/// when something was left out, unless `--allow-partial`.
fn convert(args: ConvertArgs) -> anyhow::Result<()> {
    use std::io::Read;
    let mut texts = Vec::new();
    let stdin = args.files.is_empty() || args.files.iter().any(|f| f.as_os_str() == "-");
    if stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read stdin")?;
        texts.push(("<stdin>".to_string(), text));
    }
    for path in args.files.iter().filter(|f| f.as_os_str() != "-") {
        let mut paths = vec![path.clone()];
        if path.is_dir() {
            paths = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            paths.sort();
        }
        for p in paths {
            let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
            texts.push((p.display().to_string(), text));
        }
    }
    let mut docs = Vec::new();
    for (name, text) in &texts {
        docs.extend(lockstep::convert::documents(text).with_context(|| format!("{name} is not YAML"))?);
    }
    let out = lockstep::convert::convert(docs);
    print!("{}", lockstep::convert::to_yaml(&out.objects)?);
    for n in &out.notes {
        eprintln!("note: {n}; left out");
    }
    for w in &out.warnings {
        eprintln!("warning: {w}; not converted");
    }
    if !out.warnings.is_empty() && !args.allow_partial {
        let objects: std::collections::BTreeSet<&str> = out.warnings.iter().map(|w| w.object.as_str()).collect();
        bail!("{} object(s) could not be converted (--allow-partial writes the rest with exit 0)", objects.len());
    }
    Ok(())
}

fn lease_config(args: &RunArgs) -> anyhow::Result<leader::Config> {
    let namespace =
        args.lease_namespace.clone().unwrap_or_else(|| leader::default_namespace(args.namespace.as_deref()));
    let seconds = Duration::from_secs;
    leader::Config::new(
        args.lease_name.clone(),
        namespace,
        leader::identity(),
        seconds(args.lease_duration_seconds),
        seconds(args.lease_renew_deadline_seconds),
        seconds(args.lease_retry_seconds),
    )
    .context("check --lease-retry-seconds, --lease-renew-deadline-seconds and --lease-duration-seconds")
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

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    wait_for_signal().await;
    info!("shutting down");
}

async fn wait_for_signal() {
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
