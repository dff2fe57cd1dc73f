//! The test rig: a real kube-apiserver (with etcd, and kube-controller-manager when built) and a
//! moto Secrets Manager emulator, started once per test binary on free loopback ports in a
//! temporary folder.
//!
//! Every process gets a pipe as stdin and exits when it closes, so nothing outlives the test
//! binary, even after a panic or a kill. Binaries come from `.tools/` (`make tools`).
//!
//! Also what the integration tests and the benchmark share: the operator as a process
//! ([`Operator`], given the path of its binary), one test's [`World`], the [`manifests`] they
//! apply, an HTTP client and a Prometheus text reader ([`http`]). Nothing here depends on the
//! `lockstep` crate: its CRDs are passed in ([`install_crds`]).

pub mod http;
pub mod manifests;
pub mod node;
mod operator;
mod world;

pub use node::Node;
pub use operator::{Operator, free_addr, install_crds};
pub use world::{World, apply, merge, text};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_credential_types::Credentials;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// How long a component may take to report READY.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the tests wait for the operator to do something.
pub const WAIT: Duration = Duration::from_secs(60);

/// The repository root (from this crate's place in it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

/// Where `make tools` installs the rig's binaries (override with `LOCKSTEP_TOOLS`).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("LOCKSTEP_TOOLS").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".tools"))
}

/// A child process that stops when this value drops or the test binary exits.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Proc {
    /// Start `cmd` with a stdin pipe, wait for its `READY <arg>` line, return the arg.
    fn start(mut cmd: Command, log: &Path, what: &str) -> anyhow::Result<(Proc, String)> {
        let log_file = std::fs::File::create(log)?;
        cmd.env("RIG_EXIT_ON_STDIN_EOF", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        let mut child = cmd.spawn().with_context(|| format!("cannot start {what}: run `make tools`"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            for line in lines.by_ref().map_while(Result::ok) {
                if let (false, Some(rest)) = (sent, line.strip_prefix("READY ")) {
                    let _ = tx.send(rest.trim().to_string());
                    sent = true;
                }
            }
        });
        let mut proc = Proc { child, stdin };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(arg) => Ok((proc, arg)),
            Err(_) => {
                proc.stop();
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: String =
                    tail.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                bail!("{what} did not become ready within {START_TIMEOUT:?}; its log ({}):\n{tail}", log.display())
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A moto server. Stops when dropped.
pub struct Emulator {
    _proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// Its folder: log, recording, and room for a test's own files.
    pub dir: PathBuf,
}

impl Emulator {
    /// A moto server of the test's own, in a fresh folder of the rig (tests that count calls need
    /// one nobody else uses).
    pub fn dedicated() -> anyhow::Result<Emulator> {
        Emulator::start(&Rig::get().dir.join(format!("emu-{}", unique())))
    }

    /// A moto server of its own with `env` (e.g. `RIG_STS_SESSION_SECONDS`, see moto_rig.py).
    pub fn dedicated_with(env: &[(&str, &str)]) -> anyhow::Result<Emulator> {
        Emulator::start_with(&Rig::get().dir.join(format!("emu-{}", unique())), env)
    }

    /// Start a moto server in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Emulator> {
        Emulator::start_with(dir, &[])
    }

    /// Start a moto server in `dir` with `env` (see moto_rig.py).
    pub fn start_with(dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Emulator> {
        std::fs::create_dir_all(dir)?;
        let tools = tools_dir();
        let mut cmd = Command::new(tools.join("venv/bin/python"));
        cmd.arg(repo_root().join("tests/support/moto_rig.py"))
            .arg("0")
            .env("MOTO_RECORDER_FILEPATH", dir.join("recording.jsonl"))
            .envs(env.iter().copied())
            .current_dir(dir);
        let (proc, endpoint) = Proc::start(cmd, &dir.join("moto.log"), "moto (tests/support/moto_rig.py)")?;
        Ok(Emulator { _proc: proc, endpoint, dir: dir.to_path_buf() })
    }

    /// The emulator's process id (its CPU time is in `/proc/<pid>/stat`).
    pub fn pid(&self) -> u32 {
        self._proc.pid()
    }

    /// A Secrets Manager client for this emulator (region us-east-1, moto's test keys).
    pub fn client(&self) -> aws_sdk_secretsmanager::Client {
        sm_client(&self.endpoint)
    }

    /// Start counting calls (clears what was recorded before).
    pub fn start_recording(&self) -> anyhow::Result<()> {
        self.moto_api("POST", "/moto-api/recorder/stop-recording")?;
        self.moto_api("POST", "/moto-api/recorder/reset-recording")?;
        self.moto_api("POST", "/moto-api/recorder/start-recording")?;
        Ok(())
    }

    /// Stop counting and return the calls per operation (`GetSecretValue`, `AssumeRole`, ...),
    /// failed calls included.
    pub fn stop_recording(&self) -> anyhow::Result<BTreeMap<String, usize>> {
        self.moto_api("POST", "/moto-api/recorder/stop-recording")?;
        let body = self.moto_api("GET", "/moto-api/recorder/download-recording")?;
        Ok(count_operations(&body))
    }

    /// Calls recorded so far, without stopping.
    pub fn recorded(&self) -> anyhow::Result<BTreeMap<String, usize>> {
        let body = self.moto_api("GET", "/moto-api/recorder/download-recording")?;
        Ok(count_operations(&body))
    }

    /// One call of an AWS JSON-protocol API of this emulator: SQS (`target` `AmazonSQS.<Action>`)
    /// or EventBridge (`AWSEvents.<Action>`), signed for us-east-1 with moto's test keys (moto
    /// routes by the signature's service and checks nothing else). Returns the answer's JSON.
    pub fn aws_json(&self, target: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let (service, content_type) = match target.split_once('.').map(|(prefix, _)| prefix) {
            Some("AmazonSQS") => ("sqs", "application/x-amz-json-1.0"),
            Some("AWSEvents") => ("events", "application/x-amz-json-1.1"),
            _ => anyhow::bail!("no JSON-protocol service for target {target}"),
        };
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
        );
        let headers = [("Content-Type", content_type), ("X-Amz-Target", target), ("Authorization", auth.as_str())];
        let answer = http::request_with(&self.endpoint, "POST", "/", &headers, &body.to_string())?
            .success()
            .with_context(|| format!("moto {target}"))?;
        if answer.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&answer).with_context(|| format!("moto {target} answered {answer:?}"))
    }

    /// SQS queue `name` on this emulator, with an EventBridge rule of the same name (the shipped
    /// pattern, examples/terraform/event-pattern.json) sending to it.
    pub fn event_queue(&self, name: &str) -> anyhow::Result<EventQueue> {
        let created = self.aws_json("AmazonSQS.CreateQueue", serde_json::json!({"QueueName": name}))?;
        let url = created["QueueUrl"].as_str().with_context(|| format!("no QueueUrl in {created}"))?.to_string();
        anyhow::ensure!(url.starts_with("http://127.0.0.1:"), "the queue is on loopback: {url}");
        let pattern = std::fs::read_to_string(repo_root().join("examples/terraform/event-pattern.json"))?;
        let rule = serde_json::json!({"Name": name, "EventPattern": pattern, "State": "ENABLED"});
        self.aws_json("AWSEvents.PutRule", rule)?;
        let arn = format!("arn:aws:sqs:us-east-1:123456789012:{name}");
        let targets = serde_json::json!({"Rule": name, "Targets": [{"Id": "lockstep", "Arn": arn}]});
        self.aws_json("AWSEvents.PutTargets", targets)?;
        Ok(EventQueue { url })
    }

    /// What CloudTrail hands EventBridge after Secrets Manager's `event_name` on `secret_id` (a name
    /// or an ARN), with `request` merged into its request parameters.
    pub fn cloudtrail_event(
        &self,
        event_name: &str,
        secret_id: &str,
        request: serde_json::Value,
    ) -> anyhow::Result<()> {
        let mut parameters = serde_json::json!({"secretId": secret_id});
        merge(&mut parameters, request);
        let detail = serde_json::json!({"eventVersion": "1.08", "eventSource": "secretsmanager.amazonaws.com",
            "eventName": event_name, "awsRegion": "us-east-1", "requestParameters": parameters,
            "responseElements": null});
        let entry = serde_json::json!({"Source": "aws.secretsmanager", "DetailType": "AWS API Call via CloudTrail",
            "Detail": detail.to_string(), "Resources": []});
        let answer = self.aws_json("AWSEvents.PutEvents", serde_json::json!({"Entries": [entry]}))?;
        anyhow::ensure!(answer["FailedEntryCount"].as_u64() == Some(0), "PutEvents: {answer}");
        Ok(())
    }

    /// Send a request to moto's own API; returns the body.
    pub fn moto_api(&self, method: &str, path: &str) -> anyhow::Result<String> {
        http::request(&self.endpoint, method, path, "")?.success().with_context(|| format!("moto {method} {path}"))
    }
}

/// The recorded requests as (operation, body): the operation is `X-Amz-Target`'s action for JSON
/// services, `Action=` for STS; the body decoded from base64 where the recorder encoded it.
pub fn recorded_requests(jsonl: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let raw = v["body"].as_str().unwrap_or_default();
        let body = if v["body_encoded"].as_bool() == Some(true) {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD.decode(raw).unwrap_or_default();
            String::from_utf8_lossy(&bytes).to_string()
        } else {
            raw.to_string()
        };
        let target = v["headers"]
            .as_object()
            .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target")))
            .and_then(|(_, v)| v.as_str())
            .and_then(|t| t.rsplit('.').next())
            .map(String::from);
        let op = target.or_else(|| body.split('&').find_map(|kv| kv.strip_prefix("Action=")).map(String::from));
        if let Some(op) = op {
            out.push((op, body));
        }
    }
    out
}

/// An SQS queue an EventBridge rule sends Secrets Manager's events to ([`Emulator::event_queue`]).
pub struct EventQueue {
    /// `http://127.0.0.1:<port>/<account>/<name>`.
    pub url: String,
}

/// Count recorded requests per operation (see [`recorded_requests`]).
pub fn count_operations(jsonl: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (op, _) in recorded_requests(jsonl) {
        *out.entry(op).or_insert(0) += 1;
    }
    out
}

/// A Secrets Manager client for an emulator endpoint.
pub fn sm_client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let conf = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "rig"))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(conf)
}

/// The shared rig of a test binary.
pub struct Rig {
    _control_plane: Mutex<Proc>,
    /// The emulator the tests share (one that counts calls starts its own: [`Emulator::dedicated`]).
    pub emulator: Emulator,
    /// Folder holding certificates, tokens, logs and etcd data.
    pub dir: PathBuf,
    /// The admin kubeconfig (system:masters).
    pub kubeconfig: PathBuf,
}

static RIG: OnceLock<Rig> = OnceLock::new();

impl Rig {
    /// The control plane's process id: kube-apiserver with etcd embedded.
    pub fn control_plane_pid(&self) -> u32 {
        self._control_plane.lock().map(|p| p.pid()).unwrap_or_else(|p| p.into_inner().pid())
    }

    /// The rig of this test binary, started on first use.
    pub fn get() -> &'static Rig {
        RIG.get_or_init(|| match Rig::start() {
            Ok(rig) => rig,
            Err(e) => panic!("the test rig did not start: {e:#}"),
        })
    }

    fn start() -> anyhow::Result<Rig> {
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("lockstep-rig-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let t0 = Instant::now();
        let tools = tools_dir();
        let mut cmd = Command::new(tools.join("bin/kube-apiserver"));
        cmd.env("RIG_DIR", &dir).env("RIG_PORT", "0");
        let kcm = tools.join("bin/kube-controller-manager");
        if kcm.exists() {
            cmd.env("RIG_CONTROLLER_MANAGER", &kcm);
        }
        // `LOCKSTEP_RIG_AUDIT=1`: a metadata-only audit log of every request (who, verb, object),
        // `audit.log` in the rig's folder, for finding out who makes the requests a benchmark counts.
        if std::env::var_os("LOCKSTEP_RIG_AUDIT").is_some() {
            let policy = dir.join("audit-policy.yaml");
            std::fs::write(&policy, "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")?;
            cmd.arg(format!("--audit-policy-file={}", policy.display()))
                .arg(format!("--audit-log-path={}", dir.join("audit.log").display()))
                .arg("--audit-log-format=json");
        }
        // The emulator starts while the control plane boots.
        let emu = std::thread::spawn({
            let d = dir.join("moto");
            move || Emulator::start(&d)
        });
        let (cp, kubeconfig) = Proc::start(cmd, &dir.join("control-plane.log"), "kube-apiserver (tests/support)")?;
        let emulator = emu.join().map_err(|_| anyhow::anyhow!("emulator thread panicked"))??;
        let _ = writeln!(
            std::io::stderr(),
            "rig: kube-apiserver and moto ready in {:.1}s (dir {})",
            t0.elapsed().as_secs_f64(),
            dir.display()
        );
        Ok(Rig { _control_plane: Mutex::new(cp), emulator, dir, kubeconfig: PathBuf::from(kubeconfig) })
    }

    /// A client with the admin token.
    pub async fn kube(&self) -> anyhow::Result<Client> {
        client_from(&self.kubeconfig).await
    }

    /// The admin kubeconfig, authenticating by bearer `token` instead (for RBAC tests).
    pub fn kubeconfig_with_token(&self, token: &str) -> anyhow::Result<Kubeconfig> {
        let mut kc = Kubeconfig::read_from(&self.kubeconfig)?;
        for auth in &mut kc.auth_infos {
            if let Some(a) = auth.auth_info.as_mut() {
                a.token = Some(token.to_string().into());
            }
        }
        Ok(kc)
    }

    /// A client authenticated by bearer `token` (for RBAC tests).
    pub async fn kube_with_token(&self, token: &str) -> anyhow::Result<Client> {
        client_of(self.kubeconfig_with_token(token)?).await
    }

    /// The static token of user `nobody` (no groups, no RBAC bindings).
    pub fn nobody_token(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.dir.join("nobody.token"))?.trim().to_string())
    }

    /// A fresh namespace for one test, with clients for both APIs.
    pub async fn test_env(&self, prefix: &str) -> anyhow::Result<TestEnv> {
        test_env(self.kube().await?, self.emulator.client(), prefix).await
    }
}

/// A client for the apiserver of the kubeconfig file at `path`, with its credentials.
pub async fn client_from(path: &Path) -> anyhow::Result<Client> {
    client_of(Kubeconfig::read_from(path)?).await
}

async fn client_of(kc: Kubeconfig) -> anyhow::Result<Client> {
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn test_env(kube: Client, aws: aws_sdk_secretsmanager::Client, prefix: &str) -> anyhow::Result<TestEnv> {
    let name = format!("{prefix}-{}", unique());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(kube.clone()).create(&PostParams::default(), &ns).await?;
    Ok(TestEnv { kube, aws, ns: name })
}

/// A control plane of one test's own (etcd and kube-apiserver; a kube-controller-manager with
/// [`ControlPlane::with_controller_manager`]), for tests that stop and restart it, or that run an
/// operator watching every namespace (which on the shared rig would act on the other tests'
/// objects): a restart keeps its port, certificates, tokens and etcd data, so clients holding its
/// kubeconfig reconnect as they would to a restarted apiserver.
pub struct ControlPlane {
    proc: Option<Proc>,
    dir: PathBuf,
    port: u16,
    starts: u32,
    controller_manager: bool,
    /// The admin kubeconfig (system:masters); valid across restarts.
    pub kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Start one in `dir` on a free loopback port.
    pub fn start(dir: &Path) -> anyhow::Result<ControlPlane> {
        Self::launched(dir, false)
    }

    /// [`ControlPlane::start`] with a kube-controller-manager (garbage collection of owned
    /// objects, namespace deletion), which `make tools` builds.
    pub fn with_controller_manager(dir: &Path) -> anyhow::Result<ControlPlane> {
        anyhow::ensure!(
            tools_dir().join("bin/kube-controller-manager").exists(),
            "this test needs kube-controller-manager in {}: run `make tools`",
            tools_dir().display()
        );
        Self::launched(dir, true)
    }

    fn launched(dir: &Path, controller_manager: bool) -> anyhow::Result<ControlPlane> {
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cp = ControlPlane {
            proc: None,
            dir: dir.to_path_buf(),
            port,
            starts: 0,
            controller_manager,
            kubeconfig: PathBuf::new(),
        };
        cp.launch(false)?;
        Ok(cp)
    }

    fn launch(&mut self, resume: bool) -> anyhow::Result<()> {
        self.starts += 1;
        let mut cmd = Command::new(tools_dir().join("bin/kube-apiserver"));
        cmd.env("RIG_DIR", &self.dir).env("RIG_PORT", self.port.to_string());
        if self.controller_manager {
            cmd.env("RIG_CONTROLLER_MANAGER", tools_dir().join("bin/kube-controller-manager"));
        }
        if resume {
            cmd.env("RIG_RESUME", "1");
        }
        let log = self.dir.join(format!("control-plane-{}.log", self.starts));
        let (proc, kubeconfig) = Proc::start(cmd, &log, "kube-apiserver (tests/support)")?;
        self.proc = Some(proc);
        self.kubeconfig = PathBuf::from(kubeconfig);
        Ok(())
    }

    /// Stop it (the apiserver shuts down gracefully, etcd keeps its data on disk).
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.stop();
        }
    }

    /// Start it again where it stopped: same port, certificates, tokens and etcd data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch(true)
    }

    /// A client with the admin token.
    pub async fn kube(&self) -> anyhow::Result<Client> {
        client_from(&self.kubeconfig).await
    }

    /// A fresh namespace on this control plane, with clients for it and for `emulator`.
    pub async fn test_env(&self, emulator: &Emulator, prefix: &str) -> anyhow::Result<TestEnv> {
        test_env(self.kube().await?, emulator.client(), prefix).await
    }
}

/// What one test works with.
pub struct TestEnv {
    /// A client with the admin token.
    pub kube: Client,
    /// A Secrets Manager client for the emulator the env was made with.
    pub aws: aws_sdk_secretsmanager::Client,
    /// This test's namespace (also a good prefix for AWS secret names).
    pub ns: String,
}

/// A short suffix for names, unique within this test binary and unlikely to repeat across runs.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{:x}{n}", (t ^ std::process::id()) & 0xfffff)
}

/// Remove rig folders of test binaries that are no longer running.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let stale = name.strip_prefix("lockstep-rig-").is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Poll `check` every 200 ms until it returns Some, or fail after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the fault proxy does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward it to the upstream.
    Pass,
    /// Answer with a ThrottlingException (HTTP 400, JSON as AWS sends it).
    Throttle,
    /// Answer with an AccessDeniedException (HTTP 400, JSON as AWS sends it).
    Deny,
    /// Close the connection without an answer, as an endpoint that went away mid-run.
    Drop,
    /// Throttle a share of the requests: of every `n` requests, all but the last (`n` = 2: every
    /// other one).
    ThrottleAllBut(u32),
    /// Answer as STS refuses a role (HTTP 403, the query protocol's XML `AccessDenied`).
    DenyRole,
}

/// A small HTTP proxy on loopback between the operator and the emulator that injects faults.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    mode: std::sync::Arc<Mutex<Fault>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream` (an `http://127.x` endpoint).
    pub fn start(upstream: &str) -> anyhow::Result<FaultProxy> {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        if !upstream.starts_with("127.") {
            bail!("refusing a non-loopback upstream: {upstream}");
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let mode = std::sync::Arc::new(Mutex::new(Fault::Pass));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, st, count) = (mode.clone(), stop.clone(), requests.clone());
        std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        // One request per connection (every answer closes it).
                        let nth = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        let fault = match *m.lock().unwrap_or_else(|e| e.into_inner()) {
                            Fault::ThrottleAllBut(n) if nth % n.max(1) as usize != 0 => Fault::Throttle,
                            Fault::ThrottleAllBut(_) => Fault::Pass,
                            other => other,
                        };
                        let up = upstream.clone();
                        std::thread::spawn(move || {
                            let _ = proxy_one(conn, &up, fault);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(FaultProxy { endpoint, mode, stop, requests })
    }

    /// Requests received so far, whatever happened to them.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Change what happens to the next requests.
    pub fn set(&self, fault: Fault) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn proxy_one(mut conn: TcpStream, upstream: &str, fault: Fault) -> anyhow::Result<()> {
    if fault == Fault::Drop {
        return Ok(());
    }
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    // Read one request: headers, then Content-Length bytes of body.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let canned = |type_: &str, message: &str| {
        let body = format!(r#"{{"__type":"{type_}","message":"{message}"}}"#);
        format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: fault\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match fault {
        Fault::Throttle => conn.write_all(canned("ThrottlingException", "Rate exceeded").as_bytes())?,
        Fault::Deny => conn.write_all(
            canned("AccessDeniedException", "User is not authorized to perform: secretsmanager:GetSecretValue")
                .as_bytes(),
        )?,
        Fault::DenyRole => {
            let body = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User is not authorized to perform: sts:AssumeRole</Message></Error><RequestId>fault</RequestId></ErrorResponse>";
            let head = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(format!("{head}{body}").as_bytes())?
        }
        Fault::Drop | Fault::ThrottleAllBut(_) => {}
        Fault::Pass => {
            let mut up = TcpStream::connect(upstream)?;
            up.set_read_timeout(Some(Duration::from_secs(30)))?;
            // Ask for a closed connection so the response ends at EOF.
            let head = head
                .lines()
                .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
                .collect::<Vec<_>>()
                .join("\r\n");
            up.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())?;
            up.write_all(&buf[header_end..])?;
            let mut resp = Vec::new();
            up.read_to_end(&mut resp)?;
            conn.write_all(&resp)?;
        }
    }
    Ok(())
}

/// A TCP relay on loopback that can cut every connection through it and refuse new ones, as a
/// restarting server does to its clients (TLS passes through untouched).
pub struct TcpCut {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Bumped at every cut: a relayed connection of an older epoch ends.
    epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TcpCut {
    /// Listen on a free loopback port and relay to `upstream` (`127.x.x.x:port`).
    pub fn start(upstream: &str) -> anyhow::Result<TcpCut> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        if !upstream.starts_with("127.") {
            bail!("refusing a non-loopback upstream: {upstream}");
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let (up, epoch, stop) =
            (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (u, e, st, upstream) = (up.clone(), epoch.clone(), stop.clone(), upstream.to_string());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if !u.load(Ordering::Relaxed) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let born = e.load(Ordering::Relaxed);
                for (from, to) in [(conn.try_clone(), server.try_clone()), (server.try_clone(), conn.try_clone())] {
                    let (Ok(from), Ok(to)) = (from, to) else { continue };
                    let (e, st) = (e.clone(), st.clone());
                    std::thread::spawn(move || {
                        relay(from, to, || e.load(Ordering::Relaxed) != born || st.load(Ordering::Relaxed))
                    });
                }
            }
        });
        Ok(TcpCut { addr, up, epoch, stop })
    }

    /// Close every relayed connection and refuse new ones until [`TcpCut::restore`].
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::Relaxed);
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Relay new connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for TcpCut {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Copy bytes from `from` to `to` until either side closes or `cut()` says so (checked every 100 ms).
fn relay(mut from: TcpStream, mut to: TcpStream, cut: impl Fn() -> bool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 16 * 1024];
    while !cut() {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}
