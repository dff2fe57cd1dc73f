//! The rig itself: each API answers for real, and RBAC is on.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use lockstep_rig::Rig;

#[tokio::test]
async fn secret_round_trips_through_the_apiserver() -> anyhow::Result<()> {
    let env = Rig::get().test_env("smoke").await?;
    let api = Api::<Secret>::namespaced(env.kube.clone(), &env.ns);
    let mut s = Secret::default();
    s.metadata.name = Some("round-trip".into());
    s.data = Some([("k".to_string(), ByteString(b"v".to_vec()))].into());
    api.create(&PostParams::default(), &s).await?;
    let back = api.get("round-trip").await?;
    assert_eq!(back.data.and_then(|d| d.get("k").cloned()), Some(ByteString(b"v".to_vec())));
    Ok(())
}

#[tokio::test]
async fn apiserver_reports_the_pinned_release() -> anyhow::Result<()> {
    let kube = Rig::get().kube().await?;
    let v = kube.apiserver_version().await?;
    assert_eq!(v.major, "1");
    assert_eq!(v.minor, "37");
    assert!(v.git_version.starts_with("v1.37."), "{}", v.git_version);
    Ok(())
}

#[tokio::test]
async fn secret_round_trips_through_the_emulator() -> anyhow::Result<()> {
    let env = Rig::get().test_env("smoke").await?;
    let name = format!("{}/db", env.ns);
    env.aws.create_secret().name(&name).secret_string(r#"{"password":"p"}"#).send().await?;
    let out = env.aws.get_secret_value().secret_id(&name).version_stage("AWSCURRENT").send().await?;
    assert_eq!(out.secret_string(), Some(r#"{"password":"p"}"#));
    assert!(out.version_id().is_some());
    Ok(())
}

#[tokio::test]
async fn rbac_denies_an_unprivileged_user() -> anyhow::Result<()> {
    let rig = Rig::get();
    let env = rig.test_env("smoke").await?;
    let nobody = rig.kube_with_token(&rig.nobody_token()?).await?;
    let err = Api::<Secret>::namespaced(nobody, &env.ns).list(&Default::default()).await.err();
    match err {
        Some(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn recorder_counts_calls_on_a_dedicated_emulator() -> anyhow::Result<()> {
    let emu = lockstep_rig::Emulator::dedicated()?;
    let aws = emu.client();
    emu.start_recording()?;
    aws.create_secret().name("counted").secret_string("x").send().await?;
    for _ in 0..3 {
        aws.get_secret_value().secret_id("counted").version_stage("AWSCURRENT").send().await?;
    }
    let calls = emu.stop_recording()?;
    assert_eq!(calls.get("GetSecretValue"), Some(&3), "{calls:?}");
    assert_eq!(calls.get("CreateSecret"), Some(&1), "{calls:?}");
    Ok(())
}

/// Every address a Service gets on the rig is loopback, so a client that dials one (a pod left
/// with the kubelet's `KUBERNETES_SERVICE_HOST`) is refused on 127.0.1.x and never reaches a
/// private address.
#[tokio::test]
async fn service_addresses_are_loopback() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Service;
    let env = Rig::get().test_env("smoke").await?;
    let default = Api::<Service>::namespaced(env.kube.clone(), "default").get("kubernetes").await?;
    env.apply(serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "none"}}}))
        .await?;
    let ours = Api::<Service>::namespaced(env.kube.clone(), &env.ns).get("svc").await?;
    for svc in [default, ours] {
        let ip: std::net::IpAddr = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default().parse()?;
        assert!(ip.is_loopback(), "a Service address off loopback: {ip}");
    }
    Ok(())
}
