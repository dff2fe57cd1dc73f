//! Secret hygiene: at trace level, through sync, rotation, templates and every cheap failure path,
//! no secret value reaches the operator's log, Events, status or metrics.

use base64::Engine;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;
use lockstep_rig::{Fault, FaultProxy, Rig, eventually};
use serde_json::json;

use crate::common::*;

/// Carried by every secret value in this test.
const SENTINEL: &str = "SENTINEL-7f3a";

/// The forms `value` can take on the way out: as is (JSON escaping leaves it as is: it has no
/// character JSON escapes), and base64 at each of the three byte alignments (Secret data).
fn leak_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_string(), value.to_lowercase()];
    for pad in 0..3 {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{}{value}", "x".repeat(pad)));
        // Drop the groups that hold padding bytes or the partial end: what stays is in any encoding of
        // a value with `value` at that alignment.
        let start = if pad == 0 { 0 } else { 4 };
        forms.push(encoded[start..encoded.len() - 4].to_string());
    }
    forms
}

fn assert_clean(what: &str, text: &str) {
    assert_lacks(what, text, SENTINEL);
}

fn assert_lacks(what: &str, text: &str, value: &str) {
    for form in leak_forms(value) {
        assert!(!text.contains(&form), "{what} holds a secret value or credential (form {form:?})");
    }
}

/// The credentials moto's STS issued for AssumeRole of `role`: key id, secret key, session token.
fn assumed_credentials(role: &str) -> anyhow::Result<Vec<String>> {
    let state: serde_json::Value = serde_json::from_str(&Rig::get().emulator.moto_api("GET", "/moto-api/data.json")?)?;
    let issued = state["sts"]["AssumedRole"].as_array().cloned().unwrap_or_default();
    let fields = ["access_key_id", "secret_access_key", "session_token"];
    let ours = issued.iter().filter(|r| r["role_arn"] == role);
    let values: Vec<String> =
        ours.flat_map(|r| fields.map(|f| r[f].as_str().unwrap_or_default().to_string())).collect();
    anyhow::ensure!(
        !values.is_empty() && values.iter().all(|v| v.len() >= 16),
        "no credentials issued for {role}: {values:?}"
    );
    Ok(values)
}

fn es(store: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"secretStoreRef": {"name": store}, "refreshInterval": "1s", "data": data})
}

#[tokio::test]
async fn no_value_leaks_at_trace_level() -> anyhow::Result<()> {
    let rig = Rig::get();
    let env = rig.test_env("hygiene").await?;
    install_crds(&env.kube).await?;
    let ns = env.ns.clone();
    // LOG_SENSITIVE_BODIES=true makes the AWS SDK log response bodies (SecretString) at trace: the
    // operator must not, whatever its environment says.
    let args = ["--namespace", &ns, "--log-level", "trace"];
    let operator = Operator::start_with(&rig.kubeconfig, &args, &[("LOG_SENSITIVE_BODIES", "true")])?;
    let w = World { env, operator };
    // Credentials are values too: the key id, the secret key and the session token carry the sentinel
    // (moto takes any keys).
    w.apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sentinel-creds"},
        "stringData": {"id": format!("{SENTINEL}-akid"), "key": format!("{SENTINEL}-key"), "token": format!("{SENTINEL}-token")}}))
        .await?;
    let with_creds = json!({"auth": {"secretRef": {
        "accessKeyIDSecretRef": {"name": "sentinel-creds", "key": "id"},
        "secretAccessKeySecretRef": {"name": "sentinel-creds", "key": "key"},
        "sessionTokenSecretRef": {"name": "sentinel-creds", "key": "token"}}}});
    w.store("aws", &rig.emulator.endpoint, with_creds.clone()).await?;
    let proxy = FaultProxy::start(&rig.emulator.endpoint)?;
    w.store("proxied", &proxy.endpoint, with_creds.clone()).await?;
    // AssumeRole on top: the credentials STS issues must not show either.
    let role = format!("arn:aws:iam::123456789012:role/{ns}");
    let mut as_role = with_creds;
    as_role["role"] = json!(role);
    w.store("role", &rig.emulator.endpoint, as_role.clone()).await?;
    // A store watching one key polls it with DescribeSecret (more keys: ListSecrets).
    w.store("role-one", &rig.emulator.endpoint, as_role).await?;

    let pw1 = format!("{SENTINEL}-pw1");
    let db = w.create_aws("db", &json!({"user": format!("{SENTINEL}-user"), "password": pw1}).to_string()).await?;
    let plain = w.create_aws("plain", &format!("{SENTINEL}-not-json")).await?;
    let badkey = w.create_aws("badkey", &json!({"bad key!": format!("{SENTINEL}-k")}).to_string()).await?;
    w.plain_secret("taken", &[("theirs", &format!("{SENTINEL}-theirs"))]).await?;

    // Sync, template, rotation.
    let good = json!([
        {"secretKey": "password", "remoteRef": {"key": db, "property": "password"}},
        {"secretKey": "whole", "remoteRef": {"key": db}}
    ]);
    w.external_secret("sync", es("aws", good.clone())).await?;
    let mut tpl = es("aws", json!([{"secretKey": "password", "remoteRef": {"key": db, "property": "password"}}]));
    tpl["target"] = json!({"template": {"data": {"dsn": "p={{ password }}"}}});
    w.external_secret("tpl", tpl).await?;
    w.wait_value("sync", "password", &pw1).await?;
    w.wait_value("tpl", "dsn", &format!("p={pw1}")).await?;
    // Through the assumed role, every AWS call: BatchGetSecretValue (two AWSCURRENT values at once),
    // GetSecretValue (AWSPREVIOUS), ListSecrets (find), DescribeSecret (polling role-one), GetCallerIdentity
    // (the store check) and AssumeRole.
    w.create_aws("found/x", &format!("{SENTINEL}-found")).await?;
    let by_role = |data| json!({"secretStoreRef": {"name": "role"}, "refreshInterval": "1s", "data": data});
    w.external_secret(
        "role-current",
        by_role(json!([
            {"secretKey": "password", "remoteRef": {"key": db, "property": "password"}},
            {"secretKey": "plain", "remoteRef": {"key": plain}}
        ])),
    )
    .await?;
    let mut found = by_role(json!([]));
    found["dataFrom"] =
        json!([{"find": {"path": format!("{ns}/found/")}, "rewrite": [{"regexp": {"source": ".*/", "target": ""}}]}]);
    w.external_secret("role-find", found).await?;
    w.wait_reason("role-current", "SecretSynced").await?;
    w.wait_reason("role-find", "SecretSynced").await?;
    let pw2 = format!("{SENTINEL}-pw2");
    let rotated = json!({"user": format!("{SENTINEL}-user"), "password": pw2}).to_string();
    w.env.aws.put_secret_value().secret_id(&db).secret_string(rotated).send().await?;
    w.wait_value("sync", "password", &pw2).await?;
    let previous = json!([{"secretKey": "password", "remoteRef": {"key": db, "versionStage": "AWSPREVIOUS"}}]);
    let mut previous = by_role(previous);
    previous["secretStoreRef"]["name"] = json!("role-one");
    w.external_secret("role-previous", previous).await?;
    w.wait_reason("role-previous", "SecretSynced").await?;

    // Every failure path that is cheap to reach, each on its own ExternalSecret.
    let template_error = |source: &str| {
        let mut s = es("aws", json!([{"secretKey": "password", "remoteRef": {"key": db, "property": "password"}}]));
        s["target"] = json!({"template": {"data": {"out": source}}});
        s
    };
    let mut conflict = es("aws", good.clone());
    conflict["target"] = json!({"name": "taken"});
    let failures = [
        ("missing", es("aws", json!([{"secretKey": "k", "remoteRef": {"key": w.aws_name("nope")}}])), "SecretNotFound"),
        (
            "property",
            es("aws", json!([{"secretKey": "k", "remoteRef": {"key": db, "property": "nope"}}])),
            "PropertyNotFound",
        ),
        (
            "nonjson",
            es("aws", json!([{"secretKey": "k", "remoteRef": {"key": plain, "property": "x"}}])),
            "InvalidValue",
        ),
        (
            "badkey",
            json!({"secretStoreRef": {"name": "aws"}, "refreshInterval": "1s", "dataFrom": [{"extract": {"key": badkey}}]}),
            "InvalidValue",
        ),
        ("tpl-int", template_error("{{ password | int }}"), "InvalidTemplate"),
        ("tpl-undefined", template_error("{{ password.x.y }}"), "InvalidTemplate"),
        ("tpl-json", template_error("{{ password | fromJson }}"), "InvalidTemplate"),
        ("tpl-b64", template_error("{{ password | b64dec }}"), "InvalidTemplate"),
        ("conflict", conflict, "TargetConflict"),
    ];
    for (name, spec, _) in &failures {
        w.external_secret(name, spec.clone()).await?;
    }
    for (name, _, reason) in &failures {
        w.wait_reason(name, reason).await?;
    }

    // Throttled and denied, then through.
    proxy.set(Fault::Throttle);
    w.external_secret("proxied", es("proxied", good)).await?;
    w.wait_reason("proxied", "Throttled").await?;
    proxy.set(Fault::Deny);
    w.wait_reason("proxied", "AccessDenied").await?;
    proxy.set(Fault::Pass);
    w.wait_reason("proxied", "SecretSynced").await?;

    let store = format!("store=\"SecretStore {ns}/role");
    for op in
        ["AssumeRole", "GetCallerIdentity", "BatchGetSecretValue", "GetSecretValue", "ListSecrets", "DescribeSecret"]
    {
        let labels = [store.as_str(), &format!("operation=\"{op}\""), "outcome=\"success\""];
        eventually(WAIT, &format!("{op} through the assumed role"), || async {
            let metrics = http_get(&w.operator.metrics_addr, "/metrics").ok()?;
            sample(&metrics, "lockstep_aws_calls_total", &labels).filter(|n| *n > 0.0)
        })
        .await?;
    }

    let logs = w.operator.logs();
    assert!(logs.contains("TRACE"), "the operator must have run at trace level");
    for credential in assumed_credentials(&role)? {
        assert_lacks("the operator log", &logs, &credential);
    }
    assert_clean("the operator log", &logs);
    let events = Api::<Event>::namespaced(w.env.kube.clone(), w.ns()).list(&ListParams::default()).await?;
    assert!(events.items.iter().any(|e| e.reason.as_deref() == Some("InvalidTemplate")));
    assert_clean("the Events", &serde_json::to_string(&events.items)?);
    let statuses: Vec<_> =
        w.externalsecrets().list(&ListParams::default()).await?.items.into_iter().map(|e| e.status).collect();
    assert_clean("the ExternalSecret status", &serde_json::to_string(&statuses)?);
    assert_clean("/metrics", &http_get(&w.operator.metrics_addr, "/metrics")?);
    Ok(())
}
