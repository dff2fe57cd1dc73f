//! A node on the rig: containerd, kubelet, kube-scheduler and the workload controllers
//! (`tests/support/node.sh`), started on the first test that needs pods and shared by the test
//! binary like the [`Rig`]. Tests that run no pod never start one.
//!
//! The node's script holds a pipe as stdin and tears everything down (containers, shims, mounts,
//! cgroups, the files the kubelet keeps outside its folder) when it closes, so a killed test
//! binary leaves nothing behind either. Pods run from images imported into containerd
//! (`rig.local/busybox:1`, and `rig.local/lockstep:dev` once [`Node::import_operator`] ran),
//! never pulled, and always with `hostNetwork: true`: there is no pod network, and every
//! connection stays on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::{Proc, Rig, repo_root, tools_dir};

/// The image test workloads run (busybox, from Debian's busybox-static).
pub const BUSYBOX: &str = "rig.local/busybox:1";

/// The operator's image, once [`Node::import_operator`] built it.
pub const OPERATOR_IMAGE: &str = "rig.local/lockstep:dev";

/// The node's name (the kubelet authenticates as `system:node:rig-node`).
pub const NODE_NAME: &str = "rig-node";

/// The node of this test binary.
pub struct Node {
    _proc: Mutex<Proc>,
    /// containerd's and the kubelet's folder (inside the rig's).
    pub dir: PathBuf,
    operator_image: Mutex<bool>,
}

static NODE: OnceLock<Node> = OnceLock::new();

impl Node {
    /// The node of this test binary, started (with the rig) on first use.
    pub fn get() -> &'static Node {
        NODE.get_or_init(|| match Node::start(Rig::get(), Rig::get().dir.join("node")) {
            Ok(node) => node,
            Err(e) => panic!("the rig's node did not start: {e:#}"),
        })
    }

    /// A node of the caller's own in `dir`, torn down when dropped (for a test that checks the
    /// teardown; a test binary runs one node at a time, so such a test lives in a binary of its own).
    pub fn own(dir: &Path) -> anyhow::Result<Node> {
        Node::start(Rig::get(), dir.to_path_buf())
    }

    fn start(rig: &Rig, dir: PathBuf) -> anyhow::Result<Node> {
        let t0 = Instant::now();
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("tests/support/node.sh"))
            .arg("up")
            .arg(&rig.dir)
            .arg(&dir)
            .env("LOCKSTEP_TOOLS", tools_dir());
        let (proc, _) = Proc::start(cmd, &rig.dir.join("node.log"), "the rig's node (tests/support/node.sh)")?;
        eprintln!("rig: node ready in {:.1}s (dir {})", t0.elapsed().as_secs_f64(), dir.display());
        Ok(Node { _proc: Mutex::new(proc), dir, operator_image: Mutex::new(false) })
    }

    /// Build the operator's image from `binary` (laid out as the Dockerfile's final stage) and
    /// import it, once per node.
    pub fn import_operator(&self, binary: &Path) -> anyhow::Result<&'static str> {
        let mut done = self.operator_image.lock().unwrap_or_else(|e| e.into_inner());
        if !*done {
            let tar = self.dir.join("images/lockstep.tar");
            let support = repo_root().join("tests/support");
            run(Command::new("bash")
                .arg(support.join("image.sh"))
                .arg("lockstep")
                .arg(&tar)
                .arg(OPERATOR_IMAGE)
                .arg(binary))?;
            run(Command::new("ctr")
                .arg("--address")
                .arg(self.dir.join("containerd.sock"))
                .args(["-n", "k8s.io", "images", "import"])
                .arg(&tar))?;
            *done = true;
        }
        Ok(OPERATOR_IMAGE)
    }

    /// What container `container` of pod `namespace/pod` has written to stdout and stderr so far,
    /// from the kubelet's log files (CRI format; the text only), across restarts.
    pub fn logs(&self, namespace: &str, pod: &str, container: &str) -> String {
        let prefix = format!("{namespace}_{pod}_");
        let mut out = String::new();
        let Ok(pods) = std::fs::read_dir(self.dir.join("pod-logs")) else {
            return out;
        };
        for p in pods.flatten().filter(|p| p.file_name().to_string_lossy().starts_with(&prefix)) {
            let Ok(files) = std::fs::read_dir(p.path().join(container)) else { continue };
            let mut files: Vec<_> = files.flatten().map(|f| f.path()).collect();
            files.sort();
            for f in files {
                for line in std::fs::read_to_string(&f).unwrap_or_default().lines() {
                    // `<time> <stream> <P|F> <text>`
                    if let Some(text) = line.splitn(4, ' ').nth(3) {
                        out.push_str(text);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

/// What a node leaves outside its folder that is still there (empty when teardown was clean):
/// kubepods cgroups, the kubelet's device-plugin socket, `/var/log/containers` links, mounts and
/// processes of rig folders.
pub fn leftovers() -> anyhow::Result<String> {
    let out = Command::new("bash").arg(repo_root().join("tests/support/node.sh")).arg("leftovers").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
