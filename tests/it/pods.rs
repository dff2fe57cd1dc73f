//! Real pods on the rig's node: a pod reading a synced Secret as a file sees a rotation, and a
//! Deployment reading it as environment variables, named in `rolloutRestartTargets`, is rolled out
//! once by the real deployment controller and runs the new value. Every pod uses
//! `hostNetwork: true` (no pod network; nothing leaves 127.0.0.1).

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
    w.store(secret_store("aws", &emu.endpoint)).await?;
    w.external_secret("api", es("aws").refresh("1s").restart("Deployment", "api").key("TOKEN", &src)).await?;
    w.wait_value("api", "TOKEN", "v1").await?;

    let mut container = printer("$TOKEN");
    container["env"] = json!([{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "TOKEN"}}}]);
    w.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}}, "spec": pod_spec(container, json!([]))}}}))
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
        .await?;
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
