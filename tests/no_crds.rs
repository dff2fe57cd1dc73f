//! `lockstep run` on a cluster without the CRDs stops at once with a message that says what to do.
//! Its own test binary, so its rig has never seen the CRDs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn run_fails_fast_without_crds() -> anyhow::Result<()> {
    let rig = lockstep_rig::Rig::get();
    let log = rig.dir.join("no-crds.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["run", "--metrics-addr", "127.0.0.1:0"])
        .env_clear()
        .env("KUBECONFIG", &rig.kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log)?))
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("lockstep run kept running without CRDs");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = std::fs::read_to_string(&log)?;
    assert!(!status.success());
    assert!(err.contains("CRDs are not installed") && err.contains("kubectl apply --server-side -f crds/"), "{err}");
    Ok(())
}
