//! Tenant isolation: an ExternalSecret reaches only its own namespace's SecretStore (or a
//! ClusterSecretStore that admits it, see `operator::cluster_store_conditions`). Also: credential
//! references of a SecretStore never leave its namespace (admission rows in
//! `operator::admission_rejects_invalid_specs_with_readable_messages`, refused again at runtime:
//! `controller::tests`), and rollout restarts touch only workloads of the ExternalSecret's namespace
//! (`operator::rollout_restart_once_per_burst_and_never_on_first_sync`).

use lockstep_rig::{Fault, FaultProxy, Rig};

use crate::common::*;

#[tokio::test]
async fn a_store_of_the_same_name_in_another_namespace_is_never_used() -> anyhow::Result<()> {
    let rig = Rig::get();
    let w = World::new("tenant-a").await?;
    // Namespace B: a working store "aws" with its credentials.
    let b = rig.test_env("tenant-b").await?;
    b.store(secret_store("aws", &rig.emulator.endpoint)).await?;
    let src = w.create_aws("src", "v").await?;

    // A has no store "aws": B's is not a fallback.
    w.external_secret("es", es("aws").refresh("1s").key("k", &src)).await?;
    let msg = w.wait_reason("es", "StoreNotReady").await?;
    assert!(msg.contains(w.ns()), "{msg}");

    // A's own "aws" store (denied by AWS) is the one used, not B's working one.
    let proxy = FaultProxy::start(&rig.emulator.endpoint)?;
    proxy.set(Fault::Deny);
    w.store(secret_store("aws", &proxy.endpoint)).await?;
    w.wait_reason("es", "AccessDenied").await?;
    assert!(w.secrets().get_opt("es").await?.is_none());
    proxy.set(Fault::Pass);
    w.wait_value("es", "k", "v").await?;
    Ok(())
}

/// The form fields of each recorded STS call of `action` (bodies are `application/x-www-form-urlencoded`).
fn sts_calls(recording: &str, action: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    use base64::Engine;
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match (bytes[i], bytes.get(i + 1..i + 3)) {
                (b'%', Some(hex)) => {
                    out.push(u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("00"), 16).unwrap_or(0));
                    i += 3;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).to_string()
    };
    recording
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let raw = v["body"].as_str().unwrap_or_default().to_string();
            if v["body_encoded"].as_bool() == Some(true) {
                let bytes = base64::engine::general_purpose::STANDARD.decode(raw).unwrap_or_default();
                String::from_utf8_lossy(&bytes).to_string()
            } else {
                raw
            }
        })
        .map(|body| body.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect())
        .filter(|form: &std::collections::BTreeMap<String, String>| {
            form.get("Action").map(String::as_str) == Some(action)
        })
        .collect()
}

/// The claims of a JWT (its middle part), unverified.
fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// `auth.jwt.serviceAccountRef`: the operator requests a token for the store's ServiceAccount
/// (TokenRequest on the real apiserver, audience `sts.amazonaws.com`) and exchanges it with STS
/// AssumeRoleWithWebIdentity for the ServiceAccount's annotated role, or the store's `role` when
/// it has no annotation; one STS call per credential lifetime however many syncs, each store its
/// own session named after it. A store naming another namespace's ServiceAccount is refused at
/// admission (and again at run time: `controller::stores::tests`).
#[tokio::test]
async fn a_service_account_ref_store_exchanges_the_accounts_token_for_its_role() -> anyhow::Result<()> {
    use lockstep_rig::Emulator;
    use serde_json::json;
    let w = World::new("jwt").await?;
    let emu = Emulator::dedicated()?;
    emu.client().create_secret().name("jwt/db").secret_string("v1").send().await?;
    let annotated = "arn:aws:iam::123456789012:role/team-a";
    let store_role = "arn:aws:iam::123456789012:role/team-b";
    w.apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "team-a", "annotations": {"eks.amazonaws.com/role-arn": annotated}}}))
        .await?;
    w.apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "team-b"}})).await?;
    emu.start_recording()?;
    let jwt = |sa: &str| json!({"auth": {"jwt": {"serviceAccountRef": {"name": sa}}}});
    w.apply(secret_store("by-annotation", &emu.endpoint).ambient().aws(jwt("team-a"))).await?;
    let mut by_role = jwt("team-b");
    by_role["role"] = json!(store_role);
    w.apply(secret_store("by-role", &emu.endpoint).ambient().aws(by_role)).await?;
    w.apply(secret_store("no-role", &emu.endpoint).ambient().aws(jwt("team-b"))).await?;
    for store in ["by-annotation", "by-role", "no-role"] {
        w.external_secret(store, es(store).refresh("1s").key("k", "jwt/db")).await?;
    }
    w.wait_value("by-annotation", "k", "v1").await?;
    w.wait_value("by-role", "k", "v1").await?;
    let msg = w.wait_reason("no-role", "StoreNotReady").await?;
    assert!(msg.contains("eks.amazonaws.com/role-arn"), "says how to name a role: {msg}");
    // Syncs after the first reuse the credentials.
    for v in ["v2", "v3"] {
        emu.client().put_secret_value().secret_id("jwt/db").secret_string(v).send().await?;
        w.wait_value("by-annotation", "k", v).await?;
        w.wait_value("by-role", "k", v).await?;
    }
    emu.moto_api("POST", "/moto-api/recorder/stop-recording")?;
    let recording = emu.moto_api("GET", "/moto-api/recorder/download-recording")?;
    let calls = sts_calls(&recording, "AssumeRoleWithWebIdentity");
    let roles: std::collections::BTreeSet<&str> =
        calls.iter().filter_map(|c| c.get("RoleArn").map(String::as_str)).collect();
    assert_eq!(roles, [annotated, store_role].into(), "the annotated role, and the store's role without one");
    assert_eq!(
        calls.len(),
        2,
        "one STS call per store for many syncs: {:?}",
        calls.iter().map(|c| &c["RoleArn"]).collect::<Vec<_>>()
    );
    for call in &calls {
        let sa = if call["RoleArn"] == annotated { "team-a" } else { "team-b" };
        let store = if sa == "team-a" { "by-annotation" } else { "by-role" };
        assert_eq!(call["RoleSessionName"], format!("lockstep-{}-{store}", w.ns()), "the session says who asked");
        let claims = claims(&call["WebIdentityToken"]);
        assert_eq!(claims["aud"], json!(["sts.amazonaws.com"]), "{claims}");
        assert_eq!(claims["sub"], format!("system:serviceaccount:{}:{sa}", w.ns()), "{claims}");
    }
    let metrics = w.operator.metrics()?;
    let counted = metrics.sum("lockstep_aws_calls_total", &[("operation", "AssumeRoleWithWebIdentity")]);
    assert_eq!(counted, calls.len() as f64, "every STS call is counted: {}", metrics.text());

    // The store's Ready condition names the identity it resolved to: the assumed role's session.
    w.wait_store_ready("by-annotation").await?;
    let store = w.api::<lockstep::api::SecretStore>().get("by-annotation").await?;
    let ready = store.status.map(|s| s.conditions).unwrap_or_default();
    let message = ready.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains("assumed-role/team-a/"), "{message}");

    let other = json!({"auth": {"jwt": {"serviceAccountRef": {"name": "team-a", "namespace": "kube-system"}}}});
    let refused = w.env.rejection(secret_store("elsewhere", &emu.endpoint).ambient().aws(other)).await?;
    assert!(refused.contains("own namespace"), "{refused}");
    Ok(())
}

/// `additionalRoles` are assumed in order, each with the credentials of the one before, then `role`
/// with the external id and the session tags; the whole chain once per credential lifetime.
#[tokio::test]
async fn additional_roles_are_a_chain_in_order_and_the_role_session_carries_the_tags() -> anyhow::Result<()> {
    use lockstep_rig::Emulator;
    use serde_json::json;
    let w = World::new("chain").await?;
    let emu = Emulator::dedicated()?;
    emu.client().create_secret().name("chain/db").secret_string("v1").send().await?;
    emu.start_recording()?;
    let (hop1, hop2, role) = (
        "arn:aws:iam::111111111111:role/hop-1",
        "arn:aws:iam::222222222222:role/hop-2",
        "arn:aws:iam::123456789012:role/reader",
    );
    let chain = json!({"additionalRoles": [hop1, hop2], "role": role, "externalID": "ext",
        "sessionTags": [{"key": "team", "value": "a"}, {"key": "tier", "value": "gold"}], "transitiveTagKeys": ["team"]});
    w.store(secret_store("aws", &emu.endpoint).aws(chain)).await?;
    w.external_secret("es", es("aws").refresh("1s").key("k", "chain/db")).await?;
    w.wait_value("es", "k", "v1").await?;
    emu.client().put_secret_value().secret_id("chain/db").secret_string("v2").send().await?;
    w.wait_value("es", "k", "v2").await?;
    emu.moto_api("POST", "/moto-api/recorder/stop-recording")?;
    let calls = sts_calls(&emu.moto_api("GET", "/moto-api/recorder/download-recording")?, "AssumeRole");
    let order: Vec<&str> = calls.iter().map(|c| c["RoleArn"].as_str()).collect();
    assert_eq!(order, [hop1, hop2, role], "the chain in order, once");
    let last = &calls[2];
    assert_eq!(last.get("ExternalId").map(String::as_str), Some("ext"));
    let tags: std::collections::BTreeSet<(&str, &str)> = (1..=2)
        .filter_map(|i| {
            Some((
                last.get(&format!("Tags.member.{i}.Key"))?.as_str(),
                last.get(&format!("Tags.member.{i}.Value"))?.as_str(),
            ))
        })
        .collect();
    assert_eq!(tags, [("team", "a"), ("tier", "gold")].into(), "{last:?}");
    assert_eq!(last.get("TransitiveTagKeys.member.1").map(String::as_str), Some("team"), "{last:?}");
    for hop in &calls[..2] {
        assert!(!hop.contains_key("ExternalId") && !hop.contains_key("Tags.member.1"), "hops carry neither: {hop:?}");
        assert_eq!(hop["RoleSessionName"], format!("lockstep-{}-aws", w.ns()));
    }
    Ok(())
}

/// A referent ClusterSecretStore (its credential references name no namespace, ESO's term) reads
/// the credentials from each ExternalSecret's own namespace: one client per namespace (its own
/// keys on the wire, its own series), never another namespace's, and a namespace without them is
/// StoreNotReady rather than served by someone else's. Cluster-wide, so on a control plane of its
/// own.
#[tokio::test]
async fn a_referent_cluster_store_reads_credentials_from_each_namespace_and_never_another() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    use lockstep_rig::{ControlPlane, Emulator};
    use serde_json::json;
    let rig = Rig::get();
    let cp = ControlPlane::start(&rig.dir.join(format!("referent-{}", lockstep_rig::unique())))?;
    let emu = Emulator::dedicated()?;
    let w = World::on(cp.test_env(&emu, "referent-a").await?, &cp.kubeconfig, &[]).await?;
    let b = cp.test_env(&emu, "referent-b").await?;
    let c = cp.test_env(&emu, "referent-c").await?;
    emu.client().create_secret().name("referent/db").secret_string("v1").send().await?;
    let store = format!("referent-{}", lockstep_rig::unique());
    w.apply(cluster_store(&store, &emu.endpoint).creds("tenant-keys")).await?;
    for (env, akid) in [(&w.env, "AKIDTENANTA"), (&b, "AKIDTENANTB")] {
        let keys = json!({"access-key-id": akid, "secret-access-key": format!("{akid}-secret")});
        env.apply(secret("tenant-keys", keys)).await?;
    }
    emu.start_recording()?;
    let spec = || es(&store).kind("ClusterSecretStore").refresh("1h").key("k", "referent/db");
    for env in [&w.env, &b, &c] {
        env.apply(object("ExternalSecret", "db", spec())).await?;
    }
    for env in [&w.env, &b] {
        let secrets = kube::Api::<Secret>::namespaced(env.kube.clone(), &env.ns);
        w.eventually(&format!("Secret {}/db synced", env.ns), || {
            let secrets = secrets.clone();
            async move { secrets.get_opt("db").await.ok().flatten().filter(|s| text(s, "k") == "v1") }
        })
        .await?;
    }
    let c_es = kube::Api::<lockstep::api::ExternalSecret>::namespaced(c.kube.clone(), &c.ns);
    let message = w
        .eventually("C is StoreNotReady", || {
            let c_es = c_es.clone();
            async move {
                let ready = c_es.get("db").await.ok()?.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
                (ready.reason == "StoreNotReady").then_some(ready.message)
            }
        })
        .await?;
    assert!(
        message.contains(&format!("{}/tenant-keys", c.ns)),
        "C's own namespace is where its keys are looked for: {message}"
    );
    assert!(kube::Api::<Secret>::namespaced(c.kube.clone(), &c.ns).get_opt("db").await?.is_none());

    // Each namespace's keys signed its own calls.
    let recording = emu.moto_api("GET", "/moto-api/recorder/download-recording")?;
    for akid in ["AKIDTENANTA", "AKIDTENANTB"] {
        assert!(recording.contains(&format!("Credential={akid}/")), "{akid} signed calls");
    }
    let metrics = w.operator.metrics()?;
    for env in [&w.env, &b] {
        let label = format!("ClusterSecretStore {store} (credentials of namespace {})", env.ns);
        assert!(metrics.sum("lockstep_aws_calls_total", &[("store", &label)]) >= 1.0, "{label}: {}", metrics.text());
    }
    // namespaceSessionTag: one ClusterSecretStore with A's keys and a role, whose sessions carry
    // the namespace each ExternalSecret is in: one AssumeRole per namespace, tagged with it.
    let tagged = format!("tagged-{}", lockstep_rig::unique());
    let role = "arn:aws:iam::123456789012:role/by-namespace";
    let tag = json!({"role": role, "namespaceSessionTag": true});
    w.apply(cluster_store(&tagged, &emu.endpoint).creds("tenant-keys").creds_in(&w.env.ns).aws(tag)).await?;
    emu.start_recording()?;
    let spec = || es(&tagged).kind("ClusterSecretStore").refresh("1h").key("k", "referent/db");
    for env in [&w.env, &b] {
        env.apply(object("ExternalSecret", "tagged", spec())).await?;
    }
    for env in [&w.env, &b] {
        let secrets = kube::Api::<Secret>::namespaced(env.kube.clone(), &env.ns);
        w.eventually(&format!("Secret {}/tagged synced", env.ns), || {
            let secrets = secrets.clone();
            async move { secrets.get_opt("tagged").await.ok().flatten().filter(|s| text(s, "k") == "v1") }
        })
        .await?;
    }
    let assumed = sts_calls(&emu.moto_api("GET", "/moto-api/recorder/download-recording")?, "AssumeRole");
    let mut tagged_with: Vec<(String, String)> = assumed
        .iter()
        .filter(|c| c.get("RoleArn").map(String::as_str) == Some(role))
        .filter_map(|c| Some((c.get("Tags.member.1.Key")?.clone(), c.get("Tags.member.1.Value")?.clone())))
        .collect();
    tagged_with.sort();
    let mut expected = vec![
        ("kubernetes-namespace".to_string(), w.env.ns.clone()),
        ("kubernetes-namespace".to_string(), b.ns.clone()),
    ];
    expected.sort();
    assert_eq!(tagged_with, expected, "one session per namespace, tagged with it: {assumed:?}");

    // The store itself holds no credentials to check.
    let css = kube::Api::<lockstep::api::ClusterSecretStore>::all(w.env.kube.clone());
    let ready = w
        .eventually("the referent store is Ready", || {
            let css = css.clone();
            let store = store.clone();
            async move {
                let ready = css.get(&store).await.ok()?.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
                (ready.status == "True").then_some(ready.message)
            }
        })
        .await?;
    assert!(ready.contains("referent"), "{ready}");
    Ok(())
}

/// Credentials STS issued are renewed before they expire, and no sync fails for it: on an emulator
/// whose STS sessions last 25 s, a role store (AssumeRole) and a ServiceAccount store
/// (AssumeRoleWithWebIdentity, a fresh token each time) sync every second for 50 s, follow a
/// rotation made after the first sessions expired, and renew several times without one failure.
#[tokio::test]
async fn expiring_credentials_are_renewed_without_a_failed_sync() -> anyhow::Result<()> {
    use lockstep_rig::Emulator;
    use serde_json::json;
    let w = World::new("renewal").await?;
    let emu = Emulator::dedicated_with(&[("RIG_STS_SESSION_SECONDS", "25")])?;
    emu.client().create_secret().name("renewal/db").secret_string("v1").send().await?;
    emu.start_recording()?;
    let role = format!("arn:aws:iam::123456789012:role/{}", w.ns());
    w.store(secret_store("role", &emu.endpoint).aws(json!({"role": role}))).await?;
    w.apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "tenant", "annotations": {"eks.amazonaws.com/role-arn": format!("{role}-sa")}}}))
        .await?;
    let jwt = json!({"auth": {"jwt": {"serviceAccountRef": {"name": "tenant"}}}});
    w.apply(secret_store("jwt", &emu.endpoint).ambient().aws(jwt)).await?;
    for store in ["role", "jwt"] {
        w.external_secret(store, es(store).refresh("1s").key("k", "renewal/db")).await?;
    }
    for store in ["role", "jwt"] {
        w.wait_value(store, "k", "v1").await?;
    }
    tokio::time::sleep(std::time::Duration::from_secs(35)).await;
    emu.client().put_secret_value().secret_id("renewal/db").secret_string("v2").send().await?;
    for store in ["role", "jwt"] {
        w.wait_value(store, "k", "v2").await?;
    }
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let calls = emu.stop_recording()?;
    for op in ["AssumeRole", "AssumeRoleWithWebIdentity"] {
        let n = calls.get(op).copied().unwrap_or(0);
        assert!(n >= 3, "{op}: renewed ahead of expiry every ~15 s over ~50 s, not once and not per sync: {calls:?}");
        assert!(n <= 10, "{op}: {calls:?}");
    }
    let metrics = w.operator.metrics()?;
    assert_eq!(metrics.sum("lockstep_reconcile_failures_total", &[]), 0.0, "no sync failed: {}", metrics.text());
    let failed = metrics
        .samples("lockstep_aws_calls_total", &[])
        .filter(|s| s.labels.get("outcome").is_some_and(|o| o != "success"));
    assert_eq!(failed.count(), 0, "no AWS call failed: {}", metrics.text());
    Ok(())
}

/// STS refusing the store's role: the store is not Ready with AccessDenied, and the message names
/// the role it could not assume (never a key); the ExternalSecret says the same and has no Secret.
#[tokio::test]
async fn a_role_sts_refuses_shows_on_the_store_with_the_role_named() -> anyhow::Result<()> {
    use lockstep::api::SecretStore;
    use serde_json::json;
    let rig = Rig::get();
    let w = World::new("denied-role").await?;
    let sts = FaultProxy::start(&rig.emulator.endpoint)?;
    sts.set(Fault::DenyRole);
    let role = format!("arn:aws:iam::123456789012:role/{}-denied", w.ns());
    w.store(secret_store("aws", &rig.emulator.endpoint).aws(json!({"role": role, "stsEndpoint": sts.endpoint})))
        .await?;
    let src = w.create_aws("db", "v").await?;
    w.external_secret("es", es("aws").refresh("1s").key("k", &src)).await?;
    let stores = w.api::<SecretStore>();
    let (reason, message) = w
        .eventually("the store not Ready", || {
            let stores = stores.clone();
            async move {
                let c = stores.get("aws").await.ok()?.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
                (c.status == "False").then_some((c.reason, c.message))
            }
        })
        .await?;
    assert_eq!(reason, "AccessDenied", "{message}");
    assert!(message.contains(&role) && message.contains("not authorized"), "{message}");
    assert!(!message.contains("testing"), "no key in the message: {message}");
    let es_message = w.wait_reason("es", "AccessDenied").await?;
    assert!(es_message.contains(&role), "{es_message}");
    assert!(w.secrets().get_opt("es").await?.is_none());
    Ok(())
}

/// New keys in a store's credential Secret are used from the next sync on: the cached credential
/// Secret is served only while the watch shows it unchanged (the recorder shows the new key id
/// signing calls).
#[tokio::test]
async fn new_keys_in_the_credential_secret_are_used_from_the_next_sync() -> anyhow::Result<()> {
    use lockstep_rig::Emulator;
    use serde_json::json;
    let w = World::new("new-keys").await?;
    let emu = Emulator::dedicated()?;
    emu.client().create_secret().name("keys/db").secret_string("v1").send().await?;
    let keys = |akid: &str| secret("tenant-keys", json!({"access-key-id": akid, "secret-access-key": "s"}));
    w.apply(keys("AKIDBEFORE")).await?;
    w.apply(secret_store("aws", &emu.endpoint).creds("tenant-keys")).await?;
    w.external_secret("es", es("aws").refresh("1s").key("k", "keys/db")).await?;
    w.wait_value("es", "k", "v1").await?;
    emu.start_recording()?;
    w.apply(keys("AKIDAFTER")).await?;
    w.eventually("calls signed with the new key", || async {
        let recording = emu.moto_api("GET", "/moto-api/recorder/download-recording").ok()?;
        recording.contains("Credential=AKIDAFTER/").then_some(())
    })
    .await?;
    emu.client().put_secret_value().secret_id("keys/db").secret_string("v2").send().await?;
    w.wait_value("es", "k", "v2").await?;
    Ok(())
}
