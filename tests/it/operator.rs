//! The operator end to end: CRDs, stores, ExternalSecrets, policies, failures.

use aws_sdk_secretsmanager::primitives::Blob;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use lockstep::api::ExternalSecret;
use lockstep_rig::{ControlPlane, Emulator, Fault, FaultProxy, Rig};
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn syncs_properties_and_follows_a_rotation() -> anyhow::Result<()> {
    let w = World::new("sync").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    let db = w.create_aws("db", r#"{"username":"app","password":"pw1","conn":{"host":"h1"},"a.b":"dotted"}"#).await?;
    w.external_secret(
        "db",
        es("aws")
            .refresh("1s")
            .property("password", &db, "password")
            .property("host", &db, "conn.host")
            .property("dotted", &db, "a.b")
            .key("whole", &db),
    )
    .await?;
    w.wait_reason("db", "SecretSynced").await?;
    let s = w.wait_value("db", "password", "pw1").await?;
    assert_eq!(text(&s, "host"), "h1");
    assert_eq!(text(&s, "dotted"), "dotted");
    assert!(text(&s, "whole").contains("\"username\""));
    let labels = s.labels();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("lockstep"));
    let owner = s.owner_references().first().cloned().ok_or_else(|| anyhow::anyhow!("no owner"))?;
    assert_eq!(owner.kind, "ExternalSecret");
    assert_eq!(owner.controller, Some(true));
    let ann = s.annotations();
    assert_eq!(ann.get("lockstep.dev/data-hash").map(String::len), Some(64));
    assert!(ann.get("lockstep.dev/source-versions").is_some_and(|v| v.contains(&db)));

    let es = w.api::<ExternalSecret>().get("db").await?;
    let status = es.status.clone().expect("a synced ExternalSecret has a status");
    assert_eq!(status.observed_generation, es.metadata.generation);
    assert_eq!(status.sources.len(), 1);
    assert_eq!(status.sources[0].version_stage.as_deref(), Some("AWSCURRENT"));
    assert!(status.synced_resource_version.is_some());

    // Rotation: a new AWSCURRENT reaches the Secret.
    w.env
        .aws
        .put_secret_value()
        .secret_id(&db)
        .secret_string(r#"{"username":"app","password":"pw2","conn":{"host":"h1"},"a.b":"dotted"}"#)
        .send()
        .await?;
    w.wait_value("db", "password", "pw2").await?;

    // An Event on the transition to SecretSynced.
    let events = Api::<Event>::namespaced(w.env.kube.clone(), w.ns());
    w.eventually("SecretSynced event", || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.iter().any(|e| e.reason.as_deref() == Some("SecretSynced")).then_some(())
        }
    })
    .await?;

    // Metrics count the AWS calls and hold no value.
    let metrics = w.operator.metrics()?;
    let text = metrics.text();
    assert!(text.contains("lockstep_aws_calls_total{"), "{text}");
    assert!(text.contains("operation=\"GetSecretValue\""), "{text}");
    assert!(!text.contains("pw1") && !text.contains("pw2"));
    let timed = metrics.value("lockstep_change_to_applied_seconds_count", &[]);
    assert!(timed.is_some_and(|n| n >= 1.0), "the rotation is timed from detection to apply: {text}");
    assert!(w.operator.get("/readyz")?.body.contains("ok"));
    Ok(())
}

#[tokio::test]
async fn extract_binary_and_explicit_versions() -> anyhow::Result<()> {
    let w = World::new("extract").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    let cfg = w.create_aws("cfg", r#"{"user":"u","port":5432,"nested":{"k":true}}"#).await?;
    let bin = w.aws_name("bin");
    let created =
        w.env.aws.create_secret().name(&bin).secret_binary(Blob::new(vec![0u8, 159, 146, 150, 255])).send().await?;
    let first_version = created.version_id().expect("CreateSecret answers with the version id").to_string();
    w.env.aws.put_secret_value().secret_id(&bin).secret_binary(Blob::new(vec![1u8, 2, 3])).send().await?;
    w.external_secret(
        "mix",
        es("aws")
            .refresh("0")
            .key("bin", &bin)
            .remote("old-bin", json!({"key": bin, "version": format!("uuid/{first_version}")}))
            .remote("prev-bin", json!({"key": bin, "version": "AWSPREVIOUS"}))
            .extract(&cfg),
    )
    .await?;
    w.wait_reason("mix", "SecretSynced").await?;
    let s = w.secrets().get("mix").await?;
    let data = s.data.clone().expect("the Secret has data");
    assert_eq!(data["bin"].0, vec![1u8, 2, 3]);
    assert_eq!(data["old-bin"].0, vec![0u8, 159, 146, 150, 255]);
    assert_eq!(data["prev-bin"].0, vec![0u8, 159, 146, 150, 255]);
    assert_eq!(text(&s, "user"), "u");
    assert_eq!(text(&s, "port"), "5432");
    assert_eq!(text(&s, "nested"), r#"{"k":true}"#);
    Ok(())
}

#[tokio::test]
async fn creation_policies() -> anyhow::Result<()> {
    let w = World::new("policy").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    let src = w.create_aws("src", r#"{"k":"v"}"#).await?;
    let into = |name: &str, policy: &str| {
        es("aws").refresh("1s").target(json!({"name": name, "creationPolicy": policy})).property("k", &src, "k")
    };

    // Owner never takes over a Secret it does not manage.
    w.plain_secret("taken", &[("mine", "keep")]).await?;
    let theirs = w.secrets().get("taken").await?.metadata.resource_version;
    w.external_secret("owner", into("taken", "Owner")).await?;
    let msg = w.wait_reason("owner", "TargetConflict").await?;
    assert!(msg.contains("taken") && msg.contains("not managed"), "{msg}");
    let s = w.secrets().get("taken").await?;
    assert_eq!(s.metadata.resource_version, theirs, "a Secret owned by someone else is never written");
    assert_eq!(text(&s, "mine"), "keep");
    assert!(!s.data.expect("the Secret has data").contains_key("k"), "the conflicting Secret must stay untouched");

    // Orphan: written without an owner reference.
    w.external_secret("orphan", into("orphaned", "Orphan")).await?;
    w.wait_reason("orphan", "SecretSynced").await?;
    let s = w.wait_value("orphaned", "k", "v").await?;
    assert!(s.owner_references().is_empty());

    // Merge: our key is added, the others stay.
    w.plain_secret("shared", &[("other", "stays")]).await?;
    w.external_secret("merge", into("shared", "Merge")).await?;
    w.wait_reason("merge", "SecretSynced").await?;
    let s = w.wait_value("shared", "k", "v").await?;
    assert_eq!(text(&s, "other"), "stays");

    // Merge into nothing is a clear conflict.
    w.external_secret("merge-missing", into("absent", "Merge")).await?;
    let msg = w.wait_reason("merge-missing", "TargetConflict").await?;
    assert!(msg.contains("Merge"), "{msg}");

    // None: nothing is written.
    w.external_secret("none", into("never", "None")).await?;
    w.wait_reason("none", "SecretSynced").await?;
    assert!(w.secrets().get_opt("never").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn deletion_policies() -> anyhow::Result<()> {
    let w = World::new("deletion").await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    for policy in ["Retain", "Delete"] {
        let src = w.create_aws(&format!("gone-{policy}"), "v").await?;
        let name = policy.to_lowercase();
        w.external_secret(&name, es("aws").refresh("1s").target(json!({"deletionPolicy": policy})).key("k", &src))
            .await?;
        w.wait_value(&name, "k", "v").await?;
        w.env.aws.delete_secret().secret_id(&src).force_delete_without_recovery(true).send().await?;
        w.wait_reason(&name, "SecretNotFound").await?;
    }
    // Retain keeps the Secret as it was; Delete removes it.
    let kept = w.secrets().get("retain").await?;
    assert_eq!(text(&kept, "k"), "v");
    let secrets = w.secrets();
    w.eventually("Secret deleted by deletionPolicy Delete", || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("delete").await.ok()?.is_none().then_some(()) }
    })
    .await?;
    Ok(())
}

/// Bad input, one row each: the exact reason, a message that names what to fix, and the Secret
/// synced before stays exactly as it was (same data, same resourceVersion).
#[tokio::test]
async fn failures_keep_the_secret_and_say_why() -> anyhow::Result<()> {
    let w = World::new("fail").await?;
    let rig = Rig::get();
    let endpoint = &rig.emulator.endpoint;
    w.store(secret_store("aws", endpoint)).await?;
    let src = w.create_aws("src", r#"{"password":"good"}"#).await?;
    w.external_secret("es", es("aws").refresh("1s").property("p", &src, "password")).await?;
    w.wait_reason("es", "SecretSynced").await?;
    let before = w.wait_value("es", "p", "good").await?;

    // What the rows need: AWS secrets in odd states, stores that cannot work.
    let plain = w.create_aws("plain", "not json good").await?;
    let doomed = w.create_aws("doomed", "v").await?;
    w.env.aws.delete_secret().secret_id(&doomed).recovery_window_in_days(7).send().await?;
    let gone = w.create_aws("gone", "v").await?;
    w.env.aws.delete_secret().secret_id(&gone).force_delete_without_recovery(true).send().await?;
    // ".." stays invalid after conversion (only invalid characters are converted).
    let badkey = w.create_aws("badkey", r#"{"..":"good"}"#).await?;
    let twins = w.create_aws("twins", r#"{"a":"good","b":"good"}"#).await?;
    let big = w.create_aws("big", &"x".repeat(60_000)).await?;
    w.apply(secret("half-creds", json!({"access-key-id": "testing"}))).await?;
    w.apply(secret_store("half", endpoint).creds("half-creds")).await?;
    w.apply(secret_store("nocreds", endpoint).creds("absent-creds")).await?;
    // A store of the same name in another namespace is not this namespace's store.
    let other = rig.test_env("fail-other").await?;
    other.apply(secret_store("foreign", endpoint).ambient()).await?;
    let excluding = format!("excl-{}", lockstep_rig::unique());
    w.apply(cluster_store(&excluding, endpoint).ambient().conditions(json!([{"namespaces": ["somebody-else"]}])))
        .await?;

    let one = |remote: serde_json::Value| es("aws").refresh("1s").remote("p", remote);
    let extract = |key: &str, rewrite: serde_json::Value| {
        es("aws").refresh("1s").data_from(json!({"extract": {"key": key}, "rewrite": rewrite}))
    };
    let from = |store: &str| es(store).refresh("1s").key("p", &src);
    let too_large = (0..20).fold(es("aws").refresh("1s"), |e, i| e.key(&format!("k{i}"), &big));
    let nope = w.aws_name("nope");
    // (what, spec, reason, every one of these in the message)
    let cases: Vec<(&str, Es, &str, Vec<&str>)> = vec![
        ("unknown store", from("nope"), "StoreNotReady", vec!["SecretStore \"nope\" not found"]),
        ("store in another namespace", from("foreign"), "StoreNotReady", vec!["\"foreign\" not found", w.ns()]),
        (
            "ClusterSecretStore that excludes the namespace",
            from(&excluding).kind("ClusterSecretStore"),
            "StoreNotAllowed",
            vec![&excluding, w.ns(), "spec.conditions"],
        ),
        ("credential Secret missing", from("nocreds"), "StoreNotReady", vec!["absent-creds", "not found"]),
        ("credential Secret missing a key", from("half"), "StoreNotReady", vec!["half-creds", "secret-access-key"]),
        ("AWS secret missing", one(json!({"key": nope})), "SecretNotFound", vec![&nope]),
        (
            "AWS secret scheduled for deletion",
            one(json!({"key": doomed})),
            "SecretNotFound",
            vec![&doomed, "scheduled for deletion"],
        ),
        ("AWS secret deleted", one(json!({"key": gone})), "SecretNotFound", vec![&gone]),
        ("property missing", one(json!({"key": src, "property": "nope"})), "PropertyNotFound", vec!["\"nope\"", &src]),
        (
            "non-JSON value with a property",
            one(json!({"key": plain, "property": "x"})),
            "InvalidValue",
            vec!["not JSON", &plain],
        ),
        ("invalid Secret key", extract(&badkey, json!([])), "InvalidValue", vec!["\"..\"", "rewrite rule"]),
        (
            "duplicate target keys",
            extract(&twins, json!([{"regexp": {"source": "^.+$", "target": "same"}}])),
            "KeyConflict",
            vec!["\"same\"", "rewrite"],
        ),
        ("target over 1 MiB", too_large, "TargetTooLarge", vec!["1 MiB"]),
    ];
    for (what, spec, reason, needles) in cases {
        w.external_secret("es", spec).await?;
        let msg = w.wait_reason("es", reason).await.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        for needle in needles {
            assert!(msg.contains(needle), "{what}: the message should name {needle:?}: {msg}");
        }
        assert!(!msg.contains("good"), "{what}: message leaks the value: {msg}");
        let after = w.secrets().get("es").await?;
        assert_eq!(after.data, before.data, "{what}: the Secret must stay as it was");
        assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "{what}: the Secret was written");
    }

    // Emulator unreachable (a closed loopback port).
    w.store(secret_store("down", "http://127.0.0.1:9")).await?;
    w.external_secret("es", from("down")).await?;
    w.wait_reason("es", "ProviderUnavailable").await?;

    // Throttled and denied, injected by the fault proxy.
    let proxy = FaultProxy::start(endpoint)?;
    w.store(secret_store("proxied", &proxy.endpoint)).await?;
    proxy.set(Fault::Throttle);
    w.external_secret("es", es("proxied").refresh("1s").property("p", &src, "password")).await?;
    w.wait_reason("es", "Throttled").await?;
    proxy.set(Fault::Deny);
    w.wait_reason("es", "AccessDenied").await?;
    let after = w.secrets().get("es").await?;
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "throttled or denied: untouched");
    proxy.set(Fault::Pass);
    w.wait_reason("es", "SecretSynced").await?;
    assert_eq!(text(&w.secrets().get("es").await?, "p"), "good");

    assert!(!w.operator.logs().contains("good"), "the operator log must not hold a secret value");
    Ok(())
}

#[tokio::test]
async fn cluster_store_conditions() -> anyhow::Result<()> {
    let w = World::new("cluster").await?;
    let rig = Rig::get();
    let src = w.create_aws("src", "v").await?;
    let allowed = format!("allow-{}", lockstep_rig::unique());
    let denied = format!("deny-{}", lockstep_rig::unique());
    w.apply(creds()).await?;
    for (name, conditions) in [
        (&allowed, json!([{"namespaces": [w.ns()]}])),
        (&denied, json!([{"namespaceSelector": {"matchLabels": {"tenant": "other"}}}])),
    ] {
        w.apply(cluster_store(name, &rig.emulator.endpoint).creds_in(w.ns()).conditions(conditions)).await?;
    }
    for (name, store) in [("ok", &allowed), ("no", &denied)] {
        w.external_secret(name, es(store).kind("ClusterSecretStore").refresh("1s").key("k", &src)).await?;
    }
    w.wait_value("ok", "k", "v").await?;
    let msg = w.wait_reason("no", "StoreNotAllowed").await?;
    assert!(msg.contains(w.ns()), "{msg}");

    // Labelling the namespace admits it.
    Api::<Namespace>::all(w.env.kube.clone())
        .patch(w.ns(), &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"tenant": "other"}}})))
        .await?;
    w.wait_value("no", "k", "v").await?;
    Ok(())
}

#[tokio::test]
async fn assume_role_goes_to_the_configured_endpoint() -> anyhow::Result<()> {
    let w = World::new("role").await?;
    let emu = Emulator::dedicated()?;
    emu.client().create_secret().name("team/db").secret_string("v").send().await?;
    emu.start_recording()?;
    let role = json!({"role": "arn:aws:iam::123456789012:role/reader", "externalID": "ext"});
    w.store(secret_store("aws", &emu.endpoint).aws(role)).await?;
    w.external_secret("es", es("aws").refresh("1h").key("k", "team/db")).await?;
    w.wait_value("es", "k", "v").await?;
    w.wait_store_ready("aws").await?;
    let calls = emu.stop_recording()?;
    assert!(calls.get("AssumeRole").copied().unwrap_or(0) >= 1, "STS AssumeRole must reach the emulator: {calls:?}");
    assert!(calls.get("GetCallerIdentity").copied().unwrap_or(0) >= 1, "{calls:?}");
    let metrics = w.operator.metrics()?;
    let counted = metrics.value("lockstep_aws_calls_total", &[("operation", "AssumeRole"), ("outcome", "success")]);
    assert_eq!(counted, calls.get("AssumeRole").map(|n| *n as f64), "every STS call is counted: {}", metrics.text());
    Ok(())
}

#[tokio::test]
async fn ambient_web_identity_uses_the_store_endpoint_for_sts() -> anyhow::Result<()> {
    let emu = Emulator::dedicated()?;
    emu.client().create_secret().name("irsa/db").secret_string("v").send().await?;
    let token = emu.dir.join("token");
    std::fs::write(&token, "projected-service-account-token")?;
    let token = token.to_string_lossy().to_string();
    let w = World::with_env(
        "irsa",
        &[
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    )
    .await?;
    emu.start_recording()?;
    w.apply(secret_store("aws", &emu.endpoint).ambient()).await?;
    w.external_secret("es", es("aws").refresh("1h").key("k", "irsa/db")).await?;
    w.wait_value("es", "k", "v").await?;
    let calls = emu.stop_recording()?;
    assert!(calls.get("AssumeRoleWithWebIdentity").copied().unwrap_or(0) >= 1, "{calls:?}");
    let metrics = w.operator.metrics()?;
    let counted = metrics.value("lockstep_aws_calls_total", &[("operation", "AssumeRoleWithWebIdentity")]);
    assert_eq!(counted, calls.get("AssumeRoleWithWebIdentity").map(|n| *n as f64), "{}", metrics.text());
    Ok(())
}

#[tokio::test]
async fn admission_rejects_invalid_specs_with_readable_messages() -> anyhow::Result<()> {
    let env = Rig::get().test_env("admission").await?;
    install_crds(&env.kube).await?;
    let version = json!({"key": "a", "version": "uuid/"});
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "ExternalSecret",
            es("s").remote("k", version).into(),
            "remoteRef.version uuid/<versionId> needs the version id",
        ),
        ("ExternalSecret", es("s").key("bad key", "a").into(), "must be a valid Secret key"),
        ("ExternalSecret", es("s").into(), "at least one entry in data or dataFrom"),
        ("ExternalSecret", es("s").refresh("soon").key("k", "a").into(), "refreshInterval must be a duration"),
        ("ExternalSecret", es("s").key(".", "a").into(), "data[].secretKey must not be '.' or '..'"),
        ("ExternalSecret", es("s").key("..", "a").into(), "data[].secretKey must not be '.' or '..'"),
        ("ExternalSecret", es("s").key("..foo", "a").into(), "data[].secretKey must not start with '..'"),
        (
            "ExternalSecret",
            es("s").key("", "a").into(),
            "spec.data[0].secretKey in body should be at least 1 chars long",
        ),
        (
            "ExternalSecret",
            es("s").key(&"k".repeat(254), "a").into(),
            "spec.data[0].secretKey: Too long: may not be more than 253 bytes",
        ),
        (
            "ExternalSecret",
            es("s").refresh("100ms").key("k", "a").into(),
            "refreshInterval must be 0 (sync once) or at least 1s",
        ),
        (
            "ExternalSecret",
            es("s").refresh("0.5s").key("k", "a").into(),
            "refreshInterval must be 0 (sync once) or at least 1s",
        ),
        (
            "ExternalSecret",
            es("s").key("k", "a").key("k", "b").into(),
            "duplicate entries for key [secretKey=\\\"k\\\"]",
        ),
        (
            "ExternalSecret",
            es("s").target(json!({"name": "Not_Valid"})).key("k", "a").into(),
            "target.name must be a valid Secret name",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "mars"}}}),
            "provider.aws.region must be an AWS region",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1", "role": "reader"}}}),
            "provider.aws.role must be an IAM role ARN",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1", "auth": {"secretRef": {
            "accessKeyIDSecretRef": {"name": "c", "key": "a", "namespace": "elsewhere"},
            "secretAccessKeySecretRef": {"name": "c", "key": "b"}}}}}}),
            "reads credentials from its own namespace",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1", "auth": {"secretRef": {
            "accessKeyIDSecretRef": {"name": "c", "key": "a"}, "secretAccessKeySecretRef": {"name": "c", "key": "b"},
            "sessionTokenSecretRef": {"name": "c", "key": "t", "namespace": "elsewhere"}}}}}}),
            "reads credentials from its own namespace",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1", "endpoint": "ftp://x"}}}),
            "provider.aws.endpoint must be an http(s) URL",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1", "stsEndpoint": "not a url"}}}),
            "provider.aws.stsEndpoint must be an http(s) URL",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1", "auth": {}}}}),
            "provider.aws.auth needs exactly one of secretRef or jwt",
        ),
        (
            "ClusterSecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1",
                "auth": {"jwt": {"serviceAccountRef": {"name": "sa"}}},
                "events": {"queueURL": "https://sqs.us-east-1.amazonaws.com/123456789012/q"}}}}),
            "a referent ClusterSecretStore (credentials from each ExternalSecret's namespace) cannot read provider.aws.events",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1",
                "sessionTags": [{"key": "team", "value": "a"}]}}}),
            "are tags of the session of provider.aws.role: set role",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1",
                "additionalRoles": ["not-an-arn"]}}}),
            "additionalRoles",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1",
                "events": {"queueURL": "arn:aws:sqs:us-east-1:123456789012:q"}}}}),
            "provider.aws.events.queueURL must be an SQS queue URL",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1",
                "events": {"queueURL": "https://sqs.us-east-1.amazonaws.com/123456789012/q", "fallbackInterval": "30s"}}}}),
            "provider.aws.events.fallbackInterval must be a duration of at least 1m",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1",
                "events": {"queueURL": "https://sqs.us-east-1.amazonaws.com/123456789012/q", "sqsEndpoint": "sqs"}}}}),
            "provider.aws.events.sqsEndpoint must be an http(s) URL",
        ),
        (
            "SecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1", "events": {}}}}),
            "queueURL",
        ),
        (
            "ClusterSecretStore",
            json!({"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1", "auth": {"secretRef": {
            "accessKeyIDSecretRef": {"name": "c", "key": "a", "namespace": "n"},
            "secretAccessKeySecretRef": {"name": "c", "key": "b"}}}}}}),
            "a ClusterSecretStore names the namespace of every Secret in provider.aws.auth.secretRef, or of none",
        ),
        (
            "ClusterSecretStore",
            json!({"conditions": [{}], "provider": {"aws": {"service": "SecretsManager", "region": "us-east-1"}}}),
            "each condition needs namespaces, namespaceSelector or namespaceRegexes",
        ),
        (
            "ExternalSecret",
            es("s").data_from(json!({"extract": {"key": "a"}, "find": {"path": "p"}})).into(),
            "each dataFrom entry needs exactly one of extract or find",
        ),
        (
            "ExternalSecret",
            es("s")
                .key("k", "a")
                .template(
                    json!({"templateFrom": [{"literal": "a: b", "configMap": {"name": "c", "items": [{"key": "k"}]}}]}),
                )
                .into(),
            "each template.templateFrom entry needs exactly one of configMap, secret or literal",
        ),
        (
            "ExternalSecret",
            es("s").key("k", "a").template(json!({"templateFrom": [{"configMap": {"name": "c", "items": []}}]})).into(),
            "items",
        ),
        (
            "ExternalSecret",
            es("s").data_from(json!({})).into(),
            "each dataFrom entry needs exactly one of extract or find",
        ),
        (
            "ExternalSecret",
            es("s").data_from(json!({"find": {}})).into(),
            "find needs at least one of path, name.regexp or tags",
        ),
        (
            "ExternalSecret",
            es("s").data_from(json!({"find": {"tags": {"t".repeat(129): "v"}}})).into(),
            "tag keys must be at most 128 characters",
        ),
        (
            "ExternalSecret",
            es("s").template(json!({"data": {"bad key": "x"}})).key("k", "a").into(),
            "template.data keys must be valid Secret keys",
        ),
        (
            "ExternalSecret",
            es("s").template(json!({"data": {"": "x"}})).key("k", "a").into(),
            "template.data keys must be valid Secret keys",
        ),
        (
            "ExternalSecret",
            es("s").template(json!({"data": {"k".repeat(254): "x"}})).key("k", "a").into(),
            "template.data keys must be at most 253 characters",
        ),
        (
            "ExternalSecret",
            es("s").template(json!({"data": {"..": "x"}})).key("k", "a").into(),
            "template.data keys must not be '.' or '..'",
        ),
        (
            "ExternalSecret",
            es("s").template(json!({"data": {"..x": "x"}})).key("k", "a").into(),
            "template.data keys must not start with '..'",
        ),
        (
            "ExternalSecret",
            es("s").template(json!({"metadata": {"labels": {"l".repeat(318): "v"}}})).key("k", "a").into(),
            "label keys must be at most 317 characters",
        ),
        (
            "ExternalSecret",
            es("s").template(json!({"metadata": {"annotations": {"a".repeat(318): "v"}}})).key("k", "a").into(),
            "annotation keys must be at most 317 characters",
        ),
        (
            "ClusterExternalSecret",
            json!({"externalSecretSpec": Value::from(es("s").key("k", "a"))}),
            "spec needs namespaceSelectors or namespaces",
        ),
        (
            "ClusterExternalSecret",
            json!({"namespaces": ["a"], "externalSecretSpec": Value::from(es("s"))}),
            "spec needs at least one entry in data or dataFrom",
        ),
        (
            "ClusterExternalSecret",
            json!({"namespaces": ["a"], "refreshTime": "soon", "externalSecretSpec": Value::from(es("s").key("k", "a"))}),
            "refreshTime must be a duration",
        ),
        (
            "ClusterExternalSecret",
            json!({"namespaces": ["a"], "refreshTime": "500ms", "externalSecretSpec": Value::from(es("s").key("k", "a"))}),
            "refreshTime must be at least 1s",
        ),
        (
            "ClusterExternalSecret",
            json!({"namespaces": ["a"], "externalSecretName": "Not_Valid", "externalSecretSpec": Value::from(es("s").key("k", "a"))}),
            "externalSecretName must be a valid object name",
        ),
        (
            "ClusterExternalSecret",
            json!({"namespaces": ["a"], "externalSecretMetadata": {"labels": {"lockstep.dev/cluster-external-secret": "x"}},
                "externalSecretSpec": Value::from(es("s").key("k", "a"))}),
            "must not set lockstep.dev/cluster-external-secret",
        ),
        (
            "ClusterExternalSecret",
            json!({"namespaceSelectors": [{"matchLabels": {"team": "a"}}], "externalSecretSpec": Value::from(es("s").key("k", "a"))}),
            "",
        ),
        // Valid for Kubernetes, so accepted (an empty want: no error).
        (
            "ExternalSecret",
            es("s")
                .refresh("1s")
                .template(json!({"data": {".foo": "x", "a..b": "y", "k".repeat(253): "z"}}))
                .key(".foo", "a")
                .key("a..b", "a")
                .key(&"k".repeat(253), "a")
                .into(),
            "",
        ),
        ("ExternalSecret", es("s").refresh("0").key("k", "a").into(), ""),
        ("ExternalSecret", es("s").refresh("1h30m").key("k", "a").into(), ""),
    ];
    for (i, (kind, spec, want)) in cases.into_iter().enumerate() {
        let name = format!("bad-{i}-{}", lockstep_rig::unique());
        if want.is_empty() {
            env.apply(object(kind, &name, spec))
                .await
                .map_err(|e| anyhow::anyhow!("case {i} must be accepted: {e}"))?;
            continue;
        }
        let err = env.rejection(object(kind, &name, spec)).await.map_err(|e| anyhow::anyhow!("case {i}: {e}"))?;
        assert!(err.contains(want), "case {i} ({kind}): want {want:?} in {err:?}");
    }
    // A ClusterExternalSecret's name is the value of a label on what it creates.
    let long = object(
        "ClusterExternalSecret",
        &"c".repeat(64),
        json!({"namespaces": ["a"],
        "externalSecretSpec": Value::from(es("s").key("k", "a"))}),
    );
    let err = env.rejection(long).await?;
    assert!(err.contains("name must be at most 63 characters"), "{err}");
    Ok(())
}

/// `kubectl get lses`: REFRESH shows the interval the apiserver defaulted; `-o wide` adds MESSAGE.
#[tokio::test]
async fn kubectl_get_shows_the_defaulted_refresh_and_wide_shows_the_message() -> anyhow::Result<()> {
    let rig = Rig::get();
    let env = rig.test_env("columns").await?;
    install_crds(&env.kube).await?;
    let name = format!("cols-{}", lockstep_rig::unique());
    env.apply(es("s").key("k", "a").manifest(&name)).await?;
    let api = Api::<lockstep::api::ExternalSecret>::namespaced(env.kube.clone(), &env.ns);
    let es = api.get(&name).await?;
    assert_eq!(es.spec.refresh_interval.as_deref(), Some(lockstep::api::DEFAULT_REFRESH_INTERVAL));
    assert_eq!(es.spec.refresh(), Ok(Some(lockstep::api::DEFAULT_REFRESH)));
    let message = "AWS secret \"a\" was not found";
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "SecretNotFound",
        "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await?;

    let kubeconfig = rig.kubeconfig.to_str().unwrap_or_default();
    let get = |extra: &[&str]| -> anyhow::Result<Vec<String>> {
        let mut args = vec!["--kubeconfig", kubeconfig, "--namespace", &env.ns, "get", "lses", &name];
        args.extend(extra);
        let out = std::process::Command::new(lockstep_rig::tools_dir().join("bin/kubectl")).args(&args).output()?;
        anyhow::ensure!(out.status.success(), "kubectl get: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
    };
    let plain = get(&[])?;
    let words = |line: &str| line.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(words(&plain[0]), ["NAME", "STORE", "REFRESH", "READY", "REASON", "AGE"], "{plain:?}");
    assert_eq!(words(&plain[1])[..5], [name.as_str(), "s", "1h", "False", "SecretNotFound"], "{plain:?}");
    let wide = get(&["--output", "wide"])?;
    assert_eq!(words(&wide[0]), ["NAME", "STORE", "REFRESH", "READY", "REASON", "AGE", "MESSAGE"], "{wide:?}");
    assert!(wide[1].trim_end().ends_with(message), "{wide:?}");
    Ok(())
}

#[tokio::test]
async fn rollout_restart_once_per_burst_and_never_on_first_sync() -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    let w = World::with_env("restart", &[("LOCKSTEP_RESTART_DEBOUNCE_SECONDS", "6")]).await?;
    w.store(secret_store("aws", &Rig::get().emulator.endpoint)).await?;
    w.deployment("api").await?;
    // A Deployment of the same name in another namespace is never restarted.
    let other = Rig::get().test_env("restart-other").await?;
    other.apply(deployment("api")).await?;
    let theirs = Api::<Deployment>::namespaced(other.kube.clone(), &other.ns);
    let theirs_before = theirs.get("api").await?.metadata.resource_version;
    let src = w.create_aws("env", "v1").await?;
    w.external_secret("es", es("aws").refresh("1s").restart("Deployment", "api").key("k", &src)).await?;
    w.wait_value("es", "k", "v1").await?;
    let deployments = w.api::<Deployment>();
    let restarted_for = |d: &Deployment| {
        d.spec.template.metadata.as_ref()?.annotations.as_ref()?.get("lockstep.dev/restarted-for").cloned()
    };
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let d0 = deployments.get("api").await?;
    assert_eq!(restarted_for(&d0), None, "no restart on the first sync");
    let g0 = d0.metadata.generation.expect("the apiserver sets a generation");

    // A burst of two changes inside the quiet period.
    w.env.aws.put_secret_value().secret_id(&src).secret_string("v2").send().await?;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    w.env.aws.put_secret_value().secret_id(&src).secret_string("v3").send().await?;
    let s = w.wait_value("es", "k", "v3").await?;
    let hash = s.annotations().get("lockstep.dev/data-hash").cloned().expect("a synced Secret has a data hash");
    let d = deployments.clone();
    w.eventually("restart annotation", || {
        let d = d.clone();
        let hash = hash.clone();
        async move { (restarted_for(&d.get("api").await.ok()?)? == hash).then_some(()) }
    })
    .await?;
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let g1 = deployments.get("api").await?.metadata.generation.expect("the apiserver sets a generation");
    assert_eq!(g1, g0 + 1, "exactly one restart for the burst");
    let theirs_after = theirs.get("api").await?.metadata.resource_version;
    assert_eq!(theirs_after, theirs_before, "a Deployment of another namespace must not be touched");
    Ok(())
}

/// A store's new spec reaches the ExternalSecrets using it at once (not at their next refresh) and
/// they use the new spec (store resolution reads a cache the change has already reached). Both
/// kinds, so the operator watches cluster-wide: on a control plane of this test's own.
#[tokio::test]
async fn a_store_change_reaches_its_external_secrets_at_once() -> anyhow::Result<()> {
    let rig = Rig::get();
    let cp = ControlPlane::start(&rig.dir.join(format!("stores-{}", lockstep_rig::unique())))?;
    let w = World::on(cp.test_env(&rig.emulator, "stores").await?, &cp.kubeconfig, &[]).await?;
    let other = Emulator::dedicated()?;
    let key = w.create_aws("db", "old").await?;
    other.client().create_secret().name(&key).secret_string("new").send().await?;

    let shared = format!("shared-{}", lockstep_rig::unique());
    w.store(secret_store("aws", &rig.emulator.endpoint)).await?;
    w.apply(cluster_store(&shared, &rig.emulator.endpoint).creds_in(w.ns())).await?;
    for (name, kind, store) in [("a", "SecretStore", "aws"), ("b", "ClusterSecretStore", shared.as_str())] {
        w.external_secret(name, es(store).kind(kind).refresh("1h").key("k", &key)).await?;
        w.wait_value(name, "k", "old").await?;
    }

    // Both stores now point at the other emulator: the Secrets follow well before an hour.
    w.store(secret_store("aws", &other.endpoint)).await?;
    w.apply(cluster_store(&shared, &other.endpoint).creds_in(w.ns())).await?;
    w.wait_value("a", "k", "new").await?;
    w.wait_value("b", "k", "new").await?;
    Ok(())
}
