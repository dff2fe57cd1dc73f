//! Fetches of AWSCURRENT values that arrive together (a cold start, a rotation that triggers many
//! ExternalSecrets at once) are gathered for a moment and sent as BatchGetSecretValue, 20 ids a
//! call; a lone fetch goes as GetSecretValue. Every call still takes a token of the store's rate
//! limit, so a wave of syncs costs a twentieth of the calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::StoreId;
use crate::api::AWSCURRENT;
use crate::aws::fetch::{BATCH_MAX, batch_get};
use crate::aws::{StoreClient, get_secret_value};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::render::{Fetched, SourceKey, VersionSel};

/// How long the first fetch of a batch waits for company.
const WINDOW: Duration = Duration::from_millis(10);

type Waiter = (String, oneshot::Sender<Result<Fetched>>);

/// Fetches waiting to be sent, per store.
pub struct Batcher {
    metrics: Arc<Metrics>,
    pending: Mutex<HashMap<StoreId, (StoreClient, Vec<Waiter>)>>,
}

impl Batcher {
    /// A batcher counting its calls in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { metrics, pending: Mutex::default() })
    }

    /// The AWSCURRENT value of `key`. When `expected` (the version the poller saw behind AWSCURRENT)
    /// is known and the batch answered with another version, the value is fetched again by stage.
    pub async fn current(
        self: &Arc<Self>,
        store: &StoreId,
        client: &StoreClient,
        key: &str,
        expected: Option<&str>,
    ) -> Result<Fetched> {
        let (tx, rx) = oneshot::channel();
        let flush_now = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let (held, waiting) = pending.entry(store.clone()).or_insert_with(|| (client.clone(), Vec::new()));
            *held = client.clone();
            waiting.push((key.to_string(), tx));
            match waiting.len() {
                1 => Some(WINDOW),
                n if n >= BATCH_MAX => Some(Duration::ZERO),
                _ => None,
            }
        };
        if let Some(wait) = flush_now {
            let this = self.clone();
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                this.flush(&store).await;
            });
        }
        let fetched = rx.await.unwrap_or_else(|_| Err(Error::ProviderUnavailable("the fetch was dropped".into())))?;
        match expected {
            Some(v) if v != fetched.version_id => self.by_stage(store, client, key).await,
            _ => Ok(fetched),
        }
    }

    async fn flush(&self, store: &StoreId) {
        let Some((client, waiting)) = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(store) else {
            return;
        };
        if let [(key, _)] = waiting.as_slice() {
            let r = self.by_stage(store, &client, key).await;
            if let Some((_, tx)) = waiting.into_iter().next() {
                let _ = tx.send(r);
            }
            return;
        }
        let ids: Vec<String> = waiting.iter().map(|(k, _)| k.clone()).collect();
        let results = batch_get(&client, &self.metrics, &store.to_string(), &ids).await;
        for ((_, tx), r) in waiting.into_iter().zip(results) {
            let _ = tx.send(r);
        }
    }

    async fn by_stage(&self, store: &StoreId, client: &StoreClient, key: &str) -> Result<Fetched> {
        let source = SourceKey { key: key.to_string(), version: VersionSel::Stage(AWSCURRENT.into()) };
        client.limit.acquire().await;
        let r = get_secret_value(&client.sm, &source).await;
        self.metrics.aws_call(&store.to_string(), "GetSecretValue", r.as_ref().err());
        r
    }
}
