//! Real pods on the rig's node: the chart's operator as a pod, a pod reading a synced Secret as a
//! file sees a rotation, and a Deployment reading it as environment variables, named in
//! `rolloutRestartTargets`, is rolled out once by the real deployment controller and runs the new
//! value. Every pod uses `hostNetwork: true` (no pod network; nothing leaves 127.0.0.1).
//!
//! A test binary of its own: the node runs the deployment controller, which would also act on the
//! Deployments other tests use as bare restart targets (no pods, resource versions compared).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "it/common.rs"]
#[allow(dead_code)] // the helpers the other test binary uses too
mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use lockstep_rig::node::{BUSYBOX, Node};
use lockstep_rig::{Emulator, Rig};
use serde_json::{Value, json};

use crate::common::*;

/// How long a pod may take to show a value: the kubelet's `syncFrequency` on the rig is 5 s.
const POD_WAIT: Duration = Duration::from_secs(90);

/// A busybox container that prints `script`'s output every half second, and stops at once on
/// SIGTERM.
fn printer(script: &str) -> Value {
    json!({"name": "c", "image": BUSYBOX, "imagePullPolicy": "Never",
        "command": ["sh", "-c", format!("trap 'exit 0' TERM; while true; do echo \"{script}\"; sleep 0.5; done")]})
}

fn pod_spec(container: Value, volumes: Value) -> Value {
    json!({"hostNetwork": true, "terminationGracePeriodSeconds": 1, "containers": [container], "volumes": volumes})
}

/// The last line pod `name`'s container printed.
fn last_line(node: &Node, ns: &str, pod: &str) -> Option<String> {
    node.logs(ns, pod, "c").lines().last().map(str::to_string)
}

#[tokio::test]
async fn a_pod_mounting_the_secret_reads_the_rotated_value_from_its_file() -> anyhow::Result<()> {
    let node = Node::get();
    let w = World::new("pod-file").await?;
    let src = w.create_aws("db", "v1").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    w.external_secret("db", es("aws").refresh("1s").key("password", &src)).await?;
    w.wait_value("db", "password", "v1").await?;

    let mut container = printer("$(cat /secret/password)");
    container["volumeMounts"] = json!([{"name": "db", "mountPath": "/secret", "readOnly": true}]);
    w.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"},
        "spec": pod_spec(container, json!([{"name": "db", "secret": {"secretName": "db"}}]))}))
        .await?;
    let ns = w.ns().to_string();
    w.eventually_within(POD_WAIT, "the pod printing v1", || {
        let line = last_line(node, &ns, "reader");
        async move { (line? == "v1").then_some(()) }
    })
    .await?;

    let t0 = Instant::now();
    w.env.aws.put_secret_value().secret_id(&src).secret_string("v2").send().await?;
    w.wait_value("db", "password", "v2").await?;
    let to_secret = t0.elapsed();
    w.eventually_within(POD_WAIT, "the pod's file holding v2", || {
        let line = last_line(node, &ns, "reader");
        async move { (line? == "v2").then_some(()) }
    })
    .await?;
    eprintln!(
        "pods: rotation -> Secret {:.1}s, -> file in the pod {:.1}s",
        to_secret.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::test]
async fn a_deployment_reading_env_vars_is_rolled_out_once_and_its_new_pods_print_the_new_value() -> anyhow::Result<()> {
    let node = Node::get();
    let emu = Emulator::dedicated()?;
    let w = World::with_env("pod-env", &[("LOCKSTEP_RESTART_DEBOUNCE_SECONDS", "1")]).await?;
    let aws = emu.client();
    let src = w.aws_name("api");
    aws.create_secret().name(&src).secret_string("v1").send().await?;

    let mut container = printer("$TOKEN");
    container["env"] = json!([{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "TOKEN"}}}]);
    w.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}}, "spec": pod_spec(container, json!([]))}}}))
        .await?;
    // The Deployment is there before the ExternalSecret's first sync, which records the data its
    // pods run with (no restart on a first sync).
    w.store(secret_store("aws", &emu.endpoint)).await?;
    w.external_secret("api", es("aws").refresh("1s").restart("Deployment", "api").key("TOKEN", &src)).await?;
    w.wait_value("api", "TOKEN", "v1").await?;
    let deployments = w.api::<k8s_openapi::api::apps::v1::Deployment>();
    w.eventually("the operator recording the data the pods run with", || {
        let deployments = deployments.clone();
        async move { deployments.get("api").await.ok()?.metadata.annotations?.get("lockstep.dev/restarted-for").map(drop) }
    })
    .await?;
    let ns = w.ns().to_string();
    let pods = w.api::<Pod>();
    // The names of the running pods of the Deployment, and what each printed last.
    let running = || {
        let pods = pods.clone();
        let ns = ns.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=api")).await.ok()?;
            let out: Vec<(String, Option<String>)> = list
                .into_iter()
                .map(|p| {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let line = last_line(node, &ns, &name);
                    (name, line)
                })
                .collect();
            Some(out)
        }
    };
    let first = w
        .eventually_within(POD_WAIT, "two pods printing v1", || {
            let running = running();
            async move {
                let pods = running.await?;
                (pods.len() == 2 && pods.iter().all(|(_, l)| l.as_deref() == Some("v1"))).then_some(pods)
            }
        })
        .await?;

    let t0 = Instant::now();
    aws.put_secret_value().secret_id(&src).secret_string("v2").send().await?;
    let second = w
        .eventually_within(POD_WAIT, "two new pods printing v2, the old ones gone", || {
            let running = running();
            async move {
                let pods = running.await?;
                (pods.len() == 2 && pods.iter().all(|(_, l)| l.as_deref() == Some("v2"))).then_some(pods)
            }
        })
        .await;
    let second = match second {
        Ok(pods) => pods,
        Err(e) => {
            let now = running().await;
            let d = w.api::<k8s_openapi::api::apps::v1::Deployment>().get("api").await?;
            anyhow::bail!("{e}\npods now: {now:?}\ndeployment: {:?}\n{:?}", d.metadata.annotations, d.status);
        }
    };
    eprintln!("pods: rotation -> new pods of the Deployment printing it {:.1}s", t0.elapsed().as_secs_f64());
    for (name, _) in &first {
        assert!(!second.iter().any(|(n, _)| n == name), "old pod {name} is gone: {second:?}");
    }
    // Exactly one rollout: the first ReplicaSet and one more, and it stays so.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sets = w.api::<ReplicaSet>().list(&ListParams::default().labels("app=api")).await?;
    assert_eq!(
        sets.items.len(),
        2,
        "one rollout, so two ReplicaSets: {:?}",
        sets.items.iter().map(|r| &r.metadata.name).collect::<Vec<_>>()
    );
    Ok(())
}

/// Run a tool of `.tools/bin` (helm with its caches in the rig's folder); its stdout.
fn tool(name: &str, args: &[&str]) -> anyhow::Result<String> {
    let home = Rig::get().dir.join("helm-home");
    let out = std::process::Command::new(lockstep_rig::tools_dir().join("bin").join(name))
        .args(args)
        .env("HOME", &home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(
        out.status.success(),
        "{name} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// The host process of the container of pod `uid` whose command line starts with `exe`.
fn container_pid(uid: &str, exe: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
        let cgroup = std::fs::read_to_string(p.path().join("cgroup")).ok()?;
        (cmdline.starts_with(exe.as_bytes()) && cgroup.contains(uid)).then_some(pid)
    })
}

/// Every TCP socket process `pid` holds: (local, remote) addresses as the kernel lists them in hex
/// (`0100007F:1F90`, IPv4 in network order; IPv6 in four words).
fn tcp_sockets(pid: u32) -> anyhow::Result<Vec<(String, String)>> {
    let mut inodes = std::collections::BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        if let Some(inode) = std::fs::read_link(fd.path())
            .ok()
            .and_then(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        {
            inodes.insert(inode);
        }
    }
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        for line in std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && inodes.contains(f[9]) {
                out.push((f[1].to_string(), f[2].to_string()));
            }
        }
    }
    Ok(out)
}

/// Whether a hex socket address of /proc/net/tcp* is on 127.0.0.0/8 (or IPv4-mapped loopback).
fn loopback(addr: &str) -> bool {
    let ip = addr.split(':').next().unwrap_or_default();
    match ip.len() {
        8 => ip.ends_with("7F"),
        32 => ip.starts_with("0000000000000000FFFF0000") && ip.ends_with("7F"),
        _ => false,
    }
}

#[tokio::test]
async fn the_helm_installed_operator_runs_as_a_hardened_pod_and_syncs_on_loopback() -> anyhow::Result<()> {
    let node = Node::get();
    let image = node.import_operator(std::path::Path::new(LOCKSTEP))?;
    let (repository, tag) = image.rsplit_once(':').expect("an image reference with a tag");
    let rig = Rig::get();
    let env = rig.test_env("helm-pod").await?;
    install_crds(&env.kube).await?;
    let ns = env.ns.clone();
    let server = std::fs::read_to_string(&rig.kubeconfig)?;
    let api_port = server
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
        .expect("the rig's apiserver on 127.0.0.1")
        .trim()
        .to_string();
    // The pod shares the node's network: a port of its own for the admin server.
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port().to_string();
    let release = format!("lockstep-{}", lockstep_rig::unique());
    let kubeconfig = rig.kubeconfig.to_str().expect("a UTF-8 path").to_string();
    let sets = [
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
        "image.pullPolicy=Never".to_string(),
        "hostNetwork=true".to_string(),
        "metrics.bindAddress=127.0.0.1".to_string(),
        format!("metrics.port={metrics_port}"),
        "metrics.service.enabled=false".to_string(),
        format!("scope.namespace={ns}"),
        "logFormat=text".to_string(),
        "extraEnv[0].name=KUBERNETES_SERVICE_HOST".to_string(),
        "extraEnv[0].value=127.0.0.1".to_string(),
        "extraEnv[1].name=KUBERNETES_SERVICE_PORT".to_string(),
        format!("extraEnv[1].value={api_port}"),
    ];
    let mut args = vec!["install", &release, "charts/lockstep", "--namespace", &ns, "--kubeconfig", &kubeconfig];
    let root = lockstep_rig::repo_root();
    let chart = root.join("charts/lockstep");
    let chart = chart.to_str().expect("a UTF-8 path");
    args[2] = chart;
    for s in &sets {
        // An environment variable's value is text, even when it is a port number.
        args.extend([if s.starts_with("extraEnv") { "--set-string" } else { "--set" }, s]);
    }
    tool("helm", &args)?;

    // Ready through the real /readyz probe.
    let pods = kube::Api::<Pod>::namespaced(env.kube.clone(), &ns);
    let t0 = Instant::now();
    let pod = lockstep_rig::eventually(POD_WAIT, "the operator pod Ready", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default()).await.ok()?;
            list.into_iter().find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
        }
    })
    .await?;
    eprintln!("pods: helm install -> operator pod Ready {:.1}s", t0.elapsed().as_secs_f64());
    let pod_name = pod.metadata.name.clone().expect("a pod name");
    let env_names_loopback = pod.spec.as_ref().expect("a pod spec").containers[0]
        .env
        .iter()
        .flatten()
        .any(|e| e.name == "KUBERNETES_SERVICE_HOST" && e.value.as_deref() == Some("127.0.0.1"));
    assert!(
        env_names_loopback,
        "the operator pod must name the apiserver on 127.0.0.1, never the `kubernetes` Service's ClusterIP"
    );

    // It syncs an ExternalSecret from the emulator on 127.0.0.1.
    let src = format!("{ns}/db");
    env.aws.create_secret().name(&src).secret_string("v1").send().await?;
    env.store(secret_store("aws", &rig.emulator.endpoint)).await?;
    env.apply(es("aws").refresh("1s").key("password", &src).manifest("db")).await?;
    let secrets = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.kube.clone(), &ns);
    let value = |v: &'static str| {
        let secrets = secrets.clone();
        move || {
            let secrets = secrets.clone();
            async move { (text(&secrets.get("db").await.ok()?, "password") == v).then_some(()) }
        }
    };
    lockstep_rig::eventually(WAIT, "the pod's operator syncing v1", value("v1")).await?;

    // The process: uid 65532, a read-only root, only the projected token mounted, loopback only.
    let uid = pod.metadata.uid.clone().expect("a pod uid");
    let pid = container_pid(&uid, "/usr/local/bin/lockstep").expect("the operator's process on the node");
    // What the process really has: the kubelet adds the `kubernetes` Service's ClusterIP to every
    // container (loopback, refused); the chart's env must win.
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    let host = environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"KUBERNETES_SERVICE_HOST="))
        .map(|v| String::from_utf8_lossy(v).to_string());
    assert_eq!(host.as_deref(), Some("127.0.0.1"), "the operator's apiserver address");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let uids = status.lines().find(|l| l.starts_with("Uid:")).expect("a Uid line");
    assert_eq!(uids.split_whitespace().skip(1).collect::<Vec<_>>(), ["65532"; 4], "runs as 65532: {uids}");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    let root_mount = mounts.lines().find(|l| l.split(' ').nth(4) == Some("/")).expect("a root mount");
    assert!(
        root_mount.split(' ').nth(5).is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "read-only root: {root_mount}"
    );
    let secret_mounts: Vec<&str> =
        mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with("/var/run/secrets")).collect();
    assert_eq!(secret_mounts, ["/var/run/secrets/kubernetes.io/serviceaccount"], "only the projected token");
    let sockets = tcp_sockets(pid)?;
    assert!(!sockets.is_empty(), "the operator holds connections (apiserver, listener)");
    for (local, remote) in &sockets {
        assert!(loopback(local), "a socket of the operator pod off loopback: {local} -> {remote}");
        assert!(
            remote.starts_with("00000000:") || remote.starts_with(&"0".repeat(32)) || loopback(remote),
            "a connection of the operator pod off loopback: {local} -> {remote}"
        );
    }

    // A rotation arrives; helm upgrade and uninstall leave the user's Secret where it is.
    env.aws.put_secret_value().secret_id(&src).secret_string("v2").send().await?;
    lockstep_rig::eventually(WAIT, "the pod's operator syncing v2", value("v2")).await?;
    let mut upgrade = args.clone();
    upgrade[0] = "upgrade";
    upgrade.extend(["--set", "logLevel=debug"]);
    tool("helm", &upgrade)?;
    tool("helm", &["uninstall", &release, "--namespace", &ns, "--kubeconfig", &kubeconfig, "--wait"])?;
    lockstep_rig::eventually(POD_WAIT, "the operator pod gone", || {
        let pods = pods.clone();
        let name = pod_name.clone();
        async move { pods.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await?;
    lockstep_rig::eventually(WAIT, "the Secret kept", value("v2")).await?;
    Ok(())
}

/// The value of Dockerfile instruction `name` in its final stage (after the last FROM).
fn final_stage(dockerfile: &str, name: &str) -> Option<String> {
    let last_from = dockerfile.rfind("\nFROM ")?;
    dockerfile[last_from..].lines().find_map(|l| l.strip_prefix(&format!("{name} ")).map(|v| v.trim().to_string()))
}

#[test]
fn the_rig_image_of_the_operator_agrees_with_the_dockerfile() -> anyhow::Result<()> {
    let root = lockstep_rig::repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile"))?;
    let dir = Rig::get().dir.join(format!("image-{}", lockstep_rig::unique()));
    let tar = dir.join("lockstep.tar");
    let built = std::process::Command::new("bash")
        .arg(root.join("tests/support/image.sh"))
        .args(["lockstep", tar.to_str().expect("a UTF-8 path"), "rig.local/lockstep:check", LOCKSTEP])
        .status()?;
    assert!(built.success(), "image.sh builds the operator's image");
    let read = |member: &str| -> anyhow::Result<String> {
        let out = std::process::Command::new("tar").arg("-xOf").arg(&tar).arg(member).output()?;
        Ok(String::from_utf8(out.stdout)?)
    };
    let manifest: Value = serde_json::from_str(&read("./manifest.json")?)?;
    let config: Value =
        serde_json::from_str(&read(&format!("./{}", manifest[0]["Config"].as_str().expect("a config")))?)?;
    let config = &config["config"];
    let user = final_stage(&dockerfile, "USER").expect("USER in the final stage");
    assert_eq!(config["User"], json!(user), "the same user");
    let entrypoint: Value = serde_json::from_str(&final_stage(&dockerfile, "ENTRYPOINT").expect("an ENTRYPOINT"))?;
    assert_eq!(config["Entrypoint"], entrypoint, "the same entrypoint");
    let cmd: Value = serde_json::from_str(&final_stage(&dockerfile, "CMD").expect("a CMD"))?;
    assert_eq!(config["Cmd"], cmd, "the same arguments");
    let copy = final_stage(&dockerfile, "COPY").expect("the binary's COPY");
    assert!(
        copy.ends_with(entrypoint[0].as_str().expect("a path")),
        "the binary where the entrypoint names it: {copy}"
    );
    // What the binary links against is what the final stage (distroless cc: glibc, libm, libgcc_s)
    // has, and what the rig's image copies from this machine.
    let ldd = std::process::Command::new("ldd").arg(LOCKSTEP).output()?;
    let libs: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|l| !l.starts_with("linux-vdso"))
        .collect();
    let distroless_cc = ["libc.so.6", "libm.so.6", "libgcc_s.so.1", "/lib64/ld-linux-x86-64.so.2"];
    for lib in &libs {
        assert!(distroless_cc.contains(&lib.as_str()), "the binary links {lib}, which distroless cc lacks");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
