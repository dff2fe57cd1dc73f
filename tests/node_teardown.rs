//! The rig's node leaves nothing behind: after a pod with a Secret volume ran, its teardown removes
//! every container, shim and containerd and kubelet process, every mount, the kubepods cgroups and
//! the files the kubelet keeps outside its folder, also when its folder is reached through a
//! symlink. A binary of its own: it owns its node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use lockstep_rig::node::{BUSYBOX, Node, leftovers};
use lockstep_rig::{Rig, eventually};
use serde_json::json;

#[tokio::test]
async fn a_node_leaves_nothing_behind() -> anyhow::Result<()> {
    // A node of another test binary that just ended may still be tearing down.
    let earlier = eventually(Duration::from_secs(30), "an earlier node's teardown", || async {
        leftovers().ok()?.is_empty().then_some(())
    })
    .await;
    assert!(earlier.is_ok(), "what an earlier node left behind: {}", leftovers()?);
    // Reached through a symlink, as `make dev-up`'s node is when `.tools` is a link: the kernel
    // names mounts and the shims' sockets by the physical path, and teardown must find them.
    let real = Rig::get().dir.join("node-real");
    std::fs::create_dir_all(&real)?;
    let link = Rig::get().dir.join("node-link");
    std::os::unix::fs::symlink(&real, &link)?;
    let node = Node::own(&link)?;
    let env = Rig::get().test_env("teardown").await?;
    env.apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}))
        .await?;
    env.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": BUSYBOX, "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", "cat /s/k; sleep 3600"],
                                 "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
                 "volumes": [{"name": "s", "secret": {"secretName": "s"}}]}}))
        .await?;
    let pods: Api<Pod> = Api::namespaced(env.kube.clone(), &env.ns);
    eventually(Duration::from_secs(90), "the pod running", || {
        let pods = pods.clone();
        async move { (pods.get("p").await.ok()?.status?.phase? == "Running").then_some(()) }
    })
    .await?;
    assert!(!leftovers()?.is_empty(), "a running node shows in the check (it looks at the right places)");
    let dir = real.canonicalize()?;
    drop(node);
    let left = eventually(Duration::from_secs(30), "the node's teardown", || async {
        let left = leftovers().ok()?;
        left.is_empty().then_some(())
    })
    .await;
    assert!(left.is_ok(), "after teardown: {}", leftovers()?);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(!mounts.contains(dir.to_str().expect("a UTF-8 path")), "no mount under {}", dir.display());
    Ok(())
}
