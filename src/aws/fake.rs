//! An in-memory AWS Secrets Manager behind the [`Transport`] seam, for unit tests of the fetch
//! path and the sync steps: secrets with versions and stages, call counts, injected failures.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::metadata::{ListFilter, SecretMeta};
use super::seam::{BatchPage, LONG_POLL, ListPage, QueueMessage, RECEIVE_MAX, Transport};
use crate::error::{Error, Result};
use crate::lock;
use crate::source::{Fetched, SourceRef, Version};
use crate::value::{Payload, SecretBytes};

#[derive(Default)]
struct Secret {
    versions: BTreeMap<String, String>,
    stages: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    secrets: BTreeMap<String, Secret>,
    calls: BTreeMap<&'static str, usize>,
    failing: Option<fn() -> Error>,
    next_version: u32,
    queue: std::collections::VecDeque<QueueMessage>,
    deleted: Vec<String>,
}

/// Secrets by name; version ids are `v1`, `v2`, ... in the order values are put.
#[derive(Default)]
pub struct FakeAws {
    state: Mutex<State>,
}

impl FakeAws {
    /// A new version of `name` holding `value`, made AWSCURRENT (the old one AWSPREVIOUS).
    pub fn put(&self, name: &str, value: &str) -> String {
        let mut st = lock(&self.state);
        st.next_version += 1;
        let id = format!("v{}", st.next_version);
        let secret = st.secrets.entry(name.to_string()).or_default();
        secret.versions.insert(id.clone(), value.to_string());
        if let Some(old) = secret.stages.insert("AWSCURRENT".into(), id.clone()) {
            secret.stages.insert("AWSPREVIOUS".into(), old);
        }
        id
    }

    pub fn delete(&self, name: &str) {
        lock(&self.state).secrets.remove(name);
    }

    /// Every call fails with `error()` until [`FakeAws::heal`].
    pub fn fail_with(&self, error: fn() -> Error) {
        lock(&self.state).failing = Some(error);
    }

    pub fn heal(&self) {
        lock(&self.state).failing = None;
    }

    /// A message for the event queue (any queue URL reads it); its id is returned.
    pub fn send(&self, body: &str) -> String {
        let mut st = lock(&self.state);
        let id = format!("m{}", st.queue.len() + st.deleted.len() + 1);
        st.queue.push_back(QueueMessage { id: id.clone(), receipt: format!("r-{id}"), body: body.into() });
        id
    }

    /// The ids of the messages deleted so far.
    pub fn deleted(&self) -> Vec<String> {
        lock(&self.state).deleted.clone()
    }

    /// Calls made so far, by operation.
    pub fn calls(&self) -> BTreeMap<&'static str, usize> {
        lock(&self.state).calls.clone()
    }

    fn enter(&self, operation: &'static str) -> Result<std::sync::MutexGuard<'_, State>> {
        let mut st = lock(&self.state);
        *st.calls.entry(operation).or_default() += 1;
        match st.failing {
            Some(error) => Err(error()),
            None => Ok(st),
        }
    }
}

fn value_of(secrets: &BTreeMap<String, Secret>, source: &SourceRef) -> Result<Fetched> {
    let not_found = || Error::SecretNotFound { key: source.key.clone(), detail: None };
    let secret = secrets.get(&source.key).ok_or_else(not_found)?;
    let id = match &source.version {
        Version::Stage(stage) => secret.stages.get(stage).ok_or_else(not_found)?,
        Version::Id(id) => id,
        Version::Tags => return Err(Error::InvalidValue("tags are read with DescribeSecret".into())),
    };
    let value = secret.versions.get(id).ok_or_else(not_found)?;
    Ok(Fetched {
        payload: Payload::String(SecretBytes::from(value.clone())),
        version_id: id.clone(),
        created_date: None,
    })
}

fn meta(name: &str, secret: &Secret) -> SecretMeta {
    SecretMeta {
        name: name.into(),
        arn: format!("arn:aws:secretsmanager:us-east-1:000000000000:secret:{name}-AbCdEf"),
        stages: secret.stages.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        tags: BTreeMap::new(),
    }
}

impl Transport for FakeAws {
    fn get_secret_value<'a>(&'a self, source: &'a SourceRef) -> BoxFuture<'a, Result<Fetched>> {
        let r = self.enter("GetSecretValue").and_then(|st| value_of(&st.secrets, source));
        async move { r }.boxed()
    }

    fn batch_get_secret_value<'a>(&'a self, ids: &'a [String], _: Option<String>) -> BoxFuture<'a, Result<BatchPage>> {
        let r = self.enter("BatchGetSecretValue").map(|st| {
            let mut page = BatchPage::default();
            for id in ids {
                match value_of(&st.secrets, &SourceRef::current(id)) {
                    Ok(f) => page.values.push((id.clone(), meta(id, &Secret::default()).arn, Ok(f))),
                    Err(e) => page.errors.push((id.clone(), e)),
                }
            }
            page
        });
        async move { r }.boxed()
    }

    fn describe_secret<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<SecretMeta>>> {
        let r = self.enter("DescribeSecret").map(|st| st.secrets.get(key).map(|s| meta(key, s)));
        async move { r }.boxed()
    }

    fn list_secrets<'a>(
        &'a self,
        filters: &'a [ListFilter],
        _: i32,
        _: Option<String>,
    ) -> BoxFuture<'a, Result<ListPage>> {
        let r = self.enter("ListSecrets").map(|st| {
            let prefix = filters.iter().find_map(|f| match f {
                ListFilter::Name(p) => Some(p.as_str()),
                _ => None,
            });
            let secrets = st
                .secrets
                .iter()
                .filter(|(name, _)| prefix.is_none_or(|p| name.starts_with(p)))
                .map(|(name, s)| meta(name, s))
                .collect();
            ListPage { secrets, next_token: None }
        });
        async move { r }.boxed()
    }

    fn get_caller_identity(&self) -> BoxFuture<'_, Result<String>> {
        let r = self.enter("GetCallerIdentity").map(|_| "arn:aws:iam::000000000000:user/fake".to_string());
        async move { r }.boxed()
    }

    fn receive_messages<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<QueueMessage>>> {
        let r = self.enter("ReceiveMessage").map(|mut st| {
            let n = st.queue.len().min(RECEIVE_MAX);
            st.queue.drain(..n).collect::<Vec<_>>()
        });
        async move {
            // A quiet queue answers after the long poll, as SQS does.
            if matches!(&r, Ok(m) if m.is_empty()) {
                tokio::time::sleep(LONG_POLL).await;
            }
            r
        }
        .boxed()
    }

    fn delete_messages<'a>(&'a self, _: &'a str, messages: &'a [QueueMessage]) -> BoxFuture<'a, Result<Vec<String>>> {
        let r = self.enter("DeleteMessageBatch").map(|mut st| {
            st.deleted.extend(messages.iter().map(|m| m.id.clone()));
            Vec::new()
        });
        async move { r }.boxed()
    }
}
