//! Install and operate: the Helm chart renders, lints and installs; the operator does its job with
//! nothing but the chart's RBAC; the CRDs apply with kubectl; the Dockerfile lints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use lockstep::api::{ClusterExternalSecret, ClusterSecretStore, ExternalSecret};
use lockstep_rig::{Rig, client_from, repo_root, tools_dir, unique};
use serde_json::{Value, json};

use crate::common::*;

const KUBE_VERSION: &str = "1.37.2";

/// The chart's folder, as an argument for helm.
fn chart() -> String {
    path_arg(&repo_root().join("charts/lockstep"))
}

/// `path` as a command-line argument (the rig's paths are UTF-8).
fn path_arg(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}

/// Run a tool from `.tools/bin` with a clean environment (helm's caches in the rig directory).
fn tool(name: &str, args: &[&str]) -> anyhow::Result<Output> {
    let home = Rig::get().dir.join("helm-home");
    Ok(Command::new(tools_dir().join("bin").join(name))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()?)
}

fn ok(out: Output, what: &str) -> anyhow::Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(out.status.success(), "{what} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    Ok(stdout)
}

/// `helm template` with `--set` values; every rendered object as JSON.
fn template(sets: &[&str]) -> anyhow::Result<Vec<Value>> {
    let chart = chart();
    let mut args = vec!["template", "rel", &chart, "--namespace", "ops"];
    args.extend(["--kube-version", KUBE_VERSION]);
    for s in sets {
        args.extend(["--set", s]);
    }
    let yaml = ok(tool("helm", &args)?, "helm template")?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn container_args(docs: &[Value]) -> Vec<String> {
    let deployment = find(docs, "Deployment");
    let args = deployment[0]["spec"]["template"]["spec"]["containers"][0]["args"].as_array();
    args.expect("the container has args").iter().filter_map(|s| s.as_str().map(String::from)).collect()
}

/// The verbs granted on `resource` by the rules of every Role and ClusterRole rendered.
fn verbs(docs: &[Value], resource: &str) -> Vec<String> {
    let mut out: Vec<String> = docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
        .flat_map(|d| d["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["resources"].as_array().is_some_and(|rs| rs.iter().any(|x| x == resource)))
        .flat_map(|r| r["verbs"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn chart_lints_and_renders_a_hardened_pod_in_both_scopes() -> anyhow::Result<()> {
    let chart = &chart();
    ok(tool("helm", &["lint", chart, "--strict", "--kube-version", KUBE_VERSION])?, "helm lint")?;
    ok(
        tool("helm", &["lint", chart, "--strict", "--kube-version", KUBE_VERSION, "--set", "scope.namespace=team-a"])?,
        "helm lint (namespace scope)",
    )?;

    let docs = template(&[])?;
    let pod = &find(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["automountServiceAccountToken"], false, "the token is projected explicitly");
    assert!(pod["volumes"].to_string().contains("serviceAccountToken"), "{pod}");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());
    let args = container_args(&docs);
    assert!(args.contains(&"--metrics-addr=0.0.0.0:8080".to_string()), "{args:?}");
    assert!(args.contains(&"--leader-elect".to_string()), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--namespace")), "{args:?}");
    assert_eq!(find(&docs, "ClusterRole").len(), 1);
    assert_eq!(verbs(&docs, "secrets"), ["create", "delete", "get", "list", "patch", "watch"]);
    assert_eq!(verbs(&docs, "externalsecrets/status"), ["patch"]);
    assert_eq!(verbs(&docs, "externalsecrets"), ["create", "delete", "get", "list", "patch", "watch"]);
    assert_eq!(verbs(&docs, "clusterexternalsecrets"), ["get", "list", "watch"]);
    assert_eq!(verbs(&docs, "clusterexternalsecrets/status"), ["patch"]);
    assert_eq!(verbs(&docs, "namespaces"), ["get", "list", "watch"]);
    assert_eq!(verbs(&docs, "leases"), ["create", "get", "update"]);
    assert!(verbs(&docs, "serviceaccounts/token").is_empty(), "no token requests unless jwt is enabled");
    assert!(verbs(&docs, "serviceaccounts").is_empty(), "no ServiceAccount reads unless jwt is enabled");
    assert!(find(&docs, "ServiceMonitor").is_empty() && find(&docs, "PodDisruptionBudget").is_empty());

    let docs =
        template(&["jwt.enabled=true", "metrics.serviceMonitor.enabled=true", "podDisruptionBudget.enabled=true"])?;
    assert_eq!(verbs(&docs, "serviceaccounts/token"), ["create"]);
    assert_eq!(verbs(&docs, "serviceaccounts"), ["get"]);
    assert_eq!(find(&docs, "ServiceMonitor").len(), 1);
    assert_eq!(find(&docs, "PodDisruptionBudget").len(), 1);

    let docs = template(&["scope.namespace=team-a", "networkPolicy.enabled=true"])?;
    assert!(find(&docs, "ClusterRole").is_empty() && find(&docs, "ClusterRoleBinding").is_empty());
    let roles = find(&docs, "Role");
    assert!(roles.iter().any(|r| r["metadata"]["namespace"] == "team-a"), "{roles:?}");
    assert!(roles.iter().any(|r| r["metadata"]["namespace"] == "ops"), "the Lease Role stays in the release namespace");
    assert!(verbs(&docs, "clustersecretstores").is_empty() && verbs(&docs, "namespaces").is_empty());
    assert!(verbs(&docs, "clusterexternalsecrets").is_empty(), "ClusterExternalSecrets are cluster scope only");
    assert_eq!(verbs(&docs, "externalsecrets"), ["get", "list", "watch"], "nor does it write ExternalSecrets");
    assert!(container_args(&docs).contains(&"--namespace=team-a".to_string()));
    assert_eq!(find(&docs, "NetworkPolicy").len(), 1);
    Ok(())
}

#[test]
fn chart_rejects_bad_values_with_a_clear_message() -> anyhow::Result<()> {
    let chart = &chart();
    for (set, says) in [
        ("scope.namespace=Team_A", "/scope/namespace"),
        ("replicaCount=0", "/replicaCount"),
        ("podSecurityContext.runAsNonRoot=false", "/podSecurityContext/runAsNonRoot"),
        ("replicas=2", "additional properties 'replicas' not allowed"),
    ] {
        let out = tool("helm", &["template", "rel", chart, "--kube-version", KUBE_VERSION, "--set", set])?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(
            err.contains("values don't meet the specifications of the schema") && err.contains(says),
            "{set}: {err}"
        );
    }
    Ok(())
}

#[test]
fn dockerfile_passes_hadolint() -> anyhow::Result<()> {
    let hadolint = tools_dir().join("venv/bin/hadolint");
    anyhow::ensure!(hadolint.exists(), "{} is missing: run `make tools`", hadolint.display());
    let out = Command::new(&hadolint).arg(repo_root().join("Dockerfile")).output()?;
    ok(out, "hadolint Dockerfile")?;
    Ok(())
}

#[tokio::test]
async fn crds_apply_with_kubectl_server_side() -> anyhow::Result<()> {
    let rig = Rig::get();
    let kubeconfig = &path_arg(&rig.kubeconfig);
    let crds = &path_arg(&repo_root().join("crds"));
    let out = tool(
        "kubectl",
        &[
            "--kubeconfig",
            kubeconfig,
            "apply",
            "--server-side",
            "--field-manager",
            "lockstep-tests",
            "--force-conflicts",
            "-f",
            crds,
        ],
    )?;
    let stdout = ok(out, "kubectl apply --server-side -f crds/")?;
    assert!(stdout.contains("externalsecrets.lockstep.dev serverside-applied"), "{stdout}");
    let out = tool(
        "kubectl",
        &["--kubeconfig", kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "-f", crds],
    )?;
    ok(out, "kubectl wait Established")?;
    Ok(())
}

/// `helm install` the chart into `namespace`; returns the ServiceAccount (= full) name.
fn helm_install(namespace: &str, sets: &[&str]) -> anyhow::Result<String> {
    let rig = Rig::get();
    let release = format!("lockstep-{}", unique());
    let chart = chart();
    let kubeconfig = path_arg(&rig.kubeconfig);
    let mut args = vec!["install", &release, &chart, "--namespace", namespace, "--kubeconfig", &kubeconfig];
    for s in sets {
        args.extend(["--set", s]);
    }
    let notes = ok(tool("helm", &args)?, "helm install")?;
    assert!(notes.contains("kubectl apply"), "NOTES tell what to apply next: {notes}");
    Ok(release)
}

/// A kubeconfig for the rig that authenticates as a ServiceAccount, with a TokenRequest token.
async fn kubeconfig_for(kube: &kube::Client, namespace: &str, sa: &str) -> anyhow::Result<PathBuf> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..TokenRequestSpec::default() }),
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(kube.clone(), namespace)
        .create_token_request(sa, &PostParams::default(), &request)
        .await?
        .status
        .ok_or_else(|| anyhow::anyhow!("TokenRequest has no status"))?
        .token
        .ok_or_else(|| anyhow::anyhow!("TokenRequest has no token"))?;
    let rig = Rig::get();
    let kc = rig.kubeconfig_with_token(&token)?;
    let path = rig.dir.join(format!("kubeconfig-{sa}"));
    std::fs::write(&path, serde_yaml::to_string(&kc)?)?;
    Ok(path)
}

fn forbidden<T: std::fmt::Debug>(r: kube::Result<T>) -> bool {
    matches!(r, Err(kube::Error::Api(e)) if e.code == 403)
}

/// The operator as the ServiceAccount of `kubeconfig` (release `sa`), with leader election on as
/// the chart runs it, its Lease in `lease_ns`; it watches `env`'s namespace only, so that it leaves
/// the other tests' namespaces alone. Once it has done the whole job (a store, an ExternalSecret, a
/// rotation and a rollout restart in that namespace), its world.
async fn whole_job_as(env: TestEnv, kubeconfig: &Path, sa: &str, lease_ns: &str) -> anyhow::Result<World> {
    let ns = env.ns.clone();
    let operator = Operator::start(
        LOCKSTEP,
        kubeconfig,
        &["--namespace", &ns, "--leader-elect", "--lease-name", sa, "--lease-namespace", lease_ns],
        &[("LOCKSTEP_RESTART_DEBOUNCE_SECONDS", "1")],
    )?;
    let w = World { env, operator };
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    w.deployment("api").await?;
    let src = w.create_aws("db", r#"{"password":"one"}"#).await?;
    w.external_secret(
        "db",
        es("aws").refresh("1s").restart("Deployment", "api").property("password", &src, "password"),
    )
    .await?;
    w.wait_reason("db", "SecretSynced").await?;
    w.wait_value("db", "password", "one").await?;
    w.wait_store_ready("aws").await?;

    w.env.aws.put_secret_value().secret_id(&src).secret_string(r#"{"password":"two"}"#).send().await?;
    w.wait_value("db", "password", "two").await?;
    let deployments = w.api::<Deployment>();
    w.eventually("rollout restart", || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("api").await.ok()?;
            d.spec.template.metadata?.annotations?.contains_key("lockstep.dev/restarted-for").then_some(())
        }
    })
    .await?;
    Ok(w)
}

#[tokio::test]
async fn installed_chart_rbac_is_enough_for_the_whole_job() -> anyhow::Result<()> {
    let rig = Rig::get();
    let env = rig.test_env("chart").await?;
    install_crds(&env.kube).await?;
    let sa = helm_install(&env.ns, &[])?;
    let kubeconfig = kubeconfig_for(&env.kube, &env.ns, &sa).await?;

    // The ClusterRole's cluster-wide reads, as the ServiceAccount.
    let as_sa = client_from(&kubeconfig).await?;
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=lockstep").limit(1);
    Api::<Secret>::all(as_sa.clone()).list(&managed).await?;
    Api::<ExternalSecret>::all(as_sa.clone()).list(&ListParams::default().limit(1)).await?;
    Api::<ClusterSecretStore>::all(as_sa.clone()).list(&ListParams::default().limit(1)).await?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(as_sa.clone()).get(&env.ns).await?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(as_sa.clone()).list(&ListParams::default().limit(1)).await?;
    Api::<ClusterExternalSecret>::all(as_sa.clone()).list(&ListParams::default().limit(1)).await?;
    // What a ClusterExternalSecret writes: an ExternalSecret in another namespace, applied and deleted.
    let made = object("ExternalSecret", "made-by-ces", es("aws").key("k", "a"));
    let es_api = Api::<ExternalSecret>::namespaced(as_sa.clone(), &env.ns);
    es_api.patch("made-by-ces", &PatchParams::apply("lockstep").force(), &Patch::Apply(&made)).await?;
    es_api.delete("made-by-ces", &Default::default()).await?;
    // And a ClusterExternalSecret's status (none runs here: the operator below watches one namespace).
    let ces_name = format!("chart-{}", unique());
    let ces = object(
        "ClusterExternalSecret",
        &ces_name,
        json!({"namespaces": [env.ns.clone()],
        "externalSecretSpec": Value::from(es("aws").key("k", "a"))}),
    );
    env.apply(ces).await?;
    let status = json!({"apiVersion": "lockstep.dev/v1alpha1", "kind": "ClusterExternalSecret",
        "status": {"externalSecretName": ces_name}});
    let ces_api = Api::<ClusterExternalSecret>::all(as_sa.clone());
    ces_api.patch_status(&ces_name, &PatchParams::apply("lockstep").force(), &Patch::Apply(&status)).await?;
    Api::<ClusterExternalSecret>::all(env.kube.clone()).delete(&ces_name, &Default::default()).await?;
    assert!(forbidden(Api::<ServiceAccount>::namespaced(as_sa.clone(), &env.ns).list(&ListParams::default()).await));

    // The operator itself, as the ServiceAccount.
    let lease_ns = env.ns.clone();
    let w = whole_job_as(env, &kubeconfig, &sa, &lease_ns).await?;
    let readyz = w.operator.get("/readyz")?;
    assert!(readyz.body.contains("ok"), "{readyz:?}");
    let logs = w.operator.logs();
    // A refusal as the operator logs it ("... (HTTP 403)") or the apiserver words it; not any
    // "403", which a timestamp's fraction or a port number may hold.
    let denied = logs.lines().any(|l| l.contains("HTTP 403") || l.to_lowercase().contains("forbidden"));
    assert!(!denied, "{logs}");
    Ok(())
}

#[tokio::test]
async fn namespace_scoped_install_cannot_read_other_namespaces() -> anyhow::Result<()> {
    let rig = Rig::get();
    let ops = rig.test_env("chart-ops").await?;
    let env = rig.test_env("chart-team").await?;
    install_crds(&env.kube).await?;
    let scope = format!("scope.namespace={}", env.ns);
    let sa = helm_install(&ops.ns, &[&scope])?;
    let kubeconfig = kubeconfig_for(&env.kube, &ops.ns, &sa).await?;
    let as_sa = client_from(&kubeconfig).await?;

    // Its own namespace is readable; the release namespace and the cluster are not.
    Api::<Secret>::namespaced(as_sa.clone(), &env.ns).list(&ListParams::default()).await?;
    assert!(forbidden(Api::<Secret>::namespaced(as_sa.clone(), &ops.ns).get("anything").await));
    assert!(forbidden(Api::<Secret>::namespaced(as_sa.clone(), &ops.ns).list(&ListParams::default()).await));
    assert!(forbidden(Api::<Secret>::all(as_sa.clone()).list(&ListParams::default()).await));
    assert!(forbidden(Api::<ClusterSecretStore>::all(as_sa.clone()).list(&ListParams::default()).await));

    let w = whole_job_as(env, &kubeconfig, &sa, &ops.ns).await?;

    let logs = w.operator.logs();
    assert!(!logs.to_lowercase().contains("forbidden"), "{logs}");
    Ok(())
}

/// `jwt.enabled=true`: the chart's ServiceAccount may request tokens and read ServiceAccounts
/// (for the role annotation) and nothing broader, and the operator running as it syncs through a
/// store with `auth.jwt.serviceAccountRef`.
#[tokio::test]
async fn with_jwt_enabled_the_chart_operator_syncs_through_a_service_account_token() -> anyhow::Result<()> {
    let rig = Rig::get();
    let env = rig.test_env("chart-jwt").await?;
    install_crds(&env.kube).await?;
    let sa = helm_install(&env.ns, &["jwt.enabled=true"])?;
    let kubeconfig = kubeconfig_for(&env.kube, &env.ns, &sa).await?;
    let as_sa = client_from(&kubeconfig).await?;
    env.apply(serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "tenant", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/tenant"}}}))
    .await?;
    let accounts = Api::<ServiceAccount>::namespaced(as_sa.clone(), &env.ns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { audiences: Some(vec!["sts.amazonaws.com".into()]), ..Default::default() }),
        ..Default::default()
    };
    let issued = accounts.create_token_request("tenant", &PostParams::default(), &request).await?;
    assert!(issued.status.and_then(|s| s.token).is_some_and(|t| !t.is_empty()), "a token");
    accounts.get("tenant").await?;
    assert!(forbidden(accounts.list(&ListParams::default()).await), "no listing of ServiceAccounts");
    let mut other = ServiceAccount::default();
    other.metadata.name = Some("made-by-the-operator".into());
    assert!(forbidden(accounts.create(&PostParams::default(), &other).await), "no creating them");

    let ns = env.ns.clone();
    let operator = Operator::start(
        LOCKSTEP,
        &kubeconfig,
        &["--namespace", &ns, "--leader-elect", "--lease-name", &sa, "--lease-namespace", &ns],
        &[],
    )?;
    let w = World { env, operator };
    let jwt = serde_json::json!({"auth": {"jwt": {"serviceAccountRef": {"name": "tenant"}}}});
    w.apply(secret_store("aws", &rig.emulator.endpoint).ambient().aws(jwt)).await?;
    let src = w.create_aws("db", "one").await?;
    w.external_secret("db", es("aws").refresh("1s").key("password", &src)).await?;
    w.wait_value("db", "password", "one").await?;
    let logs = w.operator.logs();
    let denied = logs.lines().any(|l| l.contains("HTTP 403") || l.to_lowercase().contains("forbidden"));
    assert!(!denied, "{logs}");
    Ok(())
}
