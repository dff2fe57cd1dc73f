//! The event loop of a store with `provider.aws.events`: long-poll its SQS queue, look up each
//! watched secret an event names with one DescribeSecret (the event is never trusted for the
//! version), trigger the ExternalSecrets whose sources moved, then delete the messages.
//!
//! A message that is not an event, or names no watched secret, is deleted and counted: it is never
//! retried. A message is left in the queue only when its secret could not be described (AWS
//! failed); SQS shows it again after the queue's visibility timeout, and the queue's redrive
//! policy bounds how often.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::{Pollers, StoreState, Trigger};
use crate::aws::{QueueMessage, StoreClient};
use crate::controller::StoreId;
use crate::events::{Parsed, parse, same_secret};
use crate::lock;

/// The first wait after a failed ReceiveMessage; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The least time between two ReceiveMessage calls that returned nothing.
const QUIET_MIN: Duration = Duration::from_secs(1);

/// What became of one batch of messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Handled {
    /// Ids of the messages to delete.
    pub delete: Vec<String>,
    /// The watched keys described (once each).
    pub described: Vec<String>,
}

impl Pollers {
    pub(super) async fn events_loop(self: Arc<Self>, id: StoreId, state: Arc<Mutex<StoreState>>) {
        let label = id.to_string();
        let mut retry = RETRY_FIRST;
        loop {
            let (client, queue) = {
                let mut st = lock(&state);
                match st.client.events().map(|e| e.queue_url.clone()) {
                    Some(queue) if !st.watched.is_empty() => (st.client.clone(), queue),
                    _ => {
                        st.events = super::EventsState::default();
                        drop(st);
                        self.metrics.events_queue(&label, None);
                        let _ = self.store_news.send(id.clone());
                        return;
                    }
                }
            };
            let asked = Instant::now();
            let received = client.receive(&queue).await;
            let health = received.as_ref().map(|_| ()).map_err(|e| e.to_string());
            self.set_events_health(&id, &state, &queue, health);
            let messages = match received {
                Ok(messages) => {
                    retry = RETRY_FIRST;
                    messages
                }
                Err(e) => {
                    warn!(store = %id, error = %e, "receiving events failed; polling follows refreshInterval");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
            };
            if messages.is_empty() {
                // SQS answers a quiet long poll after its wait; an endpoint that answers at once
                // must not turn this into a busy loop.
                if asked.elapsed() < QUIET_MIN {
                    tokio::time::sleep(QUIET_MIN).await;
                }
                continue;
            }
            let handled = self.handle(&id, &state, &client, &messages).await;
            let delete: Vec<QueueMessage> = messages.into_iter().filter(|m| handled.delete.contains(&m.id)).collect();
            match client.delete_messages(&queue, &delete).await {
                Ok(failed) if failed.is_empty() => {}
                Ok(failed) => warn!(store = %id, messages = failed.len(), "some handled events could not be deleted"),
                Err(e) => warn!(store = %id, error = %e, "deleting handled events failed"),
            }
        }
    }

    /// Record the queue's health; a flip reaches the store's status and the poll loop's interval.
    fn set_events_health(
        &self,
        id: &StoreId,
        state: &Mutex<StoreState>,
        queue: &str,
        health: std::result::Result<(), String>,
    ) {
        let label = id.to_string();
        self.metrics.events_queue(&label, Some(health.is_ok()));
        let (flipped, wake) = {
            let mut st = lock(state);
            let next = Some((queue.to_string(), health));
            let flipped = st.events.health != next;
            st.events.health = next;
            (flipped, st.wake.clone())
        };
        if flipped {
            info!(store = %id, "event queue status changed");
            wake.notify_one();
            let _ = self.store_news.send(id.clone());
        }
    }

    /// Handle one batch: parse, describe each watched secret named (once), trigger what moved.
    pub(super) async fn handle(
        &self,
        id: &StoreId,
        state: &Mutex<StoreState>,
        client: &StoreClient,
        messages: &[QueueMessage],
    ) -> Handled {
        let label = id.to_string();
        let mut handled = Handled::default();
        // The keys each message names, and the earliest time an event gives for each key.
        let mut pending: Vec<(&QueueMessage, Vec<String>)> = Vec::new();
        let mut changed_at: HashMap<String, Instant> = HashMap::new();
        {
            let st = lock(state);
            for m in messages {
                let (ids, time) = match parse(&m.body) {
                    Parsed::Secrets { ids, time } => (ids, time),
                    Parsed::Ignored(why) => {
                        self.metrics.event(&label, "ignored");
                        debug!(store = %id, message = %m.id, why, "event ignored");
                        handled.delete.push(m.id.clone());
                        continue;
                    }
                    Parsed::Malformed(why) => {
                        self.metrics.event(&label, "malformed");
                        warn!(store = %id, message = %m.id, why, "malformed message on the event queue deleted");
                        handled.delete.push(m.id.clone());
                        continue;
                    }
                };
                let keys: Vec<String> =
                    st.watched.keys().filter(|key| ids.iter().any(|e| same_secret(e, key))).cloned().collect();
                if keys.is_empty() {
                    self.metrics.event(&label, "ignored");
                    debug!(store = %id, message = %m.id, "event names no watched secret");
                    handled.delete.push(m.id.clone());
                    continue;
                }
                self.metrics.event(&label, "matched");
                let at = time.map_or_else(Instant::now, since);
                for key in &keys {
                    changed_at.entry(key.clone()).and_modify(|t| *t = (*t).min(at)).or_insert(at);
                }
                pending.push((m, keys));
            }
        }
        let mut keys: Vec<&String> = changed_at.keys().collect();
        keys.sort();
        let mut fresh = Vec::new();
        let mut failed = HashSet::new();
        for key in keys {
            handled.described.push(key.clone());
            match client.describe(key).await {
                Ok(meta) => fresh.push((key.clone(), meta.map(|m| m.stages), changed_at[key])),
                Err(e) => {
                    warn!(store = %id, key = %key, error = %e, "describing a secret named by an event failed; the event stays queued");
                    failed.insert(key.clone());
                }
            }
        }
        self.apply(id, state, fresh, Trigger::Now);
        for (m, keys) in pending {
            if keys.iter().all(|k| !failed.contains(k)) {
                handled.delete.push(m.id.clone());
            }
        }
        handled
    }
}

/// The instant an event's wall-clock time stands for (now, for a time in the future).
fn since(time: jiff::Timestamp) -> Instant {
    let ago = jiff::Timestamp::now().duration_since(time);
    let ago = Duration::try_from(ago).unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::StoreKind;
    use crate::aws::Calls;
    use crate::aws::fake::FakeAws;
    use crate::controller::fetcher::Fetcher;
    use crate::metrics::Metrics;
    use crate::source::{SourceRef, Version};
    use kube::runtime::reflector::ObjectRef;
    use tokio::sync::mpsc;

    fn event(secret_id: &str) -> String {
        serde_json::json!({"source": "aws.secretsmanager", "detail-type": "AWS API Call via CloudTrail",
            "time": "2026-12-02T10:00:00Z", "detail": {"eventName": "PutSecretValue",
            "requestParameters": {"secretId": secret_id, "secretString": "HIDDEN"}}})
        .to_string()
    }

    fn message(id: &str, body: &str) -> QueueMessage {
        QueueMessage { id: id.into(), receipt: format!("r-{id}"), body: body.into() }
    }

    #[tokio::test]
    async fn one_describe_per_watched_secret_named_none_for_others_and_every_message_deleted() {
        let aws = Arc::new(FakeAws::default());
        aws.put("app/db", "v1-value");
        let metrics = Arc::new(Metrics::default());
        let client = StoreClient::new(aws.clone(), Calls::new(metrics.clone(), "s".into(), 100.0, 100));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let fetcher = Fetcher::new();
        let pollers = Pollers::new(tx, fetcher.clone(), metrics.clone());
        let store = StoreId { kind: StoreKind::SecretStore, namespace: Some("ns".into()), name: "s".into() };
        let es = ObjectRef::new("es").within("ns");
        let current = SourceRef { key: "app/db".into(), version: Version::Stage("AWSCURRENT".into()) };
        pollers.register(&store, &client, es.clone(), Duration::from_secs(3600), &[current]);
        let state = lock(&pollers.stores).get(&store).cloned().expect("store state");
        // What the first sync saw.
        let v1 = aws.calls();
        assert!(v1.is_empty(), "{v1:?}");
        fetcher.observe(&store, "app/db", Some([("AWSCURRENT".to_string(), "v1".to_string())].into_iter().collect()));

        aws.put("app/db", "v2-value");
        let arn = "arn:aws:secretsmanager:us-east-1:000000000000:secret:app/db-AbCdEf";
        let batch = [
            message("1", &event("app/db")),
            message("2", &event(arn)),
            message("3", &event("someone/else")),
            message("4", "not an event"),
            message("5", &serde_json::json!({"source": "aws.s3", "detail": {}}).to_string()),
        ];
        let handled = pollers.handle(&store, &state, &client, &batch).await;
        assert_eq!(handled.described, ["app/db"], "once, though named twice; never for someone/else");
        let mut deleted = handled.delete.clone();
        deleted.sort();
        assert_eq!(deleted, ["1", "2", "3", "4", "5"]);
        assert_eq!(aws.calls().get("DescribeSecret"), Some(&1));
        assert_eq!(rx.try_recv().ok(), Some(es.clone()), "the reader is triggered");
        assert!(rx.try_recv().is_err(), "once");

        // The same event again (a duplicate, or late): AWS holds what was seen, nothing moves.
        let again = pollers.handle(&store, &state, &client, &batch[..1]).await;
        assert_eq!(again.delete, ["1"]);
        assert!(rx.try_recv().is_err(), "a duplicate triggers nothing");

        // AWS failing: the event stays queued, for SQS to show again.
        aws.fail_with(|| crate::error::Error::Throttled);
        let failing = pollers.handle(&store, &state, &client, &batch[..1]).await;
        assert!(failing.delete.is_empty(), "{failing:?}");

        let text = metrics.encode();
        for line in [
            r#"lockstep_events_total{store="SecretStore ns/s",outcome="matched"} 4"#,
            r#"lockstep_events_total{store="SecretStore ns/s",outcome="ignored"} 2"#,
            r#"lockstep_events_total{store="SecretStore ns/s",outcome="malformed"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("HIDDEN") && !text.contains("v2-value"), "no event body in metrics");
    }
}
