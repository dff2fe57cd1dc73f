//! The one way a store reaches AWS. Every Secrets Manager and STS call of a store goes through
//! [`Calls::call`], which takes a token of the store's rate limit, sends, and counts the outcome in
//! `lockstep_aws_calls_total`: nothing else counts or limits. What is sent sits behind the
//! [`Transport`] trait (one request per method, errors already classified), so that unit tests can
//! put an in-memory AWS behind the same seam.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::limit::RateLimiter;
use super::metadata::{ListFilter, SecretMeta, find_filters, find_matches, refers_to};
use crate::api::FindRef;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::source::{Fetched, SourceRef, Version};

/// BatchGetSecretValue takes at most this many ids a call (AWS enforces it; moto does not).
pub const BATCH_MAX: usize = 20;
/// ListSecrets page size (the most AWS allows).
const LIST_PAGE: i32 = 100;
/// Bound on the pages one listing may take (10,000 pages are a million secrets): guards a loop on
/// a token that never ends.
const MAX_PAGES: usize = 10_000;

/// One AWS request per method, its error classified into [`Error`]. Implemented by the SDK
/// clients of a store and, in tests, by an in-memory AWS.
pub trait Transport: Send + Sync {
    /// GetSecretValue naming the stage or version id explicitly.
    fn get_secret_value<'a>(&'a self, source: &'a SourceRef) -> BoxFuture<'a, Result<Fetched>>;
    /// One BatchGetSecretValue page for `ids` (names or ARNs).
    fn batch_get_secret_value<'a>(
        &'a self,
        ids: &'a [String],
        token: Option<String>,
    ) -> BoxFuture<'a, Result<BatchPage>>;
    /// DescribeSecret; `Ok(None)` when the secret does not exist or is deleted.
    fn describe_secret<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<SecretMeta>>>;
    /// One ListSecrets page (deleted secrets left out).
    fn list_secrets<'a>(
        &'a self,
        filters: &'a [ListFilter],
        page_size: i32,
        token: Option<String>,
    ) -> BoxFuture<'a, Result<ListPage>>;
    /// STS GetCallerIdentity: the ARN the credentials resolve to.
    fn get_caller_identity(&self) -> BoxFuture<'_, Result<String>>;
    /// One SQS ReceiveMessage long poll of `queue` (at most [`RECEIVE_MAX`] messages, waiting up to
    /// [`LONG_POLL`] for the first).
    fn receive_messages<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<Vec<QueueMessage>>>;
    /// One SQS DeleteMessageBatch of at most [`RECEIVE_MAX`] messages; the ids of those it could
    /// not delete.
    fn delete_messages<'a>(
        &'a self,
        queue: &'a str,
        messages: &'a [QueueMessage],
    ) -> BoxFuture<'a, Result<Vec<String>>>;
}

/// SQS long poll: the most a ReceiveMessage waits for a message (SQS's maximum).
pub const LONG_POLL: std::time::Duration = std::time::Duration::from_secs(20);
/// The most messages one ReceiveMessage returns and one DeleteMessageBatch takes (SQS's limit).
pub const RECEIVE_MAX: usize = 10;

/// A message of a store's event queue. Its body can carry request parameters of the AWS call it
/// reports, so `Debug` leaves it out and nothing logs it.
#[derive(Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: String,
    pub receipt: String,
    pub body: String,
}

impl std::fmt::Debug for QueueMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMessage").field("id", &self.id).finish_non_exhaustive()
    }
}

/// One page of a BatchGetSecretValue answer.
#[derive(Debug, Default)]
pub struct BatchPage {
    /// (name, ARN, the value) per secret answered.
    pub values: Vec<(String, String, Result<Fetched>)>,
    /// (the id as asked, why) per secret that failed.
    pub errors: Vec<(String, Error)>,
    pub next_token: Option<String>,
}

/// One page of a ListSecrets answer.
#[derive(Debug, Default)]
pub struct ListPage {
    pub secrets: Vec<SecretMeta>,
    pub next_token: Option<String>,
}

/// Where a store's calls are limited and counted.
pub struct Calls {
    limit: RateLimiter,
    metrics: Arc<Metrics>,
    /// The store, as the metrics' `store` label shows it.
    store: String,
}

impl Calls {
    /// `qps` calls a second with bursts of `burst`, counted under `store`.
    pub fn new(metrics: Arc<Metrics>, store: String, qps: f64, burst: u32) -> Arc<Self> {
        Arc::new(Self { limit: RateLimiter::new(qps, burst), metrics, store })
    }

    /// Send one AWS request: wait for a token, send, count the outcome.
    pub async fn call<T>(&self, operation: &'static str, send: impl Future<Output = Result<T>>) -> Result<T> {
        self.limit.acquire().await;
        let result = send.await;
        self.metrics.aws_call(&self.store, operation, result.as_ref().err());
        result
    }
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls").field("store", &self.store).finish_non_exhaustive()
    }
}

/// A store's AWS: its transport (credentials, region, endpoint) behind its rate limit and counter.
/// Cheap to clone.
#[derive(Clone)]
pub struct StoreClient {
    transport: Arc<dyn Transport>,
    calls: Arc<Calls>,
    events: Option<Arc<super::client::EventsConfig>>,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient").field("calls", &self.calls).finish_non_exhaustive()
    }
}

impl StoreClient {
    pub fn new(transport: Arc<dyn Transport>, calls: Arc<Calls>) -> Self {
        Self { transport, calls, events: None }
    }

    /// The same client, reading AWS events from `events`' queue.
    pub fn with_events(mut self, events: Option<super::client::EventsConfig>) -> Self {
        self.events = events.map(Arc::new);
        self
    }

    /// Where the store's AWS events arrive, if it reads them.
    pub fn events(&self) -> Option<&super::client::EventsConfig> {
        self.events.as_deref()
    }

    /// The limit and counter, which outlive a rebuild of the transport (new credentials are still
    /// the same store to AWS).
    pub fn calls(&self) -> &Arc<Calls> {
        &self.calls
    }

    /// The value of one version; for [`Version::Tags`], the secret's tags as a JSON object.
    pub async fn get_value(&self, source: &SourceRef) -> Result<Fetched> {
        if source.version == Version::Tags {
            return self.tags(&source.key).await;
        }
        self.calls.call("GetSecretValue", self.transport.get_secret_value(source)).await
    }

    async fn tags(&self, key: &str) -> Result<Fetched> {
        let meta =
            self.describe(key).await?.ok_or_else(|| Error::SecretNotFound { key: key.to_string(), detail: None })?;
        let json = serde_json::to_string(&meta.tags)
            .map_err(|_| Error::InvalidValue(format!("the tags of AWS secret {key:?} cannot be written as JSON")))?;
        Ok(Fetched {
            payload: crate::value::Payload::String(crate::value::SecretBytes::from(json)),
            version_id: meta.stages.get(crate::api::AWSCURRENT).cloned().unwrap_or_default(),
            created_date: None,
        })
    }

    /// The AWSCURRENT values of many secrets (names or ARNs), [`BATCH_MAX`] ids a call. One result
    /// per id, in the order of `ids` (a repeated id gets the same answer); a failed call fails only
    /// its own ids.
    pub async fn batch_get(&self, ids: &[String]) -> Vec<Result<Fetched>> {
        let mut out: Vec<Option<Result<Fetched>>> = ids.iter().map(|_| None).collect();
        for (n, chunk) in ids.chunks(BATCH_MAX).enumerate() {
            let slots = &mut out[n * BATCH_MAX..n * BATCH_MAX + chunk.len()];
            self.batch_chunk(chunk, slots).await;
        }
        out.into_iter()
            .zip(ids)
            .map(|(r, id)| {
                r.unwrap_or_else(|| {
                    Err(Error::SecretNotFound {
                        key: id.clone(),
                        detail: Some("not in the BatchGetSecretValue answer".into()),
                    })
                })
            })
            .collect()
    }

    async fn batch_chunk(&self, chunk: &[String], slots: &mut [Option<Result<Fetched>>]) {
        let mut request = chunk.to_vec();
        request.sort();
        request.dedup();
        let mut token: Option<String> = None;
        // Ids only, so every answer fits in one page; the bound guards against a looping token.
        for _ in 0..BATCH_MAX {
            let page = self.calls.call("BatchGetSecretValue", self.transport.batch_get_secret_value(&request, token));
            let page = match page.await {
                Ok(page) => page,
                Err(e) => {
                    for (slot, id) in slots.iter_mut().zip(chunk) {
                        slot.get_or_insert_with(|| Err(e.reissue(id)));
                    }
                    return;
                }
            };
            for (name, arn, value) in &page.values {
                for (slot, id) in slots.iter_mut().zip(chunk) {
                    if slot.is_none() && refers_to(id, name, arn) {
                        *slot = Some(match value {
                            Ok(v) => Ok(v.clone()),
                            Err(e) => Err(e.reissue(id)),
                        });
                    }
                }
            }
            for (failed, e) in &page.errors {
                for (slot, id) in slots.iter_mut().zip(chunk) {
                    if slot.is_none() && id == failed {
                        *slot = Some(Err(e.reissue(id)));
                    }
                }
            }
            token = page.next_token.filter(|t| !t.is_empty());
            if token.is_none() {
                return;
            }
        }
    }

    /// The change metadata of one secret; `None` when it does not exist.
    pub async fn describe(&self, key: &str) -> Result<Option<SecretMeta>> {
        self.calls.call("DescribeSecret", self.transport.describe_secret(key)).await
    }

    /// Every secret `filters` select, page by page; every page is counted, also when a later one
    /// fails.
    pub async fn list(&self, filters: &[ListFilter]) -> Result<Vec<SecretMeta>> {
        let mut out = Vec::new();
        self.list_each(filters, |page| out.extend(page)).await?;
        Ok(out)
    }

    /// Every secret `filters` select, handed to `each` a page at a time as it arrives (a poll acts
    /// on the first page while the last is still to come).
    pub async fn list_each(&self, filters: &[ListFilter], mut each: impl FnMut(Vec<SecretMeta>)) -> Result<()> {
        let mut token = None;
        for _ in 0..MAX_PAGES {
            let page = self.transport.list_secrets(filters, LIST_PAGE, token);
            let page = self.calls.call("ListSecrets", page).await?;
            token = page.next_token.filter(|t| !t.is_empty());
            each(page.secrets);
            if token.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// The secrets a `dataFrom.find` selects, sorted by name: ListSecrets narrowed by AWS's
    /// (prefix) filters, then matched exactly (its name regexp compiled as `name`).
    pub async fn find(&self, find: &FindRef, name: Option<&regex::Regex>) -> Result<Vec<SecretMeta>> {
        let mut found: Vec<SecretMeta> =
            self.list(&find_filters(find)).await?.into_iter().filter(|m| find_matches(find, name, m)).collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// The identity the store's credentials resolve to (a cheap call that needs no permission).
    pub async fn caller_identity(&self) -> Result<String> {
        self.calls.call("GetCallerIdentity", self.transport.get_caller_identity()).await
    }

    /// The messages one long poll of `queue` returns (none after [`LONG_POLL`] of quiet).
    pub async fn receive(&self, queue: &str) -> Result<Vec<QueueMessage>> {
        self.calls.call("ReceiveMessage", self.transport.receive_messages(queue)).await
    }

    /// Delete handled messages, [`RECEIVE_MAX`] a call; the ids of those that could not be deleted
    /// (they come back after the queue's visibility timeout, and its redrive policy bounds that).
    pub async fn delete_messages(&self, queue: &str, messages: &[QueueMessage]) -> Result<Vec<String>> {
        let mut failed = Vec::new();
        for chunk in messages.chunks(RECEIVE_MAX) {
            failed.extend(self.calls.call("DeleteMessageBatch", self.transport.delete_messages(queue, chunk)).await?);
        }
        Ok(failed)
    }
}
