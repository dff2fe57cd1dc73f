//! Refresh from AWS events: moto's EventBridge delivers Secrets Manager events (CloudTrail-shaped,
//! as AWS sends them) to a moto SQS queue, through a rule made from the shipped event pattern
//! (examples/terraform/event-pattern.json), and the operator long-polls the queue.

use std::time::Duration;

use lockstep::api::SecretStore;
use lockstep_rig::{Emulator, Rig};
use serde_json::{Value, json};

use crate::common::*;

/// Carried by the request parameters of every event the tests send: never in a log.
const SENTINEL: &str = "EVENTBODY-5c1e";

/// A queue, and an EventBridge rule with the shipped pattern sending to it, on `emu`.
struct Queue<'a> {
    emu: &'a Emulator,
    url: String,
}

impl<'a> Queue<'a> {
    fn create(emu: &'a Emulator, name: &str) -> anyhow::Result<Queue<'a>> {
        Ok(Queue { emu, url: emu.event_queue(name)?.url })
    }

    /// What CloudTrail hands EventBridge after `event_name` on `secret_id` (a name or an ARN),
    /// the request parameters carrying the sentinel.
    fn cloudtrail(&self, event_name: &str, secret_id: &str) -> anyhow::Result<()> {
        let request = json!({"clientRequestToken": "t", "secretString": SENTINEL});
        self.emu.cloudtrail_event(event_name, secret_id, request)
    }

    /// A message that is no event at all.
    fn garbage(&self) -> anyhow::Result<()> {
        self.emu.aws_json(
            "AmazonSQS.SendMessage",
            json!({"QueueUrl": self.url, "MessageBody": format!("oops {SENTINEL}")}),
        )?;
        Ok(())
    }

    /// Messages in the queue, visible and in flight.
    fn depth(&self) -> anyhow::Result<u64> {
        let names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"];
        let a = self
            .emu
            .aws_json("AmazonSQS.GetQueueAttributes", json!({"QueueUrl": self.url, "AttributeNames": names}))?;
        let n = |k: &str| a["Attributes"][k].as_str().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(names.iter().map(|k| n(k)).sum())
    }

    fn delete(&self) -> anyhow::Result<()> {
        self.emu.aws_json("AmazonSQS.DeleteQueue", json!({"QueueUrl": self.url}))?;
        Ok(())
    }
}

/// A world whose operator logs at trace, on an emulator of its own (calls counted per test).
async fn world(prefix: &str) -> anyhow::Result<World> {
    let rig = Rig::get();
    let env = rig.test_env(prefix).await?;
    let ns = env.ns.clone();
    World::on(env, &rig.kubeconfig, &["--namespace", &ns, "--log-level", "trace"]).await
}

fn events_store(emu: &Emulator, queue: &Queue, fallback: &str) -> lockstep_rig::manifests::Store {
    secret_store("aws", &emu.endpoint)
        .aws(json!({"events": {"queueURL": queue.url, "sqsEndpoint": emu.endpoint, "fallbackInterval": fallback}}))
}

/// The store's EventsReady condition as (status, reason, message).
async fn events_condition(w: &World) -> Option<(String, String, String)> {
    let store = w.api::<SecretStore>().get("aws").await.ok()?;
    let c = store.status?.conditions.into_iter().find(|c| c.type_ == "EventsReady")?;
    Some((c.status, c.reason, c.message))
}

#[tokio::test]
async fn a_rotation_arrives_through_its_event_long_before_the_refresh() -> anyhow::Result<()> {
    let emu = Emulator::dedicated()?;
    let aws = emu.client();
    let w = world("events").await?;
    let queue = Queue::create(&emu, &format!("{}-events", w.ns()))?;
    let by_name = format!("{}/db", w.ns());
    let by_arn = aws.create_secret().name(format!("{}/api", w.ns())).secret_string("api-1").send().await?;
    let by_arn = by_arn.arn().expect("an ARN").to_string();
    aws.create_secret().name(&by_name).secret_string("db-1").send().await?;
    aws.create_secret().name(format!("{}/unwatched", w.ns())).secret_string("x").send().await?;
    w.store(events_store(&emu, &queue, "1h")).await?;
    // refreshInterval 1h: only an event can bring a rotation within this test.
    w.external_secret("db", es("aws").refresh("1h").key("v", &by_name)).await?;
    w.external_secret("api", es("aws").refresh("1h").key("v", &by_arn)).await?;
    w.wait_value("db", "v", "db-1").await?;
    w.wait_value("api", "v", "api-1").await?;
    w.eventually("EventsReady True", || async { events_condition(&w).await.filter(|c| c.0 == "True") }).await?;

    // A rotation and its event, naming the secret by name; another naming the secret by ARN.
    let started = std::time::Instant::now();
    aws.put_secret_value().secret_id(&by_name).secret_string("db-2").send().await?;
    queue.cloudtrail("PutSecretValue", &by_name)?;
    w.wait_value_within(Duration::from_secs(30), "db", "v", "db-2").await?;
    let took = started.elapsed();
    aws.put_secret_value().secret_id(&by_arn).secret_string("api-2").send().await?;
    queue.cloudtrail("PutSecretValue", &by_arn)?;
    w.wait_value_within(Duration::from_secs(30), "api", "v", "api-2").await?;
    eprintln!("rotation to Secret through an event: {took:?}");

    // Then: an event for a secret nobody reads, a message that is no event, a duplicate and a
    // late (out-of-order) event of a version already applied. None costs a DescribeSecret but the
    // duplicate's and the late one's (each names a watched secret: the event is never trusted for
    // the version), and none fetches a value.
    emu.start_recording()?;
    queue.cloudtrail("PutSecretValue", &format!("{}/unwatched", w.ns()))?;
    queue.garbage()?;
    queue.cloudtrail("PutSecretValue", &by_name)?;
    queue.cloudtrail("UpdateSecretVersionStage", &by_name)?;
    w.eventually("the queue drained", || async { (queue.depth().ok()? == 0).then_some(()) }).await?;
    // The last batch is deleted after its DescribeSecret: wait out one long poll's turn.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recording = emu.moto_api("GET", "/moto-api/recorder/download-recording")?;
    let calls = emu.stop_recording()?;
    let described: Vec<Value> = lockstep_rig::recorded_requests(&recording)
        .into_iter()
        .filter(|(op, _)| op == "DescribeSecret")
        .filter_map(|(_, body)| serde_json::from_str(&body).ok())
        .collect();
    let ids: Vec<&str> = described.iter().filter_map(|b| b["SecretId"].as_str()).collect();
    assert!(!ids.is_empty() && ids.iter().all(|id| *id == by_name), "only db is described, never unwatched: {ids:?}");
    assert_eq!(calls.get("GetSecretValue"), None, "{calls:?}");
    assert_eq!(calls.get("BatchGetSecretValue"), None, "{calls:?}");
    let describes = calls.get("DescribeSecret").copied().unwrap_or(0);
    assert!((1..=2).contains(&describes), "one DescribeSecret per batch naming db, none for unwatched: {calls:?}");
    assert!(calls.get("DeleteMessageBatch").is_some_and(|n| *n >= 1), "{calls:?}");
    assert_eq!(w.secrets().get("db").await.map(|s| text(&s, "v"))?, "db-2");

    let metrics = w.operator.metrics()?;
    let store = format!("SecretStore {}/aws", w.ns());
    let count = |outcome: &str| metrics.value("lockstep_events_total", &[("store", &store), ("outcome", outcome)]);
    assert!(count("matched").is_some_and(|n| n >= 4.0), "{metrics:?}");
    assert_eq!(count("ignored"), Some(1.0));
    assert_eq!(count("malformed"), Some(1.0));
    assert_eq!(metrics.value("lockstep_events_queue_up", &[("store", &store)]), Some(1.0));
    let receives = metrics.value(
        "lockstep_aws_calls_total",
        &[("store", &store), ("operation", "ReceiveMessage"), ("outcome", "success")],
    );
    assert!(receives.is_some_and(|n| n >= 1.0), "ReceiveMessage is counted with the other AWS calls");

    // What the events carried never reaches the log (at trace), Events or status.
    let log = w.operator.logs();
    assert!(!log.contains(SENTINEL), "an event body reached the log");
    let events = w.api::<k8s_openapi::api::core::v1::Event>().list(&Default::default()).await?;
    let stores = w.api::<SecretStore>().list(&Default::default()).await?;
    let externals = w.api::<lockstep::api::ExternalSecret>().list(&Default::default()).await?;
    for (what, text) in [
        ("Events", serde_json::to_string(&events.items)?),
        ("store status", serde_json::to_string(&stores.items)?),
        ("ExternalSecret status", serde_json::to_string(&externals.items)?),
        ("metrics", metrics.text().to_string()),
    ] {
        assert!(!text.contains(SENTINEL), "an event body reached {what}");
    }
    assert!(log.contains("event names no watched secret"), "the trace shows what was done, without bodies");
    Ok(())
}

#[tokio::test]
async fn a_dead_queue_shows_on_the_store_and_polling_takes_over() -> anyhow::Result<()> {
    let emu = Emulator::dedicated()?;
    let aws = emu.client();
    let w = world("events-dead").await?;
    let queue = Queue::create(&emu, &format!("{}-events", w.ns()))?;
    let key = format!("{}/db", w.ns());
    aws.create_secret().name(&key).secret_string("v1").send().await?;
    // Polling every 2 s, stretched to 1 h while the queue answers.
    w.store(events_store(&emu, &queue, "1h")).await?;
    w.external_secret("db", es("aws").refresh("2s").key("v", &key)).await?;
    w.wait_value("db", "v", "v1").await?;
    let up =
        w.eventually("EventsReady True", || async { events_condition(&w).await.filter(|c| c.0 == "True") }).await?;
    assert_eq!(up.1, "EventsReceiving");

    // Without an event, a rotation waits for the fallback: not picked up by the 2 s poll.
    aws.put_secret_value().secret_id(&key).secret_string("v2").send().await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(w.secrets().get("db").await.map(|s| text(&s, "v"))?, "v1", "polling is stretched while events flow");

    // The queue goes away: the store says so, and polling at refreshInterval brings v2.
    queue.delete()?;
    let down =
        w.eventually("EventsReady False", || async { events_condition(&w).await.filter(|c| c.0 == "False") }).await?;
    assert_eq!(down.1, "EventsUnavailable");
    assert!(down.2.contains("ReceiveMessage") && down.2.contains("refreshInterval"), "{}", down.2);
    let ready = w.api::<SecretStore>().get("aws").await?.status.expect("a status");
    let ready = ready.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready.status, "True", "the store still works");
    w.wait_value_within(Duration::from_secs(30), "db", "v", "v2").await?;
    let metrics = w.operator.metrics()?;
    let store = format!("SecretStore {}/aws", w.ns());
    assert_eq!(metrics.value("lockstep_events_queue_up", &[("store", &store)]), Some(0.0));
    Ok(())
}

#[test]
fn the_shipped_setup_matches_the_pattern_the_tests_use_and_grants_only_the_queue() -> anyhow::Result<()> {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |p: &str| std::fs::read_to_string(format!("{root}/{p}"));
    let pattern: Value = serde_json::from_str(&read("examples/terraform/event-pattern.json")?)?;
    // CloudFormation's short functions (!GetAtt, !Ref) are YAML tags: read as YAML, compare the parts
    // without them as JSON.
    let cfn: serde_yaml::Value = serde_yaml::from_str(&read("examples/cloudformation/lockstep-events.yaml")?)?;
    let cfn_json = |v: &serde_yaml::Value| serde_json::to_value(v).expect("tag-free YAML is JSON");
    let cfn_pattern = cfn_json(&cfn["Resources"]["Rule"]["Properties"]["EventPattern"]);
    assert_eq!(cfn_pattern, pattern, "CloudFormation and Terraform agree");
    let names: Vec<&str> =
        pattern["detail"]["eventName"].as_array().expect("names").iter().filter_map(Value::as_str).collect();
    for needed in ["PutSecretValue", "UpdateSecretVersionStage", "RotateSecret", "RotationSucceeded", "DeleteSecret"] {
        assert!(names.contains(&needed), "{needed} in the pattern");
    }
    let main = read("examples/terraform/main.tf")?;
    assert!(main.contains(r#"file("${path.module}/event-pattern.json")"#), "the rule uses the pattern file");
    let actions = r#"actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]"#;
    assert!(
        main.contains(actions) && main.contains("resources = [aws_sqs_queue.events.arn]"),
        "the operator reads this queue only"
    );
    assert!(main.contains("deadLetterTargetArn"), "a dead-letter queue bounds a message that keeps failing");
    let cfn_actions =
        cfn_json(&cfn["Resources"]["OperatorPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Action"]);
    assert_eq!(cfn_actions, json!(["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]));
    // Every Terraform file is formatted as `terraform fmt` would: no tabs, two-space indents.
    for f in ["main.tf", "variables.tf", "outputs.tf", "versions.tf"] {
        let text = read(&format!("examples/terraform/{f}"))?;
        assert!(!text.contains('\t') && text.ends_with('\n'), "{f}");
        assert!(text.lines().all(|l| (l.len() - l.trim_start().len()) % 2 == 0), "{f}: two-space indents");
    }
    Ok(())
}
