//! Day-2 operations: the `status`, `refresh` and `template` commands against the rig, the metrics
//! the shipped dashboard and alerts read, the alerts under `promtool test rules`, and the Argo CD
//! health script run on our status objects.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use kube::ResourceExt;
use lockstep::api::ExternalSecret;
use lockstep_rig::{Rig, repo_root, tools_dir};
use serde_json::{Value, json};

use crate::common::*;

/// `lockstep ARGS` against the rig's admin kubeconfig: (exit code, stdout, stderr).
fn lockstep(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(LOCKSTEP)
        .args(args)
        .env("KUBECONFIG", &Rig::get().kubeconfig)
        .env("NO_COLOR", "1")
        .output()
        .expect("lockstep runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn endpoint() -> String {
    Rig::get().emulator.endpoint.clone()
}

#[tokio::test]
async fn status_shows_ready_and_each_failure_reason_with_its_fix() -> anyhow::Result<()> {
    let w = World::new("ops-status").await?;
    w.store(secret_store("aws", &endpoint())).await?;
    let db = w.create_aws("db", r#"{"user":"u"}"#).await?;
    let plain = w.create_aws("plain", "not json").await?;
    w.plain_secret("taken", &[("k", "v")]).await?;
    let cases = [
        ("ok", es("aws").key("k", &db), "SecretSynced"),
        ("missing", es("aws").key("k", &w.aws_name("nope")), "SecretNotFound"),
        ("property", es("aws").property("k", &db, "nope"), "PropertyNotFound"),
        ("notjson", es("aws").property("k", &plain, "a"), "InvalidValue"),
        ("nostore", es("absent").key("k", &db), "StoreNotReady"),
        ("conflict", es("aws").key("k", &db).target(json!({"name": "taken"})), "TargetConflict"),
        ("badtemplate", es("aws").key("k", &db).template(json!({"data": {"x": "{{"}})), "InvalidTemplate"),
    ];
    for (name, spec, _) in &cases {
        w.external_secret(name, spec.clone()).await?;
    }
    for (name, _, reason) in &cases {
        w.wait_reason(name, reason).await?;
    }

    let (code, table, _) = lockstep(&["status", "-n", w.ns()]);
    assert_eq!(code, 3, "exit 3 while one is not Ready:\n{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("LAST SYNC") && lines[0].contains("VERSIONS"), "{table}");
    for (name, _, reason) in &cases {
        let i =
            lines.iter().position(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}:\n{table}"));
        assert!(lines[i].contains(reason), "{name} shows {reason}:\n{table}");
        if *reason == "SecretSynced" {
            assert!(lines[i].contains("True") && lines[i].contains(&format!("{db}=")), "{table}");
        } else {
            assert!(lines[i + 1].starts_with("    message: "), "{name}: a message under the row:\n{table}");
            let fix = lockstep::cli::fix(reason).expect("a fix");
            assert_eq!(lines[i + 2], format!("    fix: {fix}"), "{name}:\n{table}");
        }
    }

    let (code, out, _) = lockstep(&["status", "-n", w.ns(), "ok", "-o", "json"]);
    assert_eq!(code, 0, "a Ready one alone exits 0: {out}");
    let rows: Value = serde_json::from_str(&out)?;
    assert_eq!(rows[0]["ready"], "True");
    assert_eq!(rows[0]["sources"][0]["key"], json!(db));
    assert!(rows[0]["lastSync"].as_str().is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()), "{out}");
    let (code, _, err) = lockstep(&["status", "-n", w.ns(), "nothere"]);
    assert_eq!(code, 1, "{err}");

    // Every metric the shipped dashboard and alerts read is one the operator exports.
    metrics_the_dashboard_and_alerts_read_exist(&w)?;
    Ok(())
}

/// Metric names (and the labels their selectors use) in PromQL `expr`.
fn metrics_in(expr: &str) -> Vec<(String, Vec<String>)> {
    let re = regex::Regex::new(r"(lockstep_[a-z0-9_]+)(\{([^}]*)\})?").expect("a regex");
    let label = regex::Regex::new(r"([a-z_]+)\s*(=~|!~|!=|=)").expect("a regex");
    re.captures_iter(expr)
        .map(|c| {
            let labels =
                c.get(3).map_or(vec![], |l| label.captures_iter(l.as_str()).map(|m| m[1].to_string()).collect());
            (c[1].to_string(), labels)
        })
        .collect()
}

fn metrics_the_dashboard_and_alerts_read_exist(w: &World) -> anyhow::Result<()> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("charts/lockstep/dashboards/lockstep.json"))?)?;
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect();
    let rules = rendered_rules()?;
    exprs.extend(
        rules["groups"][0]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["expr"].as_str().map(String::from)),
    );
    assert!(exprs.len() > 10, "{exprs:?}");
    let metrics = w.operator.metrics()?;
    // An operator watching one namespace runs no ClusterSecretStore controller, and this one reads
    // no event queue: what it exports for those is read from the operator's own metrics code (the
    // events test scrapes the queue's series from a live operator).
    let cluster_wide = lockstep::metrics::Metrics::default();
    let key = lockstep::metrics::ObjectKey {
        kind: lockstep::metrics::CLUSTER_SECRET_STORE,
        namespace: None,
        name: "c".into(),
    };
    cluster_wide.object_status(&key, lockstep::status::Reason::Valid, None);
    cluster_wide.events_queue("SecretStore ns/s", Some(true));
    cluster_wide.event("SecretStore ns/s", "matched");
    let cluster_wide = cluster_wide.encode();
    let declared: BTreeSet<&str> = [metrics.text(), cluster_wide.as_str()]
        .into_iter()
        .flat_map(|text| text.lines())
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    // Labels Prometheus adds when it scrapes a target.
    let target_labels = ["namespace", "pod", "job", "instance", "service", "container", "endpoint"];
    for expr in &exprs {
        for (name, labels) in metrics_in(expr) {
            let family =
                ["_total", "_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
            assert!(
                declared.contains(family) || declared.contains(name.as_str()),
                "{name} (in {expr}) is not exported:\n{}",
                metrics.text()
            );
            let samples: Vec<_> = metrics.samples(&name, &[]).collect();
            for l in labels.iter().filter(|l| !target_labels.contains(&l.as_str())) {
                assert!(
                    samples.is_empty() || samples.iter().any(|s| s.labels.contains_key(l)),
                    "{name} has no label {l} (in {expr})"
                );
            }
        }
    }
    // What this namespace's ExternalSecrets and store make the operator export.
    for name in [
        "lockstep_externalsecret_status_condition",
        "lockstep_externalsecret_ready",
        "lockstep_externalsecret_last_sync_timestamp_seconds",
        "lockstep_secretstore_status_condition",
        "lockstep_reconcile_failures_total",
        "lockstep_reconciles_total",
        "lockstep_aws_calls_total",
        "lockstep_leader",
    ] {
        assert!(metrics.samples(name, &[]).next().is_some(), "no sample of {name}:\n{}", metrics.text());
    }
    let ready = |name: &str| -> Vec<lockstep_rig::http::Sample> {
        let labels = [("namespace", w.ns()), ("name", name)];
        metrics.samples("lockstep_externalsecret_ready", &labels).cloned().collect()
    };
    assert_eq!(ready("ok").len(), 1);
    assert_eq!((ready("ok")[0].labels["reason"].as_str(), ready("ok")[0].value), ("SecretSynced", 1.0));
    assert_eq!((ready("missing")[0].labels["reason"].as_str(), ready("missing")[0].value), ("SecretNotFound", 0.0));
    Ok(())
}

#[tokio::test]
async fn per_object_series_go_with_their_object() -> anyhow::Result<()> {
    let w = World::new("ops-gone").await?;
    w.store(secret_store("aws", &endpoint())).await?;
    let db = w.create_aws("db", "v").await?;
    w.external_secret("short", es("aws").key("k", &db)).await?;
    w.wait_reason("short", "SecretSynced").await?;
    let series = |w: &World| -> anyhow::Result<usize> {
        let m = w.operator.metrics()?;
        Ok([
            "lockstep_externalsecret_ready",
            "lockstep_externalsecret_status_condition",
            "lockstep_externalsecret_last_sync_timestamp_seconds",
        ]
        .iter()
        .map(|n| m.samples(n, &[("namespace", w.ns()), ("name", "short")]).count())
        .sum())
    };
    assert_eq!(series(&w)?, 4, "ready, two conditions, last sync");
    w.api::<ExternalSecret>().delete("short", &Default::default()).await?;
    w.eventually("the deleted ExternalSecret's series gone", || async { (series(&w).ok()? == 0).then_some(()) }).await
}

#[tokio::test]
async fn refresh_by_aws_secret_touches_exactly_its_readers() -> anyhow::Result<()> {
    let w = World::new("ops-refresh").await?;
    w.store(secret_store("aws", &endpoint())).await?;
    w.store(secret_store("aws2", &endpoint())).await?;
    let shared = w.create_aws("shared", r#"{"a":"1"}"#).await?;
    let other = w.create_aws("other", "o").await?;
    let near = w.create_aws("shared-old", "n").await?;
    let readers = [
        ("by-key", es("aws").refresh("1h").key("k", &shared)),
        ("by-property", es("aws").refresh("1h").property("k", &shared, "a").key("o", &other)),
        ("by-extract", es("aws2").refresh("1h").extract(&shared)),
    ];
    let others =
        [("unrelated", es("aws").refresh("1h").key("k", &other)), ("prefix", es("aws").refresh("1h").key("k", &near))];
    for (name, spec) in readers.iter().chain(&others) {
        w.external_secret(name, spec.clone()).await?;
    }
    for (name, _) in readers.iter().chain(&others) {
        w.wait_reason(name, "SecretSynced").await?;
    }

    let (code, out, err) = lockstep(&["refresh", "-n", w.ns(), "--aws-secret", &shared, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let touched: Vec<Value> = serde_json::from_str(&out)?;
    let mut names: Vec<&str> = touched.iter().filter_map(|t| t["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["by-extract", "by-key", "by-property"], "exactly the three that read {shared}");
    let annotated = |es: &ExternalSecret| es.annotations().contains_key(lockstep::cli::refresh::REFRESH_ANNOTATION);
    let all = w.api::<ExternalSecret>().list(&Default::default()).await?.items;
    let mut marked: Vec<String> = all.iter().filter(|e| annotated(e)).map(|e| e.name_any()).collect();
    marked.sort();
    assert_eq!(marked, ["by-extract", "by-key", "by-property"]);

    // Through one store only; by name; by store; nothing.
    let (_, out, _) = lockstep(&["refresh", "-n", w.ns(), "--aws-secret", &shared, "--store", "aws2", "-o", "json"]);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out)?.len(), 1, "{out}");
    let (code, out, _) = lockstep(&["refresh", "-n", w.ns(), "unrelated"]);
    assert!(code == 0 && out.contains("Refresh requested for 1 ExternalSecret."), "{out}");
    let (_, out, _) = lockstep(&["refresh", "-n", w.ns(), "--store", "aws", "-o", "json"]);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out)?.len(), 4, "{out}");
    let (code, out, _) = lockstep(&["refresh", "-n", w.ns(), "--aws-secret", &w.aws_name("none")]);
    assert_eq!(code, 3, "nothing matched: {out}");
    let (code, _, _) = lockstep(&["refresh", "-n", w.ns()]);
    assert_eq!(code, 2, "a usage error without NAME, --store or --aws-secret");

    Ok(())
}

/// The operator syncs again, fetching afresh, when an ExternalSecret's annotations change.
#[tokio::test]
async fn a_refresh_fetches_afresh() -> anyhow::Result<()> {
    let w = World::new("ops-afresh").await?;
    w.store(secret_store("aws", &endpoint())).await?;
    let shared = w.create_aws("shared", r#"{"a":"1"}"#).await?;
    w.external_secret("by-key", es("aws").refresh("1h").key("k", &shared)).await?;
    w.external_secret("by-extract", es("aws").refresh("1h").extract(&shared)).await?;
    w.wait_value("by-key", "k", r#"{"a":"1"}"#).await?;
    w.wait_value("by-extract", "a", "1").await?;
    w.wait_reason("by-key", "SecretSynced").await?;
    w.wait_reason("by-extract", "SecretSynced").await?;
    // A forced sync shares a value fetched in the last 5 s (what one change's reconciles in a
    // row read); past that it reads AWS. The new value arrives long before the hour's refresh
    // (and the 60 s the operator keeps a value).
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    w.env.aws.put_secret_value().secret_id(&shared).secret_string(r#"{"a":"2"}"#).send().await?;
    let (code, _, err) = lockstep(&["refresh", "-n", w.ns(), "--aws-secret", &shared]);
    assert_eq!(code, 0, "{err}");
    w.wait_value("by-key", "k", r#"{"a":"2"}"#).await?;
    w.wait_value("by-extract", "a", "2").await?;
    Ok(())
}

#[tokio::test]
async fn template_renders_what_the_operator_writes_and_masks_values() -> anyhow::Result<()> {
    const SENTINEL: &str = "SENTINEL-c1d2-template";
    let w = World::new("ops-template").await?;
    w.store(secret_store("aws", &endpoint())).await?;
    let db = w.create_aws("db", &format!(r#"{{"user": "app", "password": "{SENTINEL}", "port": 5432}}"#)).await?;
    let token = w.create_aws("token", &format!("{SENTINEL}-token")).await?;
    let spec = es("aws")
        .property("password", &db, "password")
        .key("token", &token)
        .extract(&db)
        .template(json!({"type": "kubernetes.io/basic-auth", "metadata": {"labels": {"tier": "backend"}, "annotations": {"team": "payments"}}}))
        .target(json!({"name": "rendered"}));
    let manifest = spec.clone().manifest("tpl");
    w.external_secret("tpl", spec).await?;
    w.wait_reason("tpl", "SecretSynced").await?;
    let written = w.secrets().get("rendered").await?;

    let dir = Rig::get().dir.join(format!("template-{}", w.ns()));
    std::fs::create_dir_all(&dir)?;
    let (es_file, values_file) = (dir.join("es.yaml"), dir.join("values.json"));
    let mut manifest = manifest;
    manifest["metadata"]["namespace"] = json!(w.ns());
    std::fs::write(&es_file, serde_yaml::to_string(&manifest)?)?;
    let values = json!({db.clone(): aws_value(&w, &db).await?, token.clone(): aws_value(&w, &token).await?});
    std::fs::write(&values_file, values.to_string())?;
    let path = |p: &Path| p.to_str().expect("UTF-8").to_string();

    let (code, out, err) =
        lockstep(&["template", "-f", &path(&es_file), "--values", &path(&values_file), "--show-values", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let offline: k8s_openapi::api::core::v1::Secret = serde_json::from_str(&out)?;
    assert_eq!(offline.data, written.data, "the same bytes under the same keys");
    assert_eq!(offline.type_, written.type_);
    assert_eq!(offline.metadata.labels, written.metadata.labels);
    let annotations = |s: &k8s_openapi::api::core::v1::Secret| {
        let mut a = s.metadata.annotations.clone().unwrap_or_default();
        // AWS alone knows the version ids behind a stage; offline they are "offline".
        let versions = a.remove(lockstep::SOURCE_VERSIONS_ANNOTATION).unwrap_or_default();
        let keys: Vec<String> =
            versions.split(',').map(|kv| kv.split('=').next().unwrap_or_default().to_string()).collect();
        (a, keys)
    };
    assert_eq!(annotations(&offline), annotations(&written), "data hash and every other annotation identical");
    assert!(serde_json::to_string(&offline.metadata.annotations)?.contains("=offline"));

    for output in ["yaml", "json"] {
        let (code, out, err) =
            lockstep(&["template", "-f", &path(&es_file), "--values", &path(&values_file), "-o", output]);
        assert_eq!(code, 0, "{err}");
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(SENTINEL);
        for shown in [&out, &err] {
            assert!(
                !shown.contains(SENTINEL) && !shown.contains(&b64[..16]),
                "a value printed without --show-values:\n{shown}"
            );
        }
        assert!(out.contains("<masked: ") && out.contains("backend") && out.contains("rendered"), "{out}");
        assert!(err.contains("--show-values"), "{err}");
    }

    // A spec the operator refuses: its reason and fix on stderr, exit 3; a missing value: exit 1.
    std::fs::write(&values_file, json!({db.clone(): r#"{"user":"x"}"#, token.clone(): "t"}).to_string())?;
    let (code, out, err) = lockstep(&["template", "-f", &path(&es_file), "--values", &path(&values_file)]);
    assert!(
        code == 3 && out.is_empty() && err.starts_with("PropertyNotFound: ") && err.contains("fix: "),
        "{code} {out} {err}"
    );
    std::fs::write(&values_file, json!({token.clone(): "t"}).to_string())?;
    let (code, _, err) = lockstep(&["template", "-f", &path(&es_file), "--values", &path(&values_file)]);
    assert!(code == 1 && err.contains(&db), "{code} {err}");
    Ok(())
}

async fn aws_value(w: &World, name: &str) -> anyhow::Result<String> {
    let v = w.env.aws.get_secret_value().secret_id(name).send().await?;
    Ok(v.secret_string().expect("a string").to_string())
}

/// One template of the chart rendered with `set` (release namespace lockstep).
fn rendered(set: &str, template: &str) -> anyhow::Result<Value> {
    let chart = repo_root().join("charts/lockstep");
    let out = Command::new(tools_dir().join("bin/helm"))
        .args(["template", "rel", chart.to_str().expect("UTF-8"), "--namespace", "lockstep"])
        .args(["--kube-version", "1.37.2", "--set", set, "--show-only", template])
        .env("HOME", Rig::get().dir.join("helm-home"))
        .output()?;
    anyhow::ensure!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_yaml::from_slice(&out.stdout)?)
}

/// The chart's PrometheusRule with its default values, as a Prometheus rules file.
fn rendered_rules() -> anyhow::Result<Value> {
    let rule = rendered("metrics.prometheusRule.enabled=true", "templates/prometheusrule.yaml")?;
    Ok(json!({"groups": rule["spec"]["groups"]}))
}

#[test]
fn the_chart_ships_the_dashboard_for_grafanas_sidecar() -> anyhow::Result<()> {
    let cm = rendered("metrics.dashboard.enabled=true", "templates/dashboard.yaml")?;
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1", "{cm}");
    let shipped: Value = serde_json::from_str(cm["data"]["lockstep.json"].as_str().expect("the dashboard"))?;
    let file = std::fs::read_to_string(repo_root().join("charts/lockstep/dashboards/lockstep.json"))?;
    assert_eq!(shipped, serde_json::from_str::<Value>(&file)?);
    Ok(())
}

#[test]
fn alerts_pass_promtool_unit_tests() -> anyhow::Result<()> {
    let dir = Rig::get().dir.join(format!("promtool-{}", lockstep_rig::unique()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("rules.yaml"), serde_yaml::to_string(&rendered_rules()?)?)?;
    std::fs::copy(repo_root().join("tests/ops/alerts.test.yaml"), dir.join("alerts.test.yaml"))?;
    let out = Command::new(tools_dir().join("bin/promtool"))
        .args(["test", "rules", "alerts.test.yaml"])
        .current_dir(&dir)
        .output()
        .map_err(|e| anyhow::anyhow!("promtool (make tools): {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("SUCCESS"), "promtool test rules:\n{text}");
    Ok(())
}

/// Run the Argo CD health script on `obj` as Argo CD does (`obj` a global; JSON null is nil).
fn health(obj: &Value) -> (String, String) {
    use mlua::LuaSerdeExt;
    let script = std::fs::read_to_string(repo_root().join("charts/lockstep/health/ready.lua")).expect("the script");
    let lua = mlua::Lua::new();
    let options = mlua::serde::SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    let value = lua.to_value_with(obj, options).expect("a Lua value");
    lua.globals().set("obj", value).expect("obj set");
    let hs: mlua::Table = lua.load(&script).eval().expect("the script runs");
    (hs.get("status").expect("status"), hs.get("message").expect("message"))
}

#[test]
fn argo_cd_health_from_our_status_objects() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use lockstep::api::{ExternalSecretStatus, SecretStoreStatus};
    use lockstep::status::{Reason, set_ready};
    let at = Time(jiff::Timestamp::UNIX_EPOCH);
    let es = |generation: i64, status: Option<(Reason, &str, i64)>| {
        let mut obj = json!({"apiVersion": "lockstep.dev/v1alpha1", "kind": "ExternalSecret",
            "metadata": {"name": "db", "namespace": "app", "generation": generation}, "spec": {"secretStoreRef": {"name": "aws"}}});
        if let Some((reason, message, observed)) = status {
            let s = ExternalSecretStatus {
                conditions: set_ready(&[], reason, message, Some(observed), at.clone()),
                observed_generation: Some(observed),
                ..Default::default()
            };
            obj["status"] = serde_json::to_value(s).expect("status");
        }
        obj
    };
    let store = |reason: Reason| {
        let s = SecretStoreStatus {
            observed_generation: Some(1),
            conditions: set_ready(&[], reason, "m", Some(1), at.clone()),
            ..Default::default()
        };
        json!({"kind": "SecretStore", "metadata": {"name": "aws", "generation": 1}, "status": s})
    };
    let cases = [
        (es(1, Some((Reason::SecretSynced, "Secret \"db\" is in sync", 1))), "Healthy", "Secret \"db\" is in sync"),
        (
            es(1, Some((Reason::SecretNotFound, "AWS secret \"x\" not found", 1))),
            "Degraded",
            "SecretNotFound: AWS secret \"x\" not found",
        ),
        (es(1, Some((Reason::Throttled, "slow down", 1))), "Degraded", "Throttled: slow down"),
        (
            es(2, Some((Reason::SecretSynced, "in sync", 1))),
            "Progressing",
            "Waiting for the operator to report on generation 2",
        ),
        (es(1, None), "Progressing", "Waiting for the operator's first report"),
        (store(Reason::Valid), "Healthy", "m"),
        (store(Reason::AccessDenied), "Degraded", "AccessDenied: m"),
    ];
    for (obj, status, message) in cases {
        assert_eq!(health(&obj), (status.to_string(), message.to_string()), "{obj}");
    }
    // A condition behind the generation while status.observedGeneration is current.
    let mut behind = es(3, Some((Reason::SecretSynced, "in sync", 2)));
    behind["status"]["observedGeneration"] = json!(3);
    assert_eq!(health(&behind).0, "Progressing");
}

/// The README's argocd-cm snippet holds the shipped script, for each kind.
#[test]
fn readme_argocd_snippet_is_the_shipped_script() {
    let script = std::fs::read_to_string(repo_root().join("charts/lockstep/health/ready.lua")).expect("the script");
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README");
    let indented: String =
        script.lines().map(|l| if l.is_empty() { "\n".to_string() } else { format!("    {l}\n") }).collect();
    for kind in ["ExternalSecret", "SecretStore", "ClusterSecretStore"] {
        let key = format!("  resource.customizations.health.lockstep.dev_{kind}: |\n");
        let at = readme.find(&key).unwrap_or_else(|| panic!("README has no argocd-cm key for {kind}"));
        assert!(
            readme[at + key.len()..].starts_with(&indented),
            "README's script for {kind} is not charts/lockstep/health/ready.lua"
        );
    }
}
