//! The benchmark (`make bench`): N ExternalSecrets over M AWS secrets (some shared) against the rig
//! (kube-apiserver + etcd, moto). One run measures cold start, AWS calls at steady state beside the
//! naive baseline (one GetSecretValue per ExternalSecret per interval, what ESO does), rotation
//! propagation, and the operator's memory and CPU; `--bench` runs print a table and write it into
//! BENCHMARKS.md. Under `cargo test` it runs a tiny configuration as a smoke test and writes nothing.
//!
//! Flags: `--es N` (1000), `--secrets M` (N * 4 / 5), `--refresh SECONDS` (60), `--rotations K` (50),
//! `--no-write`, `--events`, `--peer eso`. Under `cargo bench` the operator is the release build of
//! `lockstep`.
//!
//! `--peer eso` measures External Secrets Operator the same way instead of the naive baseline, after
//! Lockstep: its own moto, namespace, CRDs (`external-secrets.io`, conversion stripped: no webhook
//! runs) and the same secrets, store and ExternalSecrets in its API, with the same functions
//! (cold start, steady calls, rotation, `/proc` usage). ESO comes from `.tools/eso/`
//! (`tests/support/tools.sh eso`, which `make bench ARGS='--peer eso'` runs); the table gets an ESO
//! column and ESO ÷ Lockstep ratios.
//!
//! `--events` adds a phase after the polling one, on the same operator and secrets: the store reads
//! an SQS queue that moto's EventBridge feeds (rule from examples/terraform/event-pattern.json),
//! every ExternalSecret goes to `refreshInterval: 1h`, and K rotations (each followed by its
//! CloudTrail-shaped event) are timed the same way; calls per hour count SQS too.
//!
//! `--soak SECONDS` (`make soak`: 600) instead keeps rotating one secret every `--rotate-every`
//! seconds (3) after the cold start, then checks that every Secret holds its latest value, and
//! reports memory at start and end, errors, and AWS calls per hour.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use lockstep_rig::manifests::{creds, es, secret_store};
use lockstep_rig::{Emulator, Operator, Rig, TestEnv, free_addr, install_crds};
use serde::Deserialize as _;
use serde_json::{Value, json};

/// The operator binary of this build (the release build under `cargo bench`).
const LOCKSTEP: &str = env!("CARGO_BIN_EXE_lockstep");

/// What AWS calls a secret's rotation-free steady state is extrapolated with.
const CHANGES_PER_HOUR: f64 = 0.01;

/// The API version of ESO's ExternalSecret and SecretStore that the benchmark writes (ESO v0.16.2
/// serves `v1` and `v1beta1`, and stores `v1`).
const ESO_API_VERSION: &str = "external-secrets.io/v1";

/// An operator the benchmark measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subject {
    Lockstep,
    /// External Secrets Operator, built into `.tools/eso/` by `tests/support/tools.sh eso`.
    Eso,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Lockstep => "Lockstep",
            Subject::Eso => "ESO",
        }
    }

    /// Its ExternalSecrets in `ns`.
    fn external_secrets(self, kube: &Client, ns: &str) -> Api<DynamicObject> {
        let (group, version) = match self {
            Subject::Lockstep => ("lockstep.dev", "v1alpha1"),
            Subject::Eso => ("external-secrets.io", "v1"),
        };
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, "ExternalSecret"));
        Api::namespaced_with(kube.clone(), ns, &resource)
    }

    /// The label selector of the Secrets it writes.
    fn managed_label(self) -> String {
        match self {
            Subject::Lockstep => format!("{}={}", lockstep::MANAGED_BY_LABEL, lockstep::MANAGER),
            Subject::Eso => String::from("reconcile.external-secrets.io/managed=true"),
        }
    }

    /// A manifest of the rig's builders (Lockstep's API, whose fields are ESO's) for this operator:
    /// ESO's group, and no `endpoint` in an ESO store (ESO v0.16.2 has no such field; it takes the
    /// endpoint from its environment, see [`Subject::start`]).
    fn own(self, mut manifest: Value) -> Value {
        if self == Subject::Eso {
            manifest["apiVersion"] = json!(ESO_API_VERSION);
            if let Some(aws) = manifest.pointer_mut("/spec/provider/aws").and_then(Value::as_object_mut) {
                aws.remove("endpoint");
            }
        }
        manifest
    }

    /// Its CRDs, established.
    async fn install_crds(self, kube: &Client) -> anyhow::Result<()> {
        match self {
            Subject::Lockstep => install_crds(kube, &lockstep::api::crds()).await,
            Subject::Eso => install_crds(kube, &eso_crds(&EsoBuild::find()?.crds)?).await,
        }
    }

    /// Start it, watching `ns`, against the emulator at `endpoint`.
    fn start(self, ns: &str, endpoint: &str) -> anyhow::Result<Operator> {
        match self {
            // At its default log level, as ESO runs at its own (the rig's tests run at debug).
            Subject::Lockstep => {
                let args = ["--namespace", ns, "--log-level", "info"];
                Operator::start(LOCKSTEP, &Rig::get().kubeconfig, &args, &[])
            }
            Subject::Eso => {
                let build = EsoBuild::find()?;
                let metrics = free_addr()?;
                let metrics_flag = format!("--metrics-addr={metrics}");
                let namespace_flag = format!("--namespace={ns}");
                // Lockstep's concurrency; the Kubernetes client keeps ESO's defaults (--client-qps 50,
                // --client-burst 100), which bound its cold start.
                let args = [
                    metrics_flag.as_str(),
                    namespace_flag.as_str(),
                    "--concurrent=16",
                    "--enable-leader-election=false",
                    "--loglevel=info",
                ];
                // Every endpoint ESO's AWS provider reads from its environment (pkg/provider/aws/auth:
                // AWS_SECRETSMANAGER_ENDPOINT, AWS_STS_ENDPOINT, AWS_SSM_ENDPOINT), and the SDKs'
                // own, so that nothing can reach a real AWS endpoint.
                let env = [
                    ("AWS_SECRETSMANAGER_ENDPOINT", endpoint),
                    ("AWS_STS_ENDPOINT", endpoint),
                    ("AWS_SSM_ENDPOINT", endpoint),
                    ("AWS_ENDPOINT_URL", endpoint),
                    ("AWS_REGION", "us-east-1"),
                    ("AWS_DEFAULT_REGION", "us-east-1"),
                    ("AWS_EC2_METADATA_DISABLED", "true"),
                ];
                Operator::command(&build.exe, &Rig::get().kubeconfig, &args, &env, &metrics)
            }
        }
    }
}

/// The ESO that `tests/support/tools.sh eso` built: `.tools/eso` links to `eso-<version>/`.
struct EsoBuild {
    exe: PathBuf,
    crds: PathBuf,
    version: String,
}

impl EsoBuild {
    fn find() -> anyhow::Result<EsoBuild> {
        let link = lockstep_rig::tools_dir().join("eso");
        let target = std::fs::read_link(&link).with_context(|| {
            format!(
                "no ESO build at {}: `make bench ARGS='--peer eso'` builds it (tests/support/tools.sh eso)",
                link.display()
            )
        })?;
        let dir = link.with_file_name(&target);
        let version = target.to_string_lossy().trim_start_matches("eso-").to_string();
        let build = EsoBuild { exe: dir.join("external-secrets"), crds: dir.join("crds.yaml"), version };
        anyhow::ensure!(build.exe.exists() && build.crds.exists(), "incomplete ESO build in {}", dir.display());
        Ok(build)
    }
}

/// The CRDs of ESO's bundle, each without `spec.conversion`: no conversion webhook runs, and every
/// object the benchmark writes is of the stored version.
fn eso_crds(path: &std::path::Path) -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut crds = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let mut crd: CustomResourceDefinition = serde_yaml::from_value(value)?;
        crd.spec.conversion = None;
        crds.push(crd);
    }
    Ok(crds)
}

struct Args {
    es: usize,
    secrets: usize,
    refresh: u64,
    rotations: usize,
    soak: u64,
    rotate_every: f64,
    /// Also measure refresh from AWS events (refreshInterval 1 h, an SQS queue fed by EventBridge).
    events: bool,
    /// Measure this operator beside Lockstep instead of the naive baseline.
    peer: Option<Subject>,
    write: bool,
    command: String,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let bench = argv.iter().any(|a| a == "--bench");
        // Under `cargo test`: a configuration small enough for CI, that only proves the harness works.
        let mut a = Args {
            es: 1000,
            secrets: 0,
            refresh: 60,
            rotations: 50,
            soak: 0,
            rotate_every: 3.0,
            events: false,
            peer: None,
            write: true,
            command: String::from("make bench"),
        };
        if !bench {
            (a.es, a.secrets, a.refresh, a.rotations, a.write) = (20, 16, 2, 4, false);
            a.command = String::from("cargo test --bench harness");
        }
        let mut it = argv.iter();
        let mut shown = Vec::new();
        while let Some(flag) = it.next() {
            let takes_value = matches!(
                flag.as_str(),
                "--es" | "--secrets" | "--refresh" | "--rotations" | "--soak" | "--rotate-every" | "--peer"
            );
            let value = match takes_value {
                true => it.next().with_context(|| format!("{flag} needs a value"))?.clone(),
                false => String::new(),
            };
            match flag.as_str() {
                "--es" => a.es = value.parse()?,
                "--secrets" => a.secrets = value.parse()?,
                "--refresh" => a.refresh = value.parse()?,
                "--rotations" => a.rotations = value.parse()?,
                "--soak" => a.soak = value.parse()?,
                "--rotate-every" => a.rotate_every = value.parse()?,
                "--no-write" => a.write = false,
                "--events" => a.events = true,
                "--peer" => {
                    a.peer = match value.as_str() {
                        "eso" => Some(Subject::Eso),
                        other => bail!("unknown peer {other:?} (known: eso)"),
                    }
                }
                "--bench" => {}
                other if other.starts_with("--") => bail!("unknown flag {other}"),
                _ => {} // a test-name filter from cargo
            }
            if flag == "--events" {
                shown.push(flag.clone());
            } else if flag.starts_with("--") && !matches!(flag.as_str(), "--bench" | "--no-write") {
                shown.extend([flag.clone(), value]);
            }
        }
        if a.secrets == 0 {
            a.secrets = (a.es * 4 / 5).max(1);
        }
        anyhow::ensure!(a.es > 0 && a.secrets <= a.es && a.refresh > 0, "need 0 < --secrets <= --es and --refresh > 0");
        anyhow::ensure!(a.soak == 0 || a.peer.is_none(), "--soak measures Lockstep only: no --peer");
        a.rotations = a.rotations.clamp(1, a.secrets);
        if a.soak > 0 {
            a.command = String::from("make soak");
            shown.retain(|f| f != "--soak" && *f != a.soak.to_string());
        }
        if !shown.is_empty() {
            let _ = write!(a.command, " ARGS='{}'", shown.join(" "));
        }
        Ok(a)
    }
}

/// The operator's resource use, from /proc.
#[derive(Clone, Copy, Default)]
struct Usage {
    rss_mib: f64,
    peak_rss_mib: f64,
    /// Of `rss_mib`: the file-backed part (the binary's code and data mapped from its file).
    file_rss_mib: f64,
    cpu_seconds: f64,
}

fn usage(pid: u32) -> anyhow::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no {field} in /proc/{pid}/status"))
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).with_context(|| format!("no command name in {stat:?}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields.get(i).and_then(|v| v.parse::<f64>().ok()).with_context(|| format!("no field {i} in {stat:?}"))
    };
    Ok(Usage {
        rss_mib: kib("VmRSS:")? / 1024.0,
        peak_rss_mib: kib("VmHWM:")? / 1024.0,
        file_rss_mib: kib("RssFile:")? / 1024.0,
        cpu_seconds: (ticks(11)? + ticks(12)?) / clock_ticks(),
    })
}

/// What a phase cost the whole rig: CPU seconds of the operator, the control plane (kube-apiserver
/// with etcd embedded, one process) and the emulator, and the requests the apiserver served
/// (`apiserver_request_total` without WATCH; the harness's own few list/watch calls included), in
/// all and by verb and resource.
#[derive(Clone, Default)]
struct Meter {
    operator: f64,
    control_plane: f64,
    emulator: f64,
    requests: f64,
    /// `VERB resource[/subresource]` to requests.
    by: BTreeMap<String, f64>,
    /// Where the rig's audit log (`LOCKSTEP_RIG_AUDIT=1`, as `make bench` runs) ended when read;
    /// after [`Meter::since`], the requests in between by who made them (see [`client_of`]).
    audit_end: u64,
    clients: Option<BTreeMap<&'static str, f64>>,
}

/// The rig's audit log, when it writes one.
fn audit_log() -> Option<std::path::PathBuf> {
    Some(Rig::get().dir.join("audit.log")).filter(|p| p.exists())
}

/// Who made a request, by its User-Agent: the measured operator (Lockstep's `lockstep/<version>`,
/// ESO's `external-secrets/...`), the rig's kube-controller-manager (garbage collection GETs the
/// owner of every new owned Secret), the apiserver itself, or the rest (the harness).
fn client_of(user_agent: &str) -> &'static str {
    if user_agent.starts_with("lockstep/") || user_agent.starts_with("external-secrets") {
        "operator"
    } else if user_agent.starts_with("kube-controller-manager") {
        "controller-manager"
    } else if user_agent.starts_with("kube-apiserver") {
        "apiserver"
    } else {
        "harness"
    }
}

/// The completed non-watch requests in the audit log between byte offsets `from` and `to`, by
/// [`client_of`].
fn audit_clients(from: u64, to: u64) -> anyhow::Result<Option<BTreeMap<&'static str, f64>>> {
    use std::io::{BufRead, Seek};
    let Some(path) = audit_log() else { return Ok(None) };
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(from))?;
    let mut by = BTreeMap::new();
    let mut at = from;
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        at += line.len() as u64 + 1;
        if at > to {
            break;
        }
        let Ok(entry) = serde_json::from_str::<Value>(&line) else { continue };
        if entry["stage"] != "ResponseComplete" || entry["verb"] == "watch" {
            continue;
        }
        *by.entry(client_of(entry["userAgent"].as_str().unwrap_or_default())).or_default() += 1.0;
    }
    Ok(Some(by))
}

impl Meter {
    /// Read now; `operator` is None before it starts.
    async fn read(kube: &Client, emu: &Emulator, operator: Option<u32>) -> anyhow::Result<Meter> {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        let metrics = lockstep_rig::http::Metrics::parse(kube.request_text(request).await?);
        let mut by = BTreeMap::<String, f64>::new();
        for s in metrics.samples("apiserver_request_total", &[]) {
            let label = |k: &str| s.labels.get(k).map(String::as_str).unwrap_or_default();
            if label("verb") == "WATCH" {
                continue;
            }
            let sub = match label("subresource") {
                "" => String::new(),
                sub => format!("/{sub}"),
            };
            *by.entry(format!("{} {}{sub}", label("verb"), label("resource"))).or_default() += s.value;
        }
        let requests = by.values().sum();
        let audit_end = match audit_log() {
            Some(path) => std::fs::metadata(path)?.len(),
            None => 0,
        };
        Ok(Meter {
            operator: match operator {
                Some(pid) => usage(pid)?.cpu_seconds,
                None => 0.0,
            },
            control_plane: usage(Rig::get().control_plane_pid())?.cpu_seconds,
            emulator: usage(emu.pid())?.cpu_seconds,
            requests,
            by,
            audit_end,
            clients: None,
        })
    }

    fn since(&self, before: &Meter) -> anyhow::Result<Meter> {
        Ok(Meter {
            operator: self.operator - before.operator,
            control_plane: self.control_plane - before.control_plane,
            emulator: self.emulator - before.emulator,
            requests: self.requests - before.requests,
            by: self
                .by
                .iter()
                .map(|(k, v)| (k.clone(), v - before.by.get(k).copied().unwrap_or_default()))
                .filter(|(_, v)| *v > 0.0)
                .collect(),
            audit_end: self.audit_end,
            clients: audit_clients(before.audit_end, self.audit_end)?,
        })
    }

    /// The measured operator's own requests (from the audit log), else every request.
    fn operator_requests(&self) -> f64 {
        match &self.clients {
            Some(by) => by.get("operator").copied().unwrap_or_default(),
            None => self.requests,
        }
    }

    /// "operator N, controller-manager N, ..." from the audit log, or nothing without one.
    fn by_client(&self) -> String {
        match &self.clients {
            Some(by) => {
                let shown: Vec<String> = by.iter().map(|(k, v)| format!("{k} {v:.0}")).collect();
                format!("; by client: {}", shown.join(", "))
            }
            None => String::new(),
        }
    }

    /// The requests by verb and resource, most first (the first `n`).
    fn top(&self, n: usize) -> String {
        let mut by: Vec<(&String, &f64)> = self.by.iter().collect();
        by.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
        let shown: Vec<String> = by.iter().take(n).map(|(k, v)| format!("{k} {v:.0}")).collect();
        shown.join(", ")
    }
}

/// Clock ticks per second (100, the Linux default, where `getconf` cannot say).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The calls the operator made: the recorder also sees the harness's own writes.
fn operator_calls(mut calls: BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    calls.retain(|op, _| {
        !matches!(
            op.as_str(),
            "CreateSecret" | "PutSecretValue" | "PutEvents" | "PutRule" | "PutTargets" | "CreateQueue"
        )
    });
    calls
}

fn total(calls: &BTreeMap<String, usize>) -> usize {
    calls.values().sum()
}

fn show(calls: &BTreeMap<String, usize>) -> String {
    if calls.is_empty() {
        return "none".into();
    }
    calls.iter().map(|(op, n)| format!("{op} {n}")).collect::<Vec<_>>().join(", ")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn value_of(name: &str, generation: u32) -> String {
    json!({"password": format!("{name}-v{generation}")}).to_string()
}

/// Wait until `n` ExternalSecrets report Ready (SecretSynced); returns when that happened. Watches
/// rather than lists, so the harness does not load the apiserver it measures against.
async fn all_ready(api: &Api<DynamicObject>, n: usize, timeout: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    let mut ready = std::collections::HashSet::new();
    let mut stream =
        std::pin::pin!(watcher::watcher(api.clone(), watcher::Config::default()).default_backoff().applied_objects());
    let mut shown = 0;
    while ready.len() < n {
        let next = tokio::time::timeout_at(deadline.into(), stream.next()).await;
        let es = match next {
            Ok(Some(Ok(es))) => es,
            Ok(Some(Err(_))) => continue,
            Ok(None) | Err(_) => bail!("only {} of {n} ExternalSecrets Ready after {timeout:?}", ready.len()),
        };
        // Lockstep's and ESO's condition alike.
        let conditions = es.data.pointer("/status/conditions").and_then(Value::as_array);
        let is_ready = conditions.is_some_and(|cs| {
            cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True" && c["reason"] == "SecretSynced")
        });
        if is_ready {
            ready.insert(es.name_any());
        }
        if n >= 5000 && ready.len() >= shown + 1000 {
            shown = ready.len();
            println!("bench: {shown} of {n} Ready");
        }
    }
    Ok(Instant::now())
}

/// What measuring one operator found.
struct Measured {
    cold_start: Duration,
    cold_calls: BTreeMap<String, usize>,
    window: Duration,
    steady_calls: BTreeMap<String, usize>,
    rotated: Rotated,
    /// Read after the rotations.
    usage: Usage,
    idle_rss_mib: f64,
    /// What the cold start, the steady window and the rotations cost the rig.
    cold_meter: Meter,
    steady_meter: Meter,
    rotation_meter: Meter,
}

/// Value fetches among `calls`.
fn fetches(calls: &BTreeMap<String, usize>) -> usize {
    calls.get("GetSecretValue").copied().unwrap_or(0) + calls.get("BatchGetSecretValue").copied().unwrap_or(0)
}

impl Measured {
    fn steady_per_hour(&self) -> f64 {
        total(&self.steady_calls) as f64 * 3600.0 / self.window.as_secs_f64()
    }

    /// Value fetches one rotation cost beyond those the steady state makes anyway in as long (none
    /// for Lockstep; an operator that fetches every value at every refresh pays nothing more).
    fn per_change(&self, args: &Args) -> f64 {
        let steady_rate = fetches(&self.steady_calls) as f64 / self.window.as_secs_f64();
        let extra = fetches(&self.rotated.calls) as f64 - steady_rate * self.rotated.window.as_secs_f64();
        extra.max(0.0) / args.rotations as f64
    }

    /// Calls per hour at steady state with 1% of the secrets changing per hour.
    fn per_hour(&self, args: &Args) -> f64 {
        self.steady_per_hour() + CHANGES_PER_HOUR * args.secrets as f64 * self.per_change(args)
    }

    fn p50_p99(&self) -> (Duration, Duration) {
        (percentile(&self.rotated.propagation, 50.0), percentile(&self.rotated.propagation, 99.0))
    }

    fn steady_rss_mib(&self) -> f64 {
        self.usage.rss_mib.max(self.idle_rss_mib)
    }

    /// The CPU split and apiserver requests, one list item per phase.
    fn cpu_split(&self, s: &mut String, who: &str) {
        let phases = [
            (format!("cold start ({:.1} s)", self.cold_start.as_secs_f64()), &self.cold_meter),
            (format!("steady state ({:.0} s)", self.window.as_secs_f64()), &self.steady_meter),
            (format!("rotations ({:.0} s)", self.rotated.window.as_secs_f64()), &self.rotation_meter),
        ];
        for (phase, m) in phases {
            let _ = writeln!(
                s,
                "- {who}{phase}: operator {:.1}, control plane {:.1}, emulator {:.1}; {:.0} apiserver requests ({}){}",
                m.operator,
                m.control_plane,
                m.emulator,
                m.requests,
                m.top(6),
                m.by_client()
            );
        }
    }

    /// What one ExternalSecret costs, each figure the operator's divided by N.
    fn per_es(&self, args: &Args) -> Vec<(&'static str, f64)> {
        let n = args.es as f64;
        let refreshes = (self.window.as_secs_f64() / args.refresh as f64).max(1.0);
        let hour = 3600.0 / self.window.as_secs_f64();
        vec![
            ("peak resident memory, KiB", self.usage.peak_rss_mib * 1024.0 / n),
            ("resident memory at steady state, KiB", self.steady_rss_mib() * 1024.0 / n),
            ("operator CPU in the cold start, ms", self.cold_meter.operator * 1000.0 / n),
            ("operator CPU per hour at steady state, ms", self.steady_meter.operator * hour * 1000.0 / n),
            ("operator's apiserver requests in the cold start", self.cold_meter.operator_requests() / n),
            (
                "operator's apiserver requests per refresh, nothing changed",
                self.steady_meter.operator_requests() / refreshes / n,
            ),
            ("AWS calls in the cold start", total(&self.cold_calls) as f64 / n),
            ("AWS calls per hour at steady state", self.per_hour(args) / n),
        ]
    }

    /// The recorder's counts, one list item per phase.
    fn calls_list(&self, s: &mut String, args: &Args, who: &str) {
        let _ = writeln!(
            s,
            "- {who}cold start ({:.1} s): {} ({} in all)",
            self.cold_start.as_secs_f64(),
            show(&self.cold_calls),
            total(&self.cold_calls)
        );
        let _ = writeln!(
            s,
            "- {who}steady state, no changes ({:.0} s): {}; per hour {:.0}",
            self.window.as_secs_f64(),
            show(&self.steady_calls),
            self.steady_per_hour()
        );
        let _ = writeln!(
            s,
            "- {who}{} rotations spread over one interval ({:.0} s counted): {}; {:.2} value fetches per rotation beyond the steady state's, so {:.0} changes per hour add {:.0}",
            args.rotations,
            self.rotated.window.as_secs_f64(),
            show(&self.rotated.calls),
            self.per_change(args),
            CHANGES_PER_HOUR * args.secrets as f64,
            CHANGES_PER_HOUR * args.secrets as f64 * self.per_change(args)
        );
        if self.rotated.missed > 0 {
            let _ = writeln!(s, "- {who}{} rotated Secrets did not show the new value in time", self.rotated.missed);
        }
    }
}

/// What the table compares Lockstep with.
enum Against {
    /// One GetSecretValue per ExternalSecret per interval, made by the harness itself.
    Naive { window: Duration, calls: BTreeMap<String, usize> },
    /// Another operator, measured the same way as Lockstep.
    Peer { subject: Subject, version: String, measured: Box<Measured> },
}

struct Report {
    args: Args,
    ours: Measured,
    against: Against,
    events: Option<EventsPhase>,
    /// Lockstep's usage at the end of its run, the events phase included.
    whole_run: Usage,
}

/// `peer ÷ ours`, as "124x" or "1.4x".
fn times(peer: f64, ours: f64) -> String {
    let r = peer / ours.max(f64::MIN_POSITIVE);
    if r >= 10.0 { format!("{r:.0}x") } else { format!("{r:.1}x") }
}

/// What K rotations cost and how fast they arrived.
struct Rotated {
    calls: BTreeMap<String, usize>,
    /// How long the calls were counted.
    window: Duration,
    propagation: Vec<Duration>,
    expected: usize,
    seen: usize,
    missed: usize,
}

impl Rotated {
    /// "K rotations reached S of E Secrets; p50 ..s p99 ..s; calls ...", for the progress lines.
    fn summary(&self, rotations: usize) -> String {
        format!(
            "{rotations} rotations reached {} of {} Secrets; p50 {:.2}s p99 {:.2}s; calls {}",
            self.seen,
            self.expected,
            percentile(&self.propagation, 50.0).as_secs_f64(),
            percentile(&self.propagation, 99.0).as_secs_f64(),
            show(&self.calls)
        )
    }
}

/// Rotate K secrets to `generation`, spread over `spread`, calling `announce` with each name after
/// its PutSecretValue; time each Secret built from one (Secrets of `secrets` labelled `label`) from
/// the PutSecretValue to the watch event that shows the new value.
#[allow(clippy::too_many_arguments)]
async fn rotate(
    args: &Args,
    emu: &Emulator,
    names: &[String],
    secrets: &Api<Secret>,
    label: &str,
    spread: Duration,
    generation: u32,
    announce: impl Fn(&str) -> anyhow::Result<()>,
) -> anyhow::Result<Rotated> {
    let (n, m) = (args.es, args.secrets);
    let aws = emu.client();
    let rotated: Vec<usize> = (0..args.rotations).map(|k| k * m / args.rotations).collect();
    let mut expected: HashMap<String, (String, usize)> = HashMap::new();
    for (k, &j) in rotated.iter().enumerate() {
        for i in (j..n).step_by(m) {
            expected.insert(format!("es-{i:05}"), (format!("{}-v{generation}", names[j]), k));
        }
    }
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch_expected = expected.clone();
    let secrets = secrets.clone();
    let cfg = watcher::Config::default().labels(label);
    let watch = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher::watcher(secrets, cfg).applied_objects());
        while let Some(Ok(s)) = stream.next().await {
            let name = s.name_any();
            let Some((want, _)) = watch_expected.get(&name) else { continue };
            let has = s.data.as_ref().and_then(|d| d.get("password")).is_some_and(|v| v.0 == want.as_bytes());
            if has && seen_tx.send((name, Instant::now())).is_err() {
                break;
            }
        }
    });
    emu.start_recording()?;
    let rotation_start = Instant::now();
    let mut put_at = vec![rotation_start; rotated.len()];
    for (k, &j) in rotated.iter().enumerate() {
        let at = rotation_start + spread.mul_f64(k as f64 / rotated.len() as f64);
        tokio::time::sleep_until(at.into()).await;
        aws.put_secret_value().secret_id(&names[j]).secret_string(value_of(&names[j], generation)).send().await?;
        put_at[k] = Instant::now();
        announce(&names[j])?;
    }
    let deadline = Instant::now() + spread * 2 + Duration::from_secs(30);
    let mut seen: HashMap<String, Instant> = HashMap::new();
    while seen.len() < expected.len() {
        match tokio::time::timeout_at(deadline.into(), seen_rx.recv()).await {
            Ok(Some((name, at))) => {
                seen.entry(name).or_insert(at);
            }
            _ => break,
        }
    }
    watch.abort();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = operator_calls(emu.stop_recording()?);
    let window = rotation_start.elapsed();
    let mut propagation: Vec<Duration> = seen
        .iter()
        .filter_map(|(name, at)| expected.get(name).map(|(_, k)| at.saturating_duration_since(put_at[*k])))
        .collect();
    propagation.sort();
    Ok(Rotated {
        calls,
        window,
        propagation,
        expected: expected.len(),
        seen: seen.len(),
        missed: expected.len() - seen.len(),
    })
}

/// The events phase (`--events`).
struct EventsPhase {
    window: Duration,
    steady_calls: BTreeMap<String, usize>,
    rotated: Rotated,
    fallback: Duration,
}

/// The fallback poll interval the events phase runs with (the default).
const EVENTS_FALLBACK: Duration = Duration::from_secs(15 * 60);

/// Switch the store to events and every ExternalSecret to `refreshInterval: 1h`, then measure a
/// quiet minute and K rotations announced by their events.
async fn events_phase(
    args: &Args,
    emu: &Emulator,
    env: &TestEnv,
    es_api: &Api<DynamicObject>,
    names: &[String],
    secrets: &Api<Secret>,
) -> anyhow::Result<EventsPhase> {
    let queue = emu.event_queue(&format!("{}-events", env.ns))?;
    let events = json!({"events": {"queueURL": queue.url, "sqsEndpoint": emu.endpoint}});
    env.store(secret_store("aws", &emu.endpoint).aws(events)).await?;
    let (n, m) = (args.es, args.secrets);
    futures::stream::iter((0..n).map(|i| {
        let api = es_api.clone();
        let key = names[i % m].clone();
        async move {
            let name = format!("es-{i:05}");
            let manifest = es("aws").refresh("1h").property("password", &key, "password").manifest(&name);
            api.patch(&name, &PatchParams::apply("lockstep-bench"), &Patch::Apply(&manifest)).await.map(|_| ())
        }
    }))
    .buffer_unordered(32)
    .try_collect::<Vec<()>>()
    .await?;
    all_ready(es_api, n, Duration::from_secs(600)).await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let window = Duration::from_secs(60);
    emu.start_recording()?;
    tokio::time::sleep(window).await;
    let steady_calls = operator_calls(emu.stop_recording()?);
    println!("bench: events mode, quiet {}s: {}", window.as_secs(), show(&steady_calls));
    let announce = |name: &str| emu.cloudtrail_event("PutSecretValue", name, json!({}));
    let label = Subject::Lockstep.managed_label();
    let rotated = rotate(args, emu, names, secrets, &label, window, 2, announce).await?;
    println!("bench: events mode, {}", rotated.summary(args.rotations));
    Ok(EventsPhase { window, steady_calls, rotated, fallback: EVENTS_FALLBACK })
}

impl EventsPhase {
    /// Calls per hour at 1% churn: the quiet minute's (the long polls) per hour, one fallback poll
    /// per fallback interval (what one polling-mode poll cost), and each change's calls.
    fn per_hour(&self, args: &Args, calls_per_poll: f64) -> f64 {
        let quiet = total(&self.steady_calls) as f64 * 3600.0 / self.window.as_secs_f64();
        let polls = 3600.0 / self.fallback.as_secs_f64() * calls_per_poll;
        let receives = self.rotated.calls.get("ReceiveMessage").copied().unwrap_or(0);
        let per_change = (total(&self.rotated.calls) - receives) as f64 / args.rotations as f64;
        quiet + polls + CHANGES_PER_HOUR * args.secrets as f64 * per_change
    }
}

impl Report {
    fn against_per_hour(&self) -> f64 {
        match &self.against {
            Against::Naive { window, calls } => total(calls) as f64 * 3600.0 / window.as_secs_f64(),
            Against::Peer { measured, .. } => measured.per_hour(&self.args),
        }
    }

    fn markdown(&self) -> String {
        let a = &self.args;
        let ours = &self.ours;
        let ours_per_hour = ours.per_hour(a);
        let against_per_hour = self.against_per_hour();
        let ratio = against_per_hour / ours_per_hour.max(1.0);
        let (p50, p99) = ours.p50_p99();
        let limit = Duration::from_secs(a.refresh + 2);
        let (rss_target, ready_target) = if a.es <= 1000 { (40.0, Some(30.0)) } else { (100.0, None) };
        let verdict = |ok: bool| if ok { "holds" } else { "misses" };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.to_string()))
            .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| "unknown CPU".into());
        let peer = match &self.against {
            Against::Naive { .. } => None,
            Against::Peer { subject, version, measured } => Some((subject.name(), version.as_str(), measured)),
        };
        let column = peer.map_or("naive baseline", |(name, _, _)| name);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "### {} ExternalSecrets over {} AWS secrets, refreshInterval {} s\n",
            a.es, a.secrets, a.refresh
        );
        let build = if LOCKSTEP.contains("/release/") { "release" } else { "debug" };
        let _ = writeln!(
            s,
            "Run {} on {cores} cores ({cpu}), {build} build; command: `{}`.\n",
            jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
            a.command,
        );
        if let Some((name, version, _)) = peer {
            let _ = writeln!(
                s,
                "{name} {version} (`--concurrent=16`, its default Kubernetes client limits `--client-qps=50 --client-burst=100`) ran after Lockstep had stopped, with its own moto and namespace and the same secrets, store and ExternalSecrets in `{ESO_API_VERSION}`; both were measured by the same code. Ratios are {name} ÷ Lockstep.\n"
            );
        }
        let _ = writeln!(s, "| measure | Lockstep | {column} | {column} ÷ Lockstep | target | verdict |");
        let _ = writeln!(s, "|---|---:|---:|---:|---|---|");
        let _ = writeln!(
            s,
            "| AWS calls per hour at steady state (1% of secrets changing per hour) | {ours_per_hour:.0} | {against_per_hour:.0} | {} | at least 50x fewer | {} |",
            times(against_per_hour, ours_per_hour.max(1.0)),
            verdict(ratio >= 50.0)
        );
        let (peer_rotation, peer_rotation_ratio) = match peer {
            Some((_, _, m)) => {
                let (q50, q99) = m.p50_p99();
                (
                    format!("{:.1} s / {:.1} s", q50.as_secs_f64(), q99.as_secs_f64()),
                    format!(
                        "{} / {}",
                        times(q50.as_secs_f64(), p50.as_secs_f64()),
                        times(q99.as_secs_f64(), p99.as_secs_f64())
                    ),
                )
            }
            None => (String::new(), String::new()),
        };
        let _ = writeln!(
            s,
            "| rotation propagation p50 / p99 (PutSecretValue to Secret updated, {} Secrets) | {:.1} s / {:.1} s | {peer_rotation} | {peer_rotation_ratio} | p99 within {} s | {} |",
            ours.rotated.propagation.len(),
            p50.as_secs_f64(),
            p99.as_secs_f64(),
            limit.as_secs(),
            verdict(ours.rotated.missed == 0 && p99 <= limit)
        );
        // A row with Lockstep's value, the peer's and their ratio (blank without a peer).
        let row = |s: &mut String, what: &str, unit: &str, value: &dyn Fn(&Measured) -> f64, target: &str| {
            let v = value(ours);
            let (theirs, ratio) = match peer {
                Some((_, _, m)) => (format!("{:.1}{unit}", value(m)), times(value(m), v)),
                None => (String::new(), String::new()),
            };
            let _ = writeln!(s, "| {what} | {v:.1}{unit} | {theirs} | {ratio} | {target} |");
        };
        let ready_verdict = match ready_target {
            Some(t) => format!("within {t:.0} s | {}", verdict(ours.cold_start.as_secs_f64() <= t)),
            None => String::from("none set | n/a"),
        };
        row(&mut s, "cold start: operator start to all Ready", " s", &|m| m.cold_start.as_secs_f64(), &ready_verdict);
        row(
            &mut s,
            "operator peak resident memory",
            " MiB",
            &|m| m.usage.peak_rss_mib,
            &format!("under {rss_target:.0} MiB | {}", verdict(ours.usage.peak_rss_mib < rss_target)),
        );
        row(&mut s, "operator resident memory at steady state", " MiB", &|m| m.steady_rss_mib(), " |");
        row(
            &mut s,
            "of it mapped from the binary's file (its code; the rest is heap and stacks)",
            " MiB",
            &|m| m.usage.file_rss_mib,
            " |",
        );
        row(&mut s, "operator CPU time: cold start, steady state and rotations", " s", &|m| m.usage.cpu_seconds, " |");
        if let Some(e) = &self.events {
            let polls = (ours.window.as_secs_f64() / a.refresh as f64).max(1.0);
            let per_poll = total(&ours.steady_calls) as f64 / polls;
            let per_hour = e.per_hour(a, per_poll);
            let (p50, p99) = (percentile(&e.rotated.propagation, 50.0), percentile(&e.rotated.propagation, 99.0));
            let _ = writeln!(
                s,
                "| events mode, refreshInterval 1 h: rotation p50 / p99 (PutSecretValue and its event to Secret updated, {} Secrets) | {:.2} s / {:.2} s | | | p99 under 3 s | {} |",
                e.rotated.propagation.len(),
                p50.as_secs_f64(),
                p99.as_secs_f64(),
                verdict(e.rotated.missed == 0 && p99 <= Duration::from_secs(3))
            );
            let _ = writeln!(
                s,
                "| events mode: AWS calls per hour, SQS included (1% changing per hour) | {per_hour:.0} | | | no more than polling mode's at {} s ({:.1}x fewer) | {} |",
                a.refresh,
                ours_per_hour / per_hour.max(1.0),
                verdict(per_hour <= ours_per_hour)
            );
            let _ = writeln!(
                s,
                "| operator CPU time / peak resident memory, whole run with the events phase | {:.1} s / {:.1} MiB | | | | |",
                self.whole_run.cpu_seconds, self.whole_run.peak_rss_mib
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "AWS calls counted by the emulator's recorder:\n");
        let who = if peer.is_some() { "Lockstep, " } else { "" };
        ours.calls_list(&mut s, a, who);
        match (&self.against, peer) {
            (Against::Naive { window, calls }, _) => {
                let _ = writeln!(
                    s,
                    "- naive baseline, one GetSecretValue per ExternalSecret per interval ({:.0} s): {}",
                    window.as_secs_f64(),
                    show(calls)
                );
            }
            (Against::Peer { .. }, Some((name, _, m))) => m.calls_list(&mut s, a, &format!("{name}, ")),
            (Against::Peer { .. }, None) => {}
        }
        let _ = writeln!(
            s,
            "\nWhere the CPU goes, seconds by process (the control plane is kube-apiserver with etcd embedded), and the requests the apiserver served:\n"
        );
        ours.cpu_split(&mut s, who);
        if let Some((name, _, m)) = peer {
            m.cpu_split(&mut s, &format!("{name}, "));
        }
        let _ = writeln!(s, "\nPer ExternalSecret (whole-operator figures divided by {}):\n", a.es);
        let _ = writeln!(s, "| per ExternalSecret | Lockstep | {} |", peer.map_or("", |(name, _, _)| name));
        let _ = writeln!(s, "|---|---:|---:|");
        let theirs = peer.map(|(_, _, m)| m.per_es(a));
        for (i, (what, v)) in ours.per_es(a).into_iter().enumerate() {
            let t = theirs.as_ref().and_then(|t| t.get(i)).map_or(String::new(), |(_, t)| format!("{t:.3}"));
            let _ = writeln!(s, "| {what} | {v:.3} | {t} |");
        }
        if let Some(e) = &self.events {
            let _ = writeln!(
                s,
                "- events mode, quiet ({:.0} s, fallback poll every {} min not in the window: one polling-mode poll's calls are added per fallback interval): {}",
                e.window.as_secs_f64(),
                e.fallback.as_secs() / 60,
                show(&e.steady_calls)
            );
            let _ = writeln!(
                s,
                "- events mode, {} rotations with their events over {:.0} s: {}",
                a.rotations,
                e.window.as_secs_f64(),
                show(&e.rotated.calls)
            );
            if e.rotated.missed > 0 {
                let _ = writeln!(
                    s,
                    "- events mode: {} rotated Secrets did not show the new value in time",
                    e.rotated.missed
                );
            }
        }
        s
    }
}

/// Put a section of BENCHMARKS.md (between `<!-- bench NAME -->` and `<!-- /bench -->`) in place,
/// keeping the others.
fn write_section(name: &str, markdown: &str) -> anyhow::Result<PathBuf> {
    let path = lockstep_rig::repo_root().join("BENCHMARKS.md");
    let begin = format!("<!-- bench {name} -->");
    let end = "<!-- /bench -->";
    let section = format!("{begin}\n{markdown}{end}\n");
    let old = match std::fs::read_to_string(&path) {
        Ok(old) => old,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = match (old.find(&begin), old.find(&begin).and_then(|b| old[b..].find(end).map(|e| b + e + end.len()))) {
        (Some(b), Some(e)) => format!("{}{section}{}", &old[..b], old[e..].trim_start_matches('\n')),
        _ => {
            let head = if old.is_empty() { String::from("# Benchmarks\n\n") } else { old };
            format!("{}\n\n{section}", head.trim_end())
        }
    };
    std::fs::write(&path, new)?;
    Ok(path)
}

/// Rotations for `args.soak` seconds, then a consistency check; returns the report.
async fn soak(
    args: &Args,
    emu: &Emulator,
    names: &[String],
    secrets: &Api<Secret>,
    operator: &Operator,
) -> anyhow::Result<String> {
    let (n, m) = (args.es, args.secrets);
    let refresh = Duration::from_secs(args.refresh);
    let aws = emu.client();
    let start = usage(operator.pid())?;
    emu.start_recording()?;
    let t0 = Instant::now();
    let every = Duration::from_secs_f64(args.rotate_every);
    let mut generation: HashMap<usize, u32> = HashMap::new();
    let mut k = 0u32;
    while t0.elapsed() < Duration::from_secs(args.soak) {
        // Walk the secrets in a stride that is prime to M, so rotations spread over all of them.
        let j = (k as usize).wrapping_mul(7919) % m;
        let g = generation.entry(j).or_insert(0);
        *g += 1;
        aws.put_secret_value().secret_id(&names[j]).secret_string(value_of(&names[j], *g)).send().await?;
        k += 1;
        tokio::time::sleep_until((t0 + every * k).into()).await;
    }
    let elapsed = t0.elapsed();
    let calls = operator_calls(emu.stop_recording()?);
    let mid = usage(operator.pid())?;

    // Every Secret must reach the latest value of its source within two intervals.
    let deadline = Instant::now() + refresh * 2 + Duration::from_secs(30);
    let stale = loop {
        let list = secrets.list(&Default::default()).await?;
        let have: HashMap<String, Vec<u8>> =
            list.items.into_iter().filter_map(|s| Some((s.name_any(), s.data?.get("password")?.0.clone()))).collect();
        let stale = (0..n)
            .filter(|i| {
                let j = i % m;
                let want = format!("{}-v{}", names[j], generation.get(&j).copied().unwrap_or(0));
                have.get(&format!("es-{i:05}")).is_none_or(|v| v != want.as_bytes())
            })
            .count();
        if stale == 0 || Instant::now() > deadline {
            break stale;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let end = usage(operator.pid())?;
    let failures = operator.metrics()?.sum("lockstep_reconcile_failures_total", &[]);
    let log = operator.logs();
    let warnings = log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).count();

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let per_hour = total(&calls) as f64 * 3600.0 / elapsed.as_secs_f64();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Soak: {n} ExternalSecrets over {m} AWS secrets for {:.1} min, one rotation every {} s\n",
        elapsed.as_secs_f64() / 60.0,
        args.rotate_every
    );
    let _ = writeln!(
        s,
        "Run {} on {cores} cores; command: `{}`; refreshInterval {} s.\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        args.command,
        args.refresh
    );
    let _ = writeln!(s, "| measure | value |");
    let _ = writeln!(s, "|---|---:|");
    let _ = writeln!(s, "| rotations | {k} (of {} secrets) |", generation.len());
    let _ = writeln!(
        s,
        "| resident memory at start / end of rotations / after the check | {:.1} / {:.1} / {:.1} MiB |",
        start.rss_mib, mid.rss_mib, end.rss_mib
    );
    let _ = writeln!(s, "| peak resident memory | {:.1} MiB |", end.peak_rss_mib);
    let _ = writeln!(s, "| CPU time during the soak | {:.1} s |", end.cpu_seconds - start.cpu_seconds);
    let _ = writeln!(s, "| AWS calls per hour during the soak | {per_hour:.0} ({}) |", show(&calls));
    let _ = writeln!(s, "| failed syncs (`lockstep_reconcile_failures_total`) | {failures:.0} |");
    let _ = writeln!(s, "| WARN / ERROR lines in the operator log | {warnings} |");
    let _ = writeln!(
        s,
        "| Secrets not at their latest value {} s after the last rotation | {stale} |",
        (refresh * 2 + Duration::from_secs(30)).as_secs()
    );
    Ok(s)
}

/// One operator's namespace, emulator and objects: M AWS secrets, the store, N ExternalSecrets.
struct Bed {
    subject: Subject,
    env: TestEnv,
    emu: Emulator,
    names: Vec<String>,
    es_api: Api<DynamicObject>,
    secrets: Api<Secret>,
}

impl Bed {
    async fn prepare(args: &Args, subject: Subject) -> anyhow::Result<Bed> {
        let (n, m) = (args.es, args.secrets);
        let rig = Rig::get();
        let suffix = match subject {
            Subject::Lockstep => "",
            Subject::Eso => "-eso",
        };
        let env = rig.test_env(&format!("bench{suffix}")).await?;
        subject.install_crds(&env.kube).await?;
        // moto finds a secret by scanning all of them; indexed, a run of 8,000 secrets measures the
        // operators rather than the emulator (the same for both subjects).
        let emu =
            Emulator::start_with(&rig.dir.join(format!("bench-emulator{suffix}")), &[("RIG_MOTO_NAME_INDEX", "1")])?;
        let aws = emu.client();
        let names: Vec<String> = (0..m).map(|i| format!("bench/{i:05}")).collect();

        let t = Instant::now();
        futures::stream::iter(names.iter().map(|name| {
            let aws = aws.clone();
            async move {
                // moto's create is not thread-safe (a concurrent create can fail with a 500): retry.
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match aws.create_secret().name(name).secret_string(value_of(name, 0)).send().await {
                        Ok(_) => return Ok(()),
                        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_exists_exception()) => {
                            return Ok(());
                        }
                        Err(e) if attempt >= 5 => return Err(e),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100 * attempt)).await,
                    }
                }
            }
        }))
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
        println!("bench: {}: {m} AWS secrets created in {:.1}s", subject.name(), t.elapsed().as_secs_f64());

        env.apply(creds()).await?;
        env.apply(subject.own(secret_store("aws", &emu.endpoint).into())).await?;
        let es_api = subject.external_secrets(&env.kube, &env.ns);
        let t = Instant::now();
        futures::stream::iter((0..n).map(|i| {
            let api = es_api.clone();
            let key = names[i % m].clone();
            let refresh = format!("{}s", args.refresh);
            async move {
                let name = format!("es-{i:05}");
                let manifest =
                    subject.own(es("aws").refresh(&refresh).property("password", &key, "password").manifest(&name));
                api.patch(&name, &PatchParams::apply("lockstep-bench"), &Patch::Apply(&manifest)).await.map(|_| ())
            }
        }))
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
        println!("bench: {}: {n} ExternalSecrets created in {:.1}s", subject.name(), t.elapsed().as_secs_f64());
        let secrets = Api::<Secret>::namespaced(env.kube.clone(), &env.ns);
        Ok(Bed { subject, env, emu, names, es_api, secrets })
    }

    /// Start the operator, which meets N ExternalSecrets that have never synced, and time until all
    /// are Ready; returns it, the time and the AWS calls it made.
    async fn cold_start(&self, args: &Args) -> anyhow::Result<(Operator, Duration, BTreeMap<String, usize>, Meter)> {
        let n = args.es;
        let before = Meter::read(&self.env.kube, &self.emu, None).await?;
        self.emu.start_recording()?;
        let started = Instant::now();
        let operator = self.subject.start(&self.env.ns, &self.emu.endpoint)?;
        // Bounded: ten minutes, plus a quarter of a second per ExternalSecret for the large sizes.
        let limit = Duration::from_secs(600) + Duration::from_millis(250) * n as u32;
        let ready = all_ready(&self.es_api, n, limit).await.with_context(|| {
            let log = operator.logs();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            format!("operator log, last lines:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
        })?;
        let cold_start = ready.duration_since(started);
        let cold_calls = operator_calls(self.emu.recorded()?);
        let meter = Meter::read(&self.env.kube, &self.emu, Some(operator.pid())).await?.since(&before)?;
        println!(
            "bench: {}: all Ready after {:.1}s; AWS calls {}; CPU s operator {:.1}, control plane {:.1}, emulator {:.1}; {:.0} apiserver requests",
            self.subject.name(),
            cold_start.as_secs_f64(),
            show(&cold_calls),
            meter.operator,
            meter.control_plane,
            meter.emulator,
            meter.requests
        );
        Ok((operator, cold_start, cold_calls, meter))
    }

    /// After the cold start: the steady state over two intervals, then K rotations spread over one
    /// interval, then the operator's usage.
    async fn measure(
        &self,
        args: &Args,
        operator: &Operator,
        cold_start: Duration,
        cold_calls: BTreeMap<String, usize>,
        cold_meter: Meter,
    ) -> anyhow::Result<Measured> {
        let who = self.subject.name();
        let refresh = Duration::from_secs(args.refresh);
        // Steady state: let the first requeues pass, then count over two intervals.
        tokio::time::sleep(refresh + Duration::from_secs(2)).await;
        let window = refresh * 2;
        let meter = || Meter::read(&self.env.kube, &self.emu, Some(operator.pid()));
        let before = meter().await?;
        self.emu.start_recording()?;
        tokio::time::sleep(window).await;
        let steady_calls = operator_calls(self.emu.stop_recording()?);
        let steady_meter = meter().await?.since(&before)?;
        let idle_rss_mib = usage(operator.pid())?.rss_mib;
        println!("bench: {who}: steady state over {}s: {}", window.as_secs(), show(&steady_calls));

        // Rotation: K secrets get a new AWSCURRENT, spread evenly over one interval; each Secret built
        // from one of them is timed from its PutSecretValue to the watch event that shows the new value.
        let label = self.subject.managed_label();
        let before = meter().await?;
        let rotated = rotate(args, &self.emu, &self.names, &self.secrets, &label, refresh, 1, |_| Ok(())).await?;
        let rotation_meter = meter().await?.since(&before)?;
        println!("bench: {who}: {}", rotated.summary(args.rotations));
        let usage = usage(operator.pid())?;
        Ok(Measured {
            cold_start,
            cold_calls,
            window,
            steady_calls,
            rotated,
            usage,
            idle_rss_mib,
            cold_meter,
            steady_meter,
            rotation_meter,
        })
    }

    /// The naive baseline, on this emulator: every ExternalSecret fetches its value once per
    /// interval, spread evenly over the interval.
    async fn naive(&self, args: &Args) -> anyhow::Result<Against> {
        let n = args.es;
        let refresh = Duration::from_secs(args.refresh);
        let aws = self.emu.client();
        self.emu.start_recording()?;
        let naive_start = Instant::now();
        futures::stream::iter((0..n).map(|i| {
            let aws = aws.clone();
            let key = self.names[i % args.secrets].clone();
            let at = naive_start + refresh.mul_f64(i as f64 / n as f64);
            async move {
                tokio::time::sleep_until(at.into()).await;
                aws.get_secret_value().secret_id(key).send().await.map(|_| ())
            }
        }))
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
        let window = naive_start.elapsed().max(refresh);
        let calls = self.emu.stop_recording()?;
        Ok(Against::Naive { window, calls })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let n = args.es;
    println!("bench: {n} ExternalSecrets over {} AWS secrets, refreshInterval {}s", args.secrets, args.refresh);
    // The peer's build is checked before Lockstep's run, not ten minutes into it.
    let peer_version = match args.peer {
        Some(Subject::Eso) => Some(EsoBuild::find()?.version),
        Some(Subject::Lockstep) | None => None,
    };

    let bed = Bed::prepare(&args, Subject::Lockstep).await?;
    let (operator, cold_start, cold_calls, cold_meter) = bed.cold_start(&args).await?;
    if args.soak > 0 {
        let table = soak(&args, &bed.emu, &bed.names, &bed.secrets, &operator).await?;
        println!("\n{table}");
        if args.write {
            let path = write_section(&format!("soak es={n}"), &table)?;
            println!("bench: wrote {}", path.display());
        }
        return Ok(());
    }
    let ours = bed.measure(&args, &operator, cold_start, cold_calls, cold_meter).await?;
    let events = match args.events {
        true => Some(events_phase(&args, &bed.emu, &bed.env, &bed.es_api, &bed.names, &bed.secrets).await?),
        false => None,
    };
    let whole_run = usage(operator.pid())?;
    drop(operator);

    let against = match (args.peer, peer_version) {
        (Some(subject), Some(version)) => {
            // Lockstep's emulator stops; its objects stay in the apiserver, untouched.
            drop(bed);
            let peer = Bed::prepare(&args, subject).await?;
            let (operator, cold_start, cold_calls, cold_meter) = peer.cold_start(&args).await?;
            let measured = peer.measure(&args, &operator, cold_start, cold_calls, cold_meter).await?;
            Against::Peer { subject, version, measured: Box::new(measured) }
        }
        _ => bed.naive(&args).await?,
    };

    let report = Report { args, ours, against, events, whole_run };
    let table = report.markdown();
    println!("\n{table}");
    if report.args.write {
        let mut section = format!("es={n}");
        if report.args.events {
            section.push_str(" events");
        }
        if let Some(peer) = report.args.peer {
            let _ = write!(section, " peer={}", peer.name().to_lowercase());
        }
        let path = write_section(&section, &table)?;
        println!("bench: wrote {}", path.display());
    } else {
        anyhow::ensure!(report.ours.rotated.missed == 0, "rotations did not reach every Secret");
        match &report.against {
            Against::Naive { calls, .. } => {
                anyhow::ensure!(total(calls) >= n, "the naive baseline made fewer calls than ExternalSecrets")
            }
            Against::Peer { measured, .. } => {
                anyhow::ensure!(measured.rotated.missed == 0, "the peer's rotations did not reach every Secret")
            }
        }
    }
    Ok(())
}
