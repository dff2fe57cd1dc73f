//! Secret hygiene: at trace level, through sync, rotation, templates and every cheap failure path,
//! no secret value reaches the operator's log, Events, status or metrics.

use base64::Engine;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;
use lockstep::api::ExternalSecret;
use lockstep_rig::{Fault, FaultProxy, Rig};
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
fn assumed_credentials(emulator: &lockstep_rig::Emulator, role: &str) -> anyhow::Result<Vec<String>> {
    let state: serde_json::Value = serde_json::from_str(&emulator.moto_api("GET", "/moto-api/data.json")?)?;
    let issued = state["sts"]["AssumedRole"].as_array().cloned().expect("moto lists the roles it assumed");
    let fields = ["access_key_id", "secret_access_key", "session_token"];
    let ours = issued.iter().filter(|r| r["role_arn"] == role);
    let values: Vec<String> =
        ours.flat_map(|r| fields.map(|f| r[f].as_str().expect("a credential field").to_string())).collect();
    anyhow::ensure!(
        !values.is_empty() && values.iter().all(|v| v.len() >= 16),
        "no credentials issued for {role}: {values:?}"
    );
    Ok(values)
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
    let operator = Operator::start(LOCKSTEP, &rig.kubeconfig, &args, &[("LOG_SENSITIVE_BODIES", "true")])?;
    let w = World { env, operator };
    // Credentials are values too: the key id, the secret key and the session token carry the sentinel
    // (moto takes any keys).
    w.apply(secret(
        "sentinel-creds",
        json!({"access-key-id": format!("{SENTINEL}-akid"), "secret-access-key": format!("{SENTINEL}-key"),
               "session-token": format!("{SENTINEL}-token")}),
    ))
    .await?;
    let sentinel_store =
        |name: &str, endpoint: &str| secret_store(name, endpoint).creds("sentinel-creds").session_token();
    w.apply(sentinel_store("aws", &rig.emulator.endpoint)).await?;
    let proxy = FaultProxy::start(&rig.emulator.endpoint)?;
    w.apply(sentinel_store("proxied", &proxy.endpoint)).await?;
    // AssumeRole on top: the credentials STS issues must not show either.
    let role = format!("arn:aws:iam::123456789012:role/{ns}");
    w.apply(sentinel_store("role", &rig.emulator.endpoint).aws(json!({"role": role}))).await?;
    // A ServiceAccount's token exchanged for a role (auth.jwt), on an emulator of its own whose
    // recording shows the token: neither it nor the credentials STS issues for it may show.
    let jwt_emu = lockstep_rig::Emulator::dedicated()?;
    jwt_emu.client().create_secret().name("jwt/db").secret_string(format!("{SENTINEL}-jwt")).send().await?;
    jwt_emu.start_recording()?;
    let jwt_role = format!("arn:aws:iam::123456789012:role/{ns}-jwt");
    w.apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "tenant", "annotations": {"eks.amazonaws.com/role-arn": jwt_role}}}))
        .await?;
    let jwt = json!({"auth": {"jwt": {"serviceAccountRef": {"name": "tenant"}}}});
    w.apply(secret_store("jwt", &jwt_emu.endpoint).ambient().aws(jwt)).await?;
    w.external_secret("jwt", es("jwt").refresh("1s").key("k", "jwt/db")).await?;
    // A store watching one key polls it with DescribeSecret (more keys: ListSecrets).
    w.apply(sentinel_store("role-one", &rig.emulator.endpoint).aws(json!({"role": role}))).await?;

    let pw1 = format!("{SENTINEL}-pw1");
    let db = w.create_aws("db", &json!({"user": format!("{SENTINEL}-user"), "password": pw1}).to_string()).await?;
    let plain = w.create_aws("plain", &format!("{SENTINEL}-not-json")).await?;
    let badkey = w.create_aws("badkey", &json!({"..": format!("{SENTINEL}-k")}).to_string()).await?;
    w.plain_secret("taken", &[("theirs", &format!("{SENTINEL}-theirs"))]).await?;

    // Sync, template, rotation.
    let password = |store: &str| es(store).refresh("1s").property("password", &db, "password");
    let good = |store: &str| password(store).key("whole", &db);
    w.external_secret("sync", good("aws")).await?;
    w.external_secret("tpl", password("aws").template(json!({"data": {"dsn": "p={{ .password }}"}}))).await?;
    w.wait_value("sync", "password", &pw1).await?;
    w.wait_value("tpl", "dsn", &format!("p={pw1}")).await?;
    // Through the assumed role, every AWS call: BatchGetSecretValue (two AWSCURRENT values at once),
    // GetSecretValue (AWSPREVIOUS), ListSecrets (find), DescribeSecret (polling role-one), GetCallerIdentity
    // (the store check) and AssumeRole.
    w.create_aws("found/x", &format!("{SENTINEL}-found")).await?;
    let by_role = |store: &str| es(store).refresh("1s");
    w.external_secret("role-current", by_role("role").property("password", &db, "password").key("plain", &plain))
        .await?;
    let found = by_role("role").data_from(
        json!({"find": {"path": format!("{ns}/found/")}, "rewrite": [{"regexp": {"source": ".*/", "target": ""}}]}),
    );
    w.external_secret("role-find", found).await?;
    w.wait_reason("role-current", "SecretSynced").await?;
    w.wait_reason("role-find", "SecretSynced").await?;
    let pw2 = format!("{SENTINEL}-pw2");
    let rotated = json!({"user": format!("{SENTINEL}-user"), "password": pw2}).to_string();
    w.env.aws.put_secret_value().secret_id(&db).secret_string(rotated).send().await?;
    w.wait_value("sync", "password", &pw2).await?;
    let previous = by_role("role-one").remote("password", json!({"key": db, "version": "AWSPREVIOUS"}));
    w.external_secret("role-previous", previous).await?;
    w.wait_reason("role-previous", "SecretSynced").await?;

    // Every failure path that is cheap to reach, each on its own ExternalSecret.
    let template_error = |source: &str| password("aws").template(json!({"data": {"out": source}}));
    let aws = || es("aws").refresh("1s");
    let failures = [
        ("missing", aws().key("k", &w.aws_name("nope")), "SecretNotFound"),
        ("property", aws().property("k", &db, "nope"), "PropertyNotFound"),
        ("nonjson", aws().property("k", &plain, "x"), "InvalidValue"),
        ("badkey", aws().extract(&badkey), "InvalidValue"),
        ("tpl-int", template_error("{{ lt .password 1 }}"), "InvalidTemplate"),
        ("tpl-undefined", template_error("{{ .password.x.y }}"), "InvalidTemplate"),
        ("tpl-json", template_error("{{ .password | fromJson }}"), "InvalidTemplate"),
        ("tpl-b64", template_error("{{ .password | b64dec }}"), "InvalidTemplate"),
        ("conflict", good("aws").target(json!({"name": "taken"})), "TargetConflict"),
    ];
    for (name, spec, _) in &failures {
        w.external_secret(name, spec.clone()).await?;
    }
    for (name, _, reason) in &failures {
        w.wait_reason(name, reason).await?;
    }

    // Throttled and denied, then through.
    proxy.set(Fault::Throttle);
    w.external_secret("proxied", good("proxied")).await?;
    w.wait_reason("proxied", "Throttled").await?;
    proxy.set(Fault::Deny);
    w.wait_reason("proxied", "AccessDenied").await?;
    proxy.set(Fault::Pass);
    w.wait_reason("proxied", "SecretSynced").await?;

    for op in
        ["AssumeRole", "GetCallerIdentity", "BatchGetSecretValue", "GetSecretValue", "ListSecrets", "DescribeSecret"]
    {
        w.eventually(&format!("{op} through the assumed role"), || async {
            let metrics = w.operator.metrics().ok()?;
            let through_role = |store: &str| {
                let labels = [("store", store), ("operation", op), ("outcome", "success")];
                metrics.sum("lockstep_aws_calls_total", &labels)
            };
            let n =
                through_role(&format!("SecretStore {ns}/role")) + through_role(&format!("SecretStore {ns}/role-one"));
            (n > 0.0).then_some(())
        })
        .await?;
    }

    let logs = w.operator.logs();
    assert!(logs.contains("TRACE"), "the operator must have run at trace level");
    w.wait_value("jwt", "k", &format!("{SENTINEL}-jwt")).await?;
    let recording = jwt_emu.moto_api("GET", "/moto-api/recorder/download-recording")?;
    let bodies: String = recording
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let raw = v["body"].as_str().unwrap_or_default().to_string();
            match v["body_encoded"].as_bool() {
                Some(true) => {
                    String::from_utf8_lossy(&base64::engine::general_purpose::STANDARD.decode(raw).unwrap_or_default())
                        .to_string()
                }
                _ => raw,
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let tokens: Vec<String> = bodies
        .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .filter(|t| t.starts_with("eyJ") && t.matches('.').count() == 2)
        .map(String::from)
        .collect();
    anyhow::ensure!(!tokens.is_empty(), "the ServiceAccount token reached STS");
    let issued =
        assumed_credentials(&rig.emulator, &role)?.into_iter().chain(assumed_credentials(&jwt_emu, &jwt_role)?);
    for credential in issued.chain(tokens) {
        assert_lacks("the operator log", &logs, &credential);
    }
    assert_clean("the operator log", &logs);
    let events = Api::<Event>::namespaced(w.env.kube.clone(), w.ns()).list(&ListParams::default()).await?;
    assert!(events.items.iter().any(|e| e.reason.as_deref() == Some("InvalidTemplate")));
    assert_clean("the Events", &serde_json::to_string(&events.items)?);
    let statuses: Vec<_> =
        w.api::<ExternalSecret>().list(&ListParams::default()).await?.items.into_iter().map(|e| e.status).collect();
    assert_clean("the ExternalSecret status", &serde_json::to_string(&statuses)?);
    assert_clean("/metrics", w.operator.metrics()?.text());
    Ok(())
}
