//! The operator under test as a process of its own, and the CRDs it needs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::http::{self, Metrics, Response};
use crate::{Rig, WAIT, eventually, unique};

/// Apply `crds` (idempotent) and wait until each is established.
pub async fn install_crds(kube: &Client, crds: &[CustomResourceDefinition]) -> anyhow::Result<()> {
    let api = Api::<CustomResourceDefinition>::all(kube.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().ok_or_else(|| anyhow::anyhow!("a CRD without a name"))?;
        api.patch(&name, &PatchParams::apply("lockstep-tests").force(), &Patch::Apply(crd)).await?;
        eventually(WAIT, &format!("CRD {name} established"), || {
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

/// `127.0.0.1:<a free port>`, for a server the caller starts.
pub fn free_addr() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    Ok(format!("127.0.0.1:{port}"))
}

/// `lockstep run` as a child process, its stderr in a log file of the rig. Killed on drop.
pub struct Operator {
    child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// Its admin server (`/metrics`, `/readyz`): `127.0.0.1:<port>`.
    pub metrics_addr: String,
}

/// A command for the operator binary that gets SIGKILL when the thread that started it exits, so a
/// test binary or benchmark killed by a signal (whose `Drop` never runs) leaves no operator behind.
/// util-linux `setpriv` sets the parent-death signal and execs (the pid stays the operator's); the
/// crates forbid `unsafe`, which `pre_exec` would need. Tests start operators from the test's own
/// thread, which outlives them. Without `setpriv` the operator is started directly.
fn operator_command(exe: &Path) -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if Path::new(SETPRIV).exists() {
        let mut cmd = Command::new(SETPRIV);
        cmd.args(["--pdeathsig", "KILL", "--"]).arg(exe);
        cmd
    } else {
        Command::new(exe)
    }
}

impl Operator {
    /// Start `exe run` against the apiserver of `kubeconfig` with `args` and `env` (and nothing
    /// else of this process's environment but `PATH`), at log level `lockstep=debug,info` unless
    /// `args` set one, its admin server on a free loopback port.
    pub fn start(
        exe: impl AsRef<Path>,
        kubeconfig: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Operator> {
        let metrics_addr = free_addr()?;
        let mut full = vec!["run", "--metrics-addr", &metrics_addr];
        if !args.contains(&"--log-level") {
            full.extend(["--log-level", "lockstep=debug,info"]);
        }
        full.extend(args);
        Self::command(exe, kubeconfig, &full, env, &metrics_addr)
    }

    /// Start `exe` with exactly `args` and `env` (and `PATH`, and `KUBECONFIG` naming `kubeconfig`),
    /// for a controller that is not `lockstep` (the benchmark's peer); `metrics_addr` is where
    /// `args` told it to serve its metrics (see [`free_addr`]).
    pub fn command(
        exe: impl AsRef<Path>,
        kubeconfig: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        metrics_addr: &str,
    ) -> anyhow::Result<Operator> {
        let log = Rig::get().dir.join(format!("operator-{}.log", unique()));
        let mut cmd = operator_command(exe.as_ref());
        cmd.args(args).env_clear().env("KUBECONFIG", kubeconfig);
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?));
        Ok(Operator { child: cmd.spawn()?, log, metrics_addr: metrics_addr.to_string() })
    }

    /// [`Operator::start`] on the shared rig, watching `namespace` (ClusterSecretStores are still
    /// resolved).
    pub fn watching(exe: impl AsRef<Path>, namespace: &str, env: &[(&str, &str)]) -> anyhow::Result<Operator> {
        Self::start(exe, &Rig::get().kubeconfig, &["--namespace", namespace], env)
    }

    /// Its process id (what its leader-election identity ends with).
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

    /// SIGTERM; the exit status once it has exited (within [`WAIT`]).
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        self.wait_exit().await
    }

    /// The exit status once it has exited by itself (within [`WAIT`]).
    pub async fn wait_exit(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < WAIT {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("operator did not exit within {WAIT:?}")
    }

    /// Everything it has logged so far. Panics when the log cannot be read: an empty stand-in would
    /// let every "the log holds no ..." assertion pass.
    pub fn logs(&self) -> String {
        match std::fs::read_to_string(&self.log) {
            Ok(log) => log,
            Err(e) => panic!("cannot read the operator log {}: {e}", self.log.display()),
        }
    }

    /// A GET from its admin server.
    pub fn get(&self, path: &str) -> anyhow::Result<Response> {
        http::get(&self.metrics_addr, path)
    }

    /// Its `/metrics`, parsed.
    pub fn metrics(&self) -> anyhow::Result<Metrics> {
        Ok(Metrics::parse(self.get("/metrics")?.success()?))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
