//! Helpers for operator tests: install CRDs, run the operator binary, build manifests, wait.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use lockstep::api::{ExternalSecret, SecretStore};
use lockstep_rig::{Rig, eventually};
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(60);

/// Apply the generated CRDs (idempotent) and wait until they are established.
pub async fn install_crds(kube: &Client) -> anyhow::Result<()> {
    let api = Api::<CustomResourceDefinition>::all(kube.clone());
    for crd in lockstep::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &PatchParams::apply("lockstep-tests").force(), &Patch::Apply(&crd)).await?;
        eventually(WAIT, "CRD established", || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let c = api.get(&name).await.ok()?;
                let ok = c.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
                ok.then_some(())
            }
        })
        .await?;
    }
    Ok(())
}

/// The operator binary, running against the rig. Killed on drop.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
    pub metrics_addr: String,
}

/// A command for the operator binary that gets SIGKILL when the thread that started it exits, so a
/// test binary or benchmark killed by a signal (whose `Drop` never runs) leaves no operator behind.
/// util-linux `setpriv` sets the parent-death signal and execs (the pid stays the operator's); the
/// crate forbids `unsafe`, which `pre_exec` would need. Tests start operators from the test's own
/// thread, which outlives them. Without `setpriv` the operator is started directly.
fn operator_command() -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    let exe = env!("CARGO_BIN_EXE_lockstep");
    if std::path::Path::new(SETPRIV).exists() {
        let mut cmd = Command::new(SETPRIV);
        cmd.args(["--pdeathsig", "KILL", "--", exe]);
        cmd
    } else {
        Command::new(exe)
    }
}

impl Operator {
    /// Start `lockstep run` watching one namespace (ClusterSecretStores are still resolved).
    pub fn start(namespace: Option<&str>, extra_env: &[(&str, &str)]) -> anyhow::Result<Operator> {
        let ns_args = namespace.map(|ns| vec!["--namespace", ns]).unwrap_or_default();
        Self::start_with(&Rig::get().kubeconfig, &ns_args, extra_env)
    }

    /// Start `lockstep run` with a kubeconfig and extra arguments of its own.
    pub fn start_with(
        kubeconfig: &std::path::Path,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Operator> {
        let rig = Rig::get();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let log = rig.dir.join(format!("operator-{}.log", lockstep_rig::unique()));
        let mut cmd = operator_command();
        cmd.arg("run").arg("--metrics-addr").arg(&metrics_addr);
        if !args.contains(&"--log-level") {
            cmd.arg("--log-level").arg("lockstep=debug,info");
        }
        cmd.args(args)
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?));
        Ok(Operator { child: cmd.spawn()?, log, metrics_addr })
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has not exited yet.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; the exit status once it has exited (within `WAIT`).
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        self.wait_exit().await
    }

    /// The exit status once it has exited by itself (within `WAIT`).
    pub async fn wait_exit(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let started = std::time::Instant::now();
        while started.elapsed() < WAIT {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("operator did not exit within {WAIT:?}")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test's world: namespace, clients, an operator watching the namespace.
pub struct World {
    pub env: lockstep_rig::TestEnv,
    pub operator: Operator,
}

impl World {
    pub async fn new(prefix: &str) -> anyhow::Result<World> {
        Self::with_env(prefix, &[]).await
    }

    /// A world whose operator gets extra environment variables.
    pub async fn with_env(prefix: &str, operator_env: &[(&str, &str)]) -> anyhow::Result<World> {
        let env = Rig::get().test_env(prefix).await?;
        install_crds(&env.kube).await?;
        let operator = Operator::start(Some(&env.ns), operator_env)?;
        Ok(World { env, operator })
    }

    /// A world on `env` whose operator reaches the apiserver through `kubeconfig` (a relay, or a
    /// control plane of the test's own) with `args`.
    pub async fn on(env: lockstep_rig::TestEnv, kubeconfig: &std::path::Path, args: &[&str]) -> anyhow::Result<World> {
        install_crds(&env.kube).await?;
        let operator = Operator::start_with(kubeconfig, args, &[])?;
        Ok(World { env, operator })
    }

    pub fn ns(&self) -> &str {
        &self.env.ns
    }

    /// An AWS secret name unique to this test.
    pub fn aws_name(&self, short: &str) -> String {
        format!("{}/{short}", self.env.ns)
    }

    /// Server-side apply any object given as JSON into this namespace (or cluster-wide).
    pub async fn apply(&self, obj: Value) -> anyhow::Result<()> {
        apply(&self.env.kube, Some(self.ns()), obj).await
    }

    /// A credential Secret with moto's keys and a SecretStore pointing at `endpoint`.
    pub async fn store(&self, name: &str, endpoint: &str, extra_aws: Value) -> anyhow::Result<()> {
        self.creds().await?;
        let mut aws = json!({
            "region": "us-east-1",
            "endpoint": endpoint,
            "auth": {"secretRef": {
                "accessKeyIDSecretRef": {"name": "aws-creds", "key": "access-key-id"},
                "secretAccessKeySecretRef": {"name": "aws-creds", "key": "secret-access-key"}
            }}
        });
        merge(&mut aws, extra_aws);
        self.apply(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": name},
            "spec": {"aws": aws}
        }))
        .await
    }

    pub async fn creds(&self) -> anyhow::Result<()> {
        self.apply(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws-creds"},
            "stringData": {"access-key-id": "testing", "secret-access-key": "testing"}
        }))
        .await
    }

    pub async fn external_secret(&self, name: &str, spec: Value) -> anyhow::Result<()> {
        self.apply(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "ExternalSecret",
            "metadata": {"name": name}, "spec": spec
        }))
        .await
    }

    /// The Secrets of this namespace that carry our managed-by label, sorted by name.
    pub async fn managed_secrets(&self) -> anyhow::Result<Vec<Secret>> {
        let managed = kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=lockstep");
        let mut list = self.secrets().list(&managed).await?.items;
        list.sort_by_key(|s| s.metadata.name.clone());
        Ok(list)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.env.kube.clone(), self.ns())
    }

    pub fn externalsecrets(&self) -> Api<ExternalSecret> {
        Api::namespaced(self.env.kube.clone(), self.ns())
    }

    pub fn stores(&self) -> Api<SecretStore> {
        Api::namespaced(self.env.kube.clone(), self.ns())
    }

    /// Wait until the ExternalSecret's Ready reason is `reason`; returns the message.
    pub async fn wait_reason(&self, name: &str, reason: &str) -> anyhow::Result<String> {
        let api = self.externalsecrets();
        let r = eventually(WAIT, &format!("ExternalSecret {name} reason {reason}"), || {
            let api = api.clone();
            async move {
                let es = api.get(name).await.ok()?;
                let generation = es.metadata.generation;
                let c = es.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
                (c.reason == reason && c.observed_generation == generation).then_some(c.message)
            }
        })
        .await;
        if r.is_err() {
            let now = api.get(name).await.ok().and_then(|e| e.status);
            anyhow::bail!(
                "{} (status now {now:?})\noperator log:\n{}",
                r.err().map(|e| e.to_string()).unwrap_or_default(),
                self.operator.logs()
            );
        }
        r
    }

    /// A Deployment `name` (a rollout-restart target; no pod ever runs on the rig).
    pub async fn deployment(&self, name: &str) -> anyhow::Result<()> {
        self.apply(deployment(name)).await
    }

    /// Wait until SecretStore `name` is Ready (the operator's log in the error otherwise).
    pub async fn wait_store_ready(&self, name: &str) -> anyhow::Result<()> {
        let stores = self.stores();
        eventually(WAIT, &format!("SecretStore {name} Ready"), || {
            let stores = stores.clone();
            async move {
                let s = stores.get(name).await.ok()?;
                s.status?.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\noperator log:\n{}", self.operator.logs()))
    }

    /// Wait until Secret `name` has `key` == `value`.
    pub async fn wait_value(&self, name: &str, key: &str, value: &str) -> anyhow::Result<Secret> {
        self.wait_value_within(WAIT, name, key, value).await
    }

    /// Wait up to `timeout` until Secret `name` has `key` == `value`.
    pub async fn wait_value_within(
        &self,
        timeout: Duration,
        name: &str,
        key: &str,
        value: &str,
    ) -> anyhow::Result<Secret> {
        let api = self.secrets();
        eventually(timeout, &format!("Secret {name}[{key}] == expected"), || {
            let api = api.clone();
            async move {
                let s = api.get(name).await.ok()?;
                let v = s.data.as_ref()?.get(key)?;
                (v.0 == value.as_bytes()).then_some(s)
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\noperator log:\n{}", self.operator.logs()))
    }

    pub async fn create_aws(&self, short: &str, value: &str) -> anyhow::Result<String> {
        let name = self.aws_name(short);
        self.env.aws.create_secret().name(&name).secret_string(value).send().await?;
        Ok(name)
    }

    pub async fn plain_secret(&self, name: &str, data: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.data = Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect());
        self.secrets().create(&PostParams::default(), &s).await?;
        Ok(())
    }
}

/// A Deployment `name` (no pod ever runs on the rig).
pub fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "example.invalid/app:1"}]}}}})
}

pub async fn apply(kube: &Client, ns: Option<&str>, obj: Value) -> anyhow::Result<()> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let gvk = kube::core::GroupVersionKind::gvk(group, version, &kind);
    let (ar, caps) = kube::discovery::pinned_kind(kube, &gvk).await?;
    let api: Api<kube::core::DynamicObject> = match (ns, caps.scope) {
        (Some(ns), kube::discovery::Scope::Namespaced) => Api::namespaced_with(kube.clone(), ns, &ar),
        _ => Api::all_with(kube.clone(), &ar),
    };
    api.patch(&name, &PatchParams::apply("lockstep-tests").force(), &Patch::Apply(&obj)).await?;
    Ok(())
}

pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

pub fn text(s: &Secret, key: &str) -> String {
    s.data.as_ref().and_then(|d| d.get(key)).map(|b| String::from_utf8_lossy(&b.0).to_string()).unwrap_or_default()
}

/// GET a path from a loopback HTTP server; returns the body.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    anyhow::ensure!(addr.starts_with("127."), "loopback only: {addr}");
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The value of the first sample in a Prometheus exposition whose line holds every one of `labels`.
pub fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}
