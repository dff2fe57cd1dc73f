//! Moving from ESO: a Secret ESO left behind is adopted in place, ESO's `force-sync` habit works,
//! refreshPolicy and metadataPolicy mean what they mean in ESO.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use lockstep::api::ExternalSecret;
use lockstep_rig::Emulator;
use serde_json::json;

use crate::common::*;

/// A Secret as ESO leaves it after `kubectl delete externalsecret X --cascade=orphan`: ESO's labels
/// and annotations, no owner reference.
fn left_by_eso(name: &str, value: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.labels = Some([("reconcile.external-secrets.io/managed".to_string(), "true".to_string())].into());
    s.metadata.annotations = Some([("reconcile.external-secrets.io/data-hash".to_string(), "abc".to_string())].into());
    s.data = Some([("k".to_string(), ByteString(value.as_bytes().to_vec()))].into());
    s
}

#[tokio::test]
async fn a_secret_eso_left_is_adopted_in_place_and_a_foreign_one_is_untouched() -> anyhow::Result<()> {
    let w = World::new("cutover").await?;
    w.store(secret_store("aws", &lockstep_rig::Rig::get().emulator.endpoint)).await?;
    let src = w.create_aws("db", "v1").await?;
    let before = w.secrets().create(&PostParams::default(), &left_by_eso("app", "v1")).await?;
    w.plain_secret("theirs", &[("k", "keep")]).await?;
    let theirs = w.secrets().get("theirs").await?;

    w.external_secret("app", es("aws").refresh("1h").key("k", &src)).await?;
    w.external_secret("theirs", es("aws").refresh("1h").key("k", &src)).await?;
    w.wait_reason("app", "SecretSynced").await?;
    let adopted = w.secrets().get("app").await?;
    assert_eq!(adopted.metadata.uid, before.metadata.uid, "adopted in place, never deleted");
    assert_eq!(text(&adopted, "k"), "v1", "no data change");
    let labels = adopted.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("lockstep"));
    let owners = adopted.metadata.owner_references.clone().unwrap_or_default();
    assert!(owners.iter().any(|o| o.kind == "ExternalSecret" && o.name == "app" && o.controller == Some(true)));

    let msg = w.wait_reason("theirs", "TargetConflict").await?;
    assert!(msg.contains("not managed by this ExternalSecret"), "{msg}");
    let after = w.secrets().get("theirs").await?;
    assert_eq!(after.metadata.resource_version, theirs.metadata.resource_version, "byte-for-byte untouched");
    Ok(())
}

#[tokio::test]
async fn force_sync_annotation_syncs_once_and_our_status_writes_cause_none() -> anyhow::Result<()> {
    let emu = Emulator::dedicated()?;
    let aws = emu.client();
    aws.create_secret().name("force/db").secret_string("v1").send().await?;
    let w = World::new("force").await?;
    w.store(secret_store("aws", &emu.endpoint)).await?;
    w.external_secret("es", es("aws").refresh("1h").key("k", "force/db")).await?;
    w.wait_value("es", "k", "v1").await?;
    w.wait_reason("es", "SecretSynced").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Nothing happens on its own: our own status writes trigger no sync.
    emu.start_recording()?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let idle = emu.recorded()?;
    assert_eq!(idle.get("GetSecretValue"), None, "{idle:?}");

    // kubectl annotate es es force-sync=$(date +%s): exactly one sync, which fetches.
    let stamp = json!({"metadata": {"annotations": {"force-sync": "1764650000"}}});
    w.api::<ExternalSecret>().patch("es", &PatchParams::default(), &Patch::Merge(&stamp)).await?;
    w.eventually("the forced sync", || async {
        let calls = emu.recorded().ok()?;
        (calls.get("GetSecretValue").copied().unwrap_or(0) >= 1).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let calls = emu.stop_recording()?;
    assert_eq!(calls.get("GetSecretValue"), Some(&1), "one sync for one annotation change: {calls:?}");
    let secret = w.secrets().get("es").await?;
    let annotations = secret.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("force-sync").map(String::as_str), Some("1764650000"), "ES metadata copied");
    Ok(())
}

#[tokio::test]
async fn created_once_writes_once_and_metadata_policy_fetch_reads_tags() -> anyhow::Result<()> {
    let w = World::new("policies").await?;
    w.store(secret_store("aws", &lockstep_rig::Rig::get().emulator.endpoint)).await?;
    let once = w.create_aws("once", "v1").await?;
    let tag = aws_sdk_secretsmanager::types::Tag::builder().key("team").value("payments").build();
    let tagged = w.aws_name("tagged");
    w.env.aws.create_secret().name(&tagged).secret_string("x").tags(tag).send().await?;

    let mut created_once = es("aws").refresh("1s").key("k", &once).manifest("once");
    created_once["spec"]["refreshPolicy"] = json!("CreatedOnce");
    w.apply(created_once).await?;
    w.wait_value("once", "k", "v1").await?;
    w.wait_reason("once", "SecretSynced").await?;
    w.env.aws.put_secret_value().secret_id(&once).secret_string("v2").send().await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(text(&w.secrets().get("once").await?, "k"), "v1", "CreatedOnce never updates");
    let status = w.api::<ExternalSecret>().get("once").await?.status.expect("a status");
    assert!(status.refresh_time.is_some(), "status.refreshTime says when it was written");

    let fetch =
        es("aws").refresh("1s").remote("team", json!({"key": tagged, "metadataPolicy": "Fetch", "property": "team"}));
    let all = es("aws").refresh("1s").remote("tags", json!({"key": tagged, "metadataPolicy": "Fetch"}));
    w.external_secret("team", fetch).await?;
    w.external_secret("tags", all).await?;
    w.wait_value("team", "team", "payments").await?;
    w.wait_value("tags", "tags", r#"{"team":"payments"}"#).await?;
    Ok(())
}

/// One corpus file: ESO manifests, and in its header what AWS holds (`# expect: name = value`, in
/// order: a repeated name is a new version) and what the Secret must hold (`# want: key = value`),
/// or what admission must say (`# refused: ...`).
struct Corpus {
    path: std::path::PathBuf,
    text: String,
}

impl Corpus {
    fn all(dir: &str) -> anyhow::Result<Vec<Corpus>> {
        let dir = lockstep_rig::repo_root().join("tests/migration").join(dir);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
                out.push(Corpus { text: std::fs::read_to_string(&path)?, path });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        anyhow::ensure!(!out.is_empty(), "no corpus in {}", dir.display());
        Ok(out)
    }

    fn header(&self, tag: &str) -> Vec<(String, String)> {
        let prefix = format!("# {tag}: ");
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|l| match l.split_once(" = ") {
                Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                None => (l.trim().to_string(), String::new()),
            })
            .collect()
    }

    /// The ESO manifests with the test's endpoint and names filled in.
    fn filled(&self, endpoint: &str, prefix: &str, versions: &[String]) -> String {
        let mut text = self.text.replace("ENDPOINT", endpoint).replace("PREFIX", prefix);
        for (i, v) in versions.iter().enumerate() {
            text = text.replace(&format!("VERSION_{i}"), v);
        }
        text
    }

    /// The manifests with only `apiVersion` changed.
    fn as_lockstep(&self, endpoint: &str, prefix: &str, versions: &[String]) -> String {
        self.filled(endpoint, prefix, versions)
            .replace("apiVersion: external-secrets.io/v1", "apiVersion: lockstep.dev/v1alpha1")
    }

    fn name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()
    }
}

/// `kubectl apply --server-side` with strict field validation, as a user applies a manifest.
fn kubectl_apply(ns: &str, manifests: &str) -> anyhow::Result<std::process::Output> {
    use std::io::Write;
    let rig = lockstep_rig::Rig::get();
    let mut child = std::process::Command::new(lockstep_rig::tools_dir().join("bin/kubectl"))
        .arg("--kubeconfig")
        .arg(&rig.kubeconfig)
        .args(["--namespace", ns, "apply", "--server-side", "--validate=strict", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?.write_all(manifests.as_bytes())?;
    Ok(child.wait_with_output()?)
}

#[tokio::test]
async fn eso_manifests_apply_with_only_the_api_version_changed_and_sync() -> anyhow::Result<()> {
    for corpus in Corpus::all("supported")? {
        let name = corpus.name();
        let w = World::new("corpus").await?;
        w.apply(secret("awssm-secret", json!({"access-key": "testing", "secret-access-key": "testing"}))).await?;
        let mut versions = Vec::new();
        for (short, value) in corpus.header("expect") {
            let key = format!("{}/{short}", w.ns());
            let created = w.env.aws.create_secret().name(&key).secret_string(&value).send().await;
            let version = match created {
                Ok(out) => out.version_id,
                Err(_) => w.env.aws.put_secret_value().secret_id(&key).secret_string(&value).send().await?.version_id,
            };
            versions.push(version.unwrap_or_default());
        }
        let endpoint = &lockstep_rig::Rig::get().emulator.endpoint;
        // Half the corpus goes in with apiVersion changed by hand, half through `lockstep convert`;
        // both must give the same objects.
        let by_hand = corpus.as_lockstep(endpoint, w.ns(), &versions);
        let (status, converted, warnings) = convert(&corpus.filled(endpoint, w.ns(), &versions), &[])?;
        anyhow::ensure!(status.success() && warnings.is_empty(), "{name}: convert said {warnings}");
        assert_eq!(yaml_docs(&converted), yaml_docs(&by_hand), "{name}: convert changes only apiVersion");
        let manifests = if versions.len() % 2 == 0 { by_hand } else { converted };
        let out = kubectl_apply(w.ns(), &manifests)?;
        anyhow::ensure!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let target = target_of(&corpus.text);
        for (key, value) in corpus.header("want") {
            w.wait_value(&target, &key, &value).await.map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        }
    }
    Ok(())
}

/// The Secret an ExternalSecret of the corpus writes: target.name, else its own name.
fn target_of(text: &str) -> String {
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(text).filter_map(|d| serde::Deserialize::deserialize(d).ok()).collect();
    let es = docs.iter().find(|d| d["kind"] == "ExternalSecret").expect("an ExternalSecret in the corpus file");
    es["spec"]["target"]["name"].as_str().or(es["metadata"]["name"].as_str()).expect("a name").to_string()
}

#[tokio::test]
async fn eso_fields_lockstep_does_not_support_are_refused_by_name() -> anyhow::Result<()> {
    let env = lockstep_rig::Rig::get().test_env("refused").await?;
    install_crds(&env.kube).await?;
    for corpus in Corpus::all("unsupported")? {
        let name = corpus.name();
        let refused = corpus.header("refused");
        let (want, _) = refused.first().ok_or_else(|| anyhow::anyhow!("{name}: no `# refused:` line"))?;
        let out = kubectl_apply(&env.ns, &corpus.as_lockstep("http://127.0.0.1:9", &env.ns, &[]))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: must be refused");
        assert!(stderr.contains(want.as_str()), "{name}: want {want:?} in {stderr}");

        // `lockstep convert` refuses it too: a warning naming the object, nothing written, exit 1;
        // with --allow-partial, exit 0 and still nothing written for it.
        let eso = corpus.filled("http://127.0.0.1:9", &env.ns, &[]);
        let (status, converted, warnings) = convert(&eso, &[])?;
        assert!(!status.success(), "{name}: convert must exit non-zero");
        assert!(warnings.contains("warning: ") && warnings.contains("not converted"), "{name}: {warnings}");
        assert!(yaml_docs(&converted).is_empty(), "{name}: nothing written: {converted}");
        let (status, _, _) = convert(&eso, &["--allow-partial"])?;
        assert!(status.success(), "{name}: --allow-partial exits 0");
    }
    Ok(())
}

/// Run `lockstep convert` on `input` (stdin): exit status, stdout, stderr.
fn convert(input: &str, args: &[&str]) -> anyhow::Result<(std::process::ExitStatus, String, String)> {
    use std::io::Write;
    let mut child = std::process::Command::new(LOCKSTEP)
        .arg("convert")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?.write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((out.status, String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into()))
}

/// The documents of a YAML stream, comments and layout aside.
fn yaml_docs(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}
