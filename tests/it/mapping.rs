//! Secret mapping beyond one key: templates, Secret types, dataFrom.find with rewrite, decoding.

use std::time::Duration;

use base64::Engine;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use lockstep::api::ExternalSecret;
use lockstep_rig::{Emulator, Rig};
use serde_json::json;

use crate::common::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn postgres_url_from_three_keys_and_templated_labels() -> anyhow::Result<()> {
    let w = World::new("tmpl").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    let db = w.create_aws("db", r#"{"username":"app","host":"db.internal"}"#).await?;
    let pw = w.create_aws("pw", &b64("s3cret-pw")).await?;
    w.external_secret(
        "pg",
        es("aws")
            .refresh("1s")
            .template(json!({
                "metadata": {"labels": {"db-host": "{{ .host }}"}},
                "data": {
                    "url": "postgres://{{ .user }}:{{ .password }}@{{ .host }}:5432/app",
                    "{{ .user }}.host": "{{ index . \"host\" | upper }}"
                }
            }))
            .property("user", &db, "username")
            .property("host", &db, "host")
            .remote("password", json!({"key": pw, "decodingStrategy": "Base64"})),
    )
    .await?;
    w.wait_reason("pg", "SecretSynced").await?;
    let s = w.wait_value("pg", "url", "postgres://app:s3cret-pw@db.internal:5432/app").await?;
    assert_eq!(s.data.as_ref().map(|d| d.len()), Some(2), "mergePolicy Replace keeps only the template's keys");
    assert_eq!(text(&s, "app.host"), "DB.INTERNAL", "a templated key renders over the same data");
    assert_eq!(s.labels().get("db-host").map(String::as_str), Some("db.internal"));

    // A rotation of one input reaches the rendered key.
    w.env.aws.put_secret_value().secret_id(&pw).secret_string(b64("pw-2")).send().await?;
    w.wait_value("pg", "url", "postgres://app:pw-2@db.internal:5432/app").await?;
    Ok(())
}

#[tokio::test]
async fn dockerconfigjson_from_username_and_password_and_type_checks() -> anyhow::Result<()> {
    let w = World::new("dockercfg").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    let reg = w.create_aws("registry", r#"{"username":"robot","password":"tok3n"}"#).await?;
    w.external_secret(
        "pull",
        es("aws")
            .refresh("0")
            .template(json!({
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": r#"{"auths":{"registry.example.com":{"username":"{{ .username }}","password":"{{ .password }}","auth":"{{ printf "%s:%s" .username .password | b64enc }}"}}}"#}
            }))
            .extract(&reg),
    )
    .await?;
    w.wait_reason("pull", "SecretSynced").await?;
    let s = w.secrets().get("pull").await?;
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    let cfg: serde_json::Value = serde_json::from_str(&text(&s, ".dockerconfigjson"))?;
    assert_eq!(cfg["auths"]["registry.example.com"]["auth"], b64("robot:tok3n"));

    // A typed Secret without its required keys: a clear condition, nothing written.
    w.external_secret(
        "tls",
        es("aws").refresh("0").template(json!({"type": "kubernetes.io/tls"})).property("tls.crt", &reg, "username"),
    )
    .await?;
    let msg = w.wait_reason("tls", "InvalidTemplate").await?;
    assert!(msg.contains("kubernetes.io/tls") && msg.contains("missing tls.key"), "{msg}");
    assert!(w.secrets().get_opt("tls").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn find_by_tag_picks_up_new_secrets_with_few_calls() -> anyhow::Result<()> {
    let emu = Emulator::dedicated()?;
    let aws = emu.client();
    let tag = |team: &str| aws_sdk_secretsmanager::types::Tag::builder().key("team").value(team).build();
    for (name, team) in [("app/db", "a"), ("app/api", "a"), ("app/other-team", "b"), ("elsewhere/x", "a")] {
        aws.create_secret().name(name).secret_string(format!("v-{name}")).tags(tag(team)).send().await?;
    }
    let w = World::new("find").await?;
    w.store(secret_store("aws", &emu.endpoint)).await?;
    w.external_secret(
        "found",
        es("aws").refresh("1s").data_from(json!({"find": {"path": "app/", "tags": {"team": "a"}},
                                                 "rewrite": [{"regexp": {"source": "^app/", "target": ""}}]})),
    )
    .await?;
    w.wait_reason("found", "SecretSynced").await?;
    let s = w.wait_value("found", "db", "v-app/db").await?;
    assert_eq!(text(&s, "api"), "v-app/api");
    assert_eq!(s.data.as_ref().map(|d| d.len()), Some(2), "other team and other path are not selected");
    let found = w.api::<ExternalSecret>().get("found").await?;
    assert_eq!(found.status.map(|s| s.sources.len()), Some(2));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Steady state: listed every refresh, no value fetched.
    emu.start_recording()?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let steady = emu.recorded()?;
    assert!(steady.get("ListSecrets").copied().unwrap_or(0) >= 2, "find is listed each refresh: {steady:?}");
    assert_eq!(steady.get("BatchGetSecretValue"), None, "unchanged values are not fetched: {steady:?}");
    assert_eq!(steady.get("GetSecretValue"), None, "{steady:?}");

    // A matching secret created after the first sync is picked up, with one value call.
    emu.start_recording()?;
    aws.create_secret().name("app/cache").secret_string("v-app/cache").tags(tag("a")).send().await?;
    w.wait_value("found", "cache", "v-app/cache").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = emu.stop_recording()?;
    // The two held values are confirmed by the listing; the new one alone is one call.
    let value_calls = ["BatchGetSecretValue", "GetSecretValue"].iter().filter_map(|op| calls.get(*op)).sum::<usize>();
    assert_eq!(value_calls, 1, "{calls:?}");
    let metrics = w.operator.metrics()?;
    let metrics = metrics.text();
    assert!(metrics.contains("operation=\"BatchGetSecretValue\",outcome=\"success\""), "{metrics}");
    assert!(!metrics.contains("v-app"));
    Ok(())
}

#[tokio::test]
async fn rewrite_collision_is_a_condition_and_keeps_the_secret() -> anyhow::Result<()> {
    let w = World::new("collide").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    let a = w.create_aws("a/token", "first-value").await?;
    w.external_secret(
        "keys",
        es("aws").refresh("1s").data_from(json!({"find": {"path": format!("{}/", w.ns())},
                                                 "rewrite": [{"regexp": {"source": ".*/", "target": ""}}]})),
    )
    .await?;
    w.wait_reason("keys", "SecretSynced").await?;
    let before = w.wait_value("keys", "token", "first-value").await?;

    let b = w.create_aws("b/token", "second-value").await?;
    let msg = w.wait_reason("keys", "KeyConflict").await?;
    assert!(msg.contains(&format!("{a:?}")) && msg.contains(&format!("{b:?}")) && msg.contains("\"token\""), "{msg}");
    assert!(!msg.contains("first-value") && !msg.contains("second-value"), "no value in the message: {msg}");
    let after = w.secrets().get("keys").await?;
    assert_eq!(after.data, before.data, "the existing Secret is untouched");
    assert_eq!(after.resource_version(), before.resource_version());
    Ok(())
}

#[tokio::test]
async fn template_syntax_error_names_the_line_and_keeps_the_secret() -> anyhow::Result<()> {
    let w = World::new("tmplerr").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    let key = w.create_aws("creds", r#"{"user":"app","password":"sentinel-Pw9"}"#).await?;
    let spec = |template: &str| es("aws").refresh("1s").template(json!({"data": {"conf": template}})).extract(&key);
    w.external_secret("conf", spec("user={{ .user }}\npassword={{ .password }}\n")).await?;
    w.wait_reason("conf", "SecretSynced").await?;
    let before = w.wait_value("conf", "conf", "user=app\npassword=sentinel-Pw9\n").await?;

    w.external_secret("conf", spec("user={{ .user }}\npassword={{ .password }\n")).await?;
    let msg = w.wait_reason("conf", "InvalidTemplate").await?;
    assert!(msg.contains("data[\"conf\"] line 2: "), "{msg}");
    assert!(!msg.contains("sentinel"), "{msg}");

    w.external_secret("conf", spec("{{ .password | fromJson }}")).await?;
    let msg = w.wait_reason("conf", "InvalidTemplate").await?;
    assert!(msg.contains("fromJson") && !msg.contains("sentinel"), "{msg}");
    let after = w.secrets().get("conf").await?;
    assert_eq!(after.data, before.data, "the existing Secret is untouched");
    assert!(!w.operator.logs().contains("sentinel"), "no value in the logs");
    Ok(())
}

#[tokio::test]
async fn decoding_and_key_conversion() -> anyhow::Result<()> {
    let w = World::new("decode").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    let bin = w.create_aws("bin", "AP+A/w==").await?;
    let url = w.create_aws("url", "AP-A_w").await?;
    let auto = w.create_aws("auto", "plain text!").await?;
    let json_key = w.create_aws("json", &format!(r#"{{"a/b":"{}"}}"#, b64("decoded"))).await?;
    w.external_secret(
        "dec",
        es("aws")
            .refresh("0")
            .remote("bin", json!({"key": bin, "decodingStrategy": "Base64"}))
            .remote("url", json!({"key": url, "decodingStrategy": "Base64URL"}))
            .remote("auto", json!({"key": auto, "decodingStrategy": "Auto"}))
            .data_from(
                json!({"extract": {"key": json_key, "decodingStrategy": "Base64", "conversionStrategy": "Unicode"}}),
            ),
    )
    .await?;
    w.wait_reason("dec", "SecretSynced").await?;
    let s = w.secrets().get("dec").await?;
    let data = s.data.clone().expect("the Secret has data");
    assert_eq!(data["bin"].0, vec![0u8, 255, 128, 255]);
    assert_eq!(data["url"].0, vec![0u8, 255, 128, 255]);
    assert_eq!(text(&s, "auto"), "plain text!");
    assert_eq!(text(&s, "a_U002f_b"), "decoded");

    // A value that is not base64 under Base64: a clear condition without the value.
    let base64_auto = es("aws").remote("auto", json!({"key": auto, "decodingStrategy": "Base64"}));
    let patch = json!({"spec": serde_json::Value::from(base64_auto)});
    w.api::<ExternalSecret>().patch("dec", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let msg = w.wait_reason("dec", "InvalidValue").await?;
    assert!(msg.contains("not valid base64") && !msg.contains("plain text"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn admission_rejects_invalid_mapping_specs() -> anyhow::Result<()> {
    let env = Rig::get().test_env("admission-map").await?;
    install_crds(&env.kube).await?;
    let cases = [
        (es("s").data_from(json!({"extract": {"key": "a"}, "find": {"path": "p/"}})), "exactly one of extract or find"),
        (es("s").data_from(json!({"find": {}})), "find needs at least one of path, name.regexp or tags"),
        (
            es("s").template(json!({"data": {"bad key": "x"}})).key("k", "a"),
            "template.data keys must be valid Secret keys",
        ),
        (es("s").remote("k", json!({"key": "a", "decodingStrategy": "Hex"})), "Unsupported value: \\\"Hex\\\""),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let err =
            env.rejection(spec.manifest(&format!("bad-{i}"))).await.map_err(|e| anyhow::anyhow!("case {i}: {e}"))?;
        assert!(err.contains(want), "case {i}: want {want:?} in {err:?}");
    }
    Ok(())
}

#[tokio::test]
async fn batch_get_chunks_by_20_and_answers_per_id() -> anyhow::Result<()> {
    use lockstep::aws::{Calls, StaticKeys, StoreConfig};
    let emu = Emulator::dedicated()?;
    let aws = emu.client();
    let mut ids = Vec::new();
    for i in 0..44 {
        let name = format!("batch/{i:02}");
        aws.create_secret().name(&name).secret_string(format!("value-{i}")).send().await?;
        ids.push(name);
    }
    ids.insert(7, "batch/missing".to_string());
    ids.insert(9, "batch/03".to_string());
    let keys = StaticKeys { access_key_id: "testing".into(), secret_access_key: "testing".into(), session_token: None };
    let cfg = StoreConfig {
        region: "us-east-1".into(),
        endpoint: Some(emu.endpoint.clone()),
        sts_endpoint: None,
        role: None,
        external_id: None,
        additional_roles: Vec::new(),
        session_tags: Vec::new(),
        transitive_tag_keys: Vec::new(),
        keys: Some(keys),
        service_account: None,
        session_name: "lockstep-test".into(),
        events: None,
    };
    let metrics = std::sync::Arc::new(lockstep::metrics::Metrics::default());
    let client = lockstep::aws::build(
        &cfg,
        Calls::new(metrics.clone(), "test/store".into(), 100.0, 10),
        std::sync::Arc::new(lockstep::aws::NoTokens),
    )
    .await;

    emu.start_recording()?;
    let results = client.batch_get(&ids).await;
    let calls = emu.stop_recording()?;
    assert_eq!(calls.get("BatchGetSecretValue"), Some(&3), "46 ids are 3 calls of at most 20: {calls:?}");
    assert_eq!(results.len(), ids.len());
    for (id, r) in ids.iter().zip(&results) {
        match (id.as_str(), r) {
            ("batch/missing", Err(e)) => assert_eq!(e.reason().as_str(), "SecretNotFound", "{e}"),
            (id, Ok(f)) => {
                let want = format!("value-{}", id.trim_start_matches("batch/").trim_start_matches('0'));
                let want = if want == "value-" { "value-0".to_string() } else { want };
                assert_eq!(f.payload.bytes().expose(), want.as_bytes(), "{id}");
                assert!(!f.version_id.is_empty());
            }
            (id, r) => panic!("{id}: unexpected {r:?}"),
        }
    }
    let text = metrics.encode();
    assert!(text.contains("operation=\"BatchGetSecretValue\",outcome=\"success\"} 3"), "{text}");
    Ok(())
}

#[tokio::test]
async fn examples_are_accepted_by_the_apiserver() -> anyhow::Result<()> {
    let env = Rig::get().test_env("examples").await?;
    install_crds(&env.kube).await?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut applied = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut obj: serde_json::Value = serde::Deserialize::deserialize(doc)?;
            if !["ExternalSecret", "SecretStore", "ClusterSecretStore", "ClusterExternalSecret"]
                .contains(&obj["kind"].as_str().unwrap_or_default())
            {
                continue;
            }
            // Into the test's namespace (examples name theirs, e.g. team-a); a ClusterExternalSecret
            // cluster-wide (no operator on the shared rig watches every namespace).
            if let Some(meta) = obj["metadata"].as_object_mut() {
                meta.remove("namespace");
            }
            env.apply(obj).await.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            applied += 1;
        }
    }
    assert!(applied >= 12, "{applied}");
    Ok(())
}

/// templateFrom a ConfigMap: rendered into the Secret, and an edit of the ConfigMap renders again
/// at once (refreshInterval 1h) without fetching from AWS; a Secret holding templates the same; a
/// ConfigMap that goes away is InvalidTemplate and the Secret stays as it was.
#[tokio::test]
async fn template_from_a_config_map_renders_and_follows_its_edits_without_fetching() -> anyhow::Result<()> {
    let emu = Emulator::dedicated()?;
    let w = World::new("template-from").await?;
    let key = format!("{}/db", w.ns());
    emu.client().create_secret().name(&key).secret_string(r#"{"user":"app","password":"pw-1"}"#).send().await?;
    w.store(secret_store("aws", &emu.endpoint)).await?;
    let config_map = |config: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tpl"},
            "data": {"config.yaml": config, "env": "DB_USER: {{ .user }}\n"}})
    };
    w.apply(config_map("user: {{ .user }}")).await?;
    w.apply(secret("held", json!({"token": "token={{ .password }}"}))).await?;
    let template = json!({"templateFrom": [
        {"configMap": {"name": "tpl", "items": [{"key": "config.yaml"}, {"key": "env", "templateAs": "KeysAndValues"}]}},
        {"secret": {"name": "held", "items": [{"key": "token"}]}}]});
    let spec = es("aws").refresh("1h").property("user", &key, "user").property("password", &key, "password");
    w.external_secret("es", spec.template(template)).await?;
    w.wait_value("es", "config.yaml", "user: app").await?;
    w.wait_value("es", "DB_USER", "app").await?;
    w.wait_value("es", "token", "token=pw-1").await?;

    emu.start_recording()?;
    w.apply(config_map("user={{ .user | upper }}")).await?;
    w.wait_value_within(Duration::from_secs(20), "es", "config.yaml", "user=APP").await?;
    w.apply(secret("held", json!({"token": "t:{{ .password }}"}))).await?;
    w.wait_value_within(Duration::from_secs(20), "es", "token", "t:pw-1").await?;
    let calls = emu.stop_recording()?;
    assert_eq!(
        calls.get("GetSecretValue").copied().unwrap_or(0) + calls.get("BatchGetSecretValue").copied().unwrap_or(0),
        0,
        "a template edit fetches nothing: {calls:?}"
    );

    kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(w.env.kube.clone(), w.ns())
        .delete("tpl", &Default::default())
        .await?;
    let message = w.wait_reason("es", "InvalidTemplate").await?;
    assert!(message.contains("ConfigMap \"tpl\" not found"), "{message}");
    assert_eq!(text(&w.secrets().get("es").await?, "config.yaml"), "user=APP", "the Secret stays as it was");
    Ok(())
}
