//! The [`Transport`] of a real store: the AWS SDK's Secrets Manager and STS clients.

use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use aws_smithy_types::date_time::Format;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::metadata::{ListFilter, SecretMeta, stages_of};
use super::seam::{BatchPage, LONG_POLL, ListPage, QueueMessage, RECEIVE_MAX, Transport};
use super::{classify, classify_code};
use crate::error::{Error, Result};
use crate::source::{Fetched, SourceRef, Version};
use crate::value::{Payload, SecretBytes};

/// The SDK clients of one store, built for its credentials, region and endpoints.
#[derive(Clone, Debug)]
pub struct Sdk {
    pub sm: aws_sdk_secretsmanager::Client,
    /// For the store's validation call, on the same credentials.
    pub sts: aws_sdk_sts::Client,
    /// For the store's event queue, when it has one.
    pub sqs: Option<aws_sdk_sqs::Client>,
}

impl Transport for Sdk {
    fn get_secret_value<'a>(&'a self, source: &'a SourceRef) -> BoxFuture<'a, Result<Fetched>> {
        async move {
            let req = self.sm.get_secret_value().secret_id(&source.key);
            let req = match &source.version {
                Version::Stage(stage) => req.version_stage(stage),
                Version::Id(id) => req.version_id(id),
                Version::Tags => return Err(Error::InvalidValue("tags are read with DescribeSecret".into())),
            };
            let out = req.send().await.map_err(|e| classify(&e, &source.key))?;
            fetched(&source.key, out.secret_string, out.secret_binary, out.version_id, out.created_date.as_ref())
        }
        .boxed()
    }

    fn batch_get_secret_value<'a>(
        &'a self,
        ids: &'a [String],
        token: Option<String>,
    ) -> BoxFuture<'a, Result<BatchPage>> {
        async move {
            let req = self.sm.batch_get_secret_value().set_secret_id_list(Some(ids.to_vec())).set_next_token(token);
            let page = req.send().await.map_err(|e| classify(&e, "BatchGetSecretValue"))?;
            let values = page
                .secret_values()
                .iter()
                .map(|v| {
                    let (name, arn) = (v.name().unwrap_or_default(), v.arn().unwrap_or_default());
                    let (string, binary) = (v.secret_string().map(String::from), v.secret_binary().cloned());
                    let value = fetched(name, string, binary, v.version_id().map(String::from), v.created_date());
                    (name.to_string(), arn.to_string(), value)
                })
                .collect();
            let errors = page
                .errors()
                .iter()
                .map(|e| {
                    let id = e.secret_id().unwrap_or_default();
                    let (code, message) = (e.error_code().unwrap_or_default(), e.message().unwrap_or_default());
                    (id.to_string(), classify_code(code, message, 400, id))
                })
                .collect();
            Ok(BatchPage { values, errors, next_token: page.next_token().map(String::from) })
        }
        .boxed()
    }

    fn describe_secret<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<SecretMeta>>> {
        async move {
            match self.sm.describe_secret().secret_id(key).send().await {
                Ok(out) if out.deleted_date().is_some() => Ok(None),
                Ok(out) => Ok(Some(SecretMeta {
                    name: out.name().unwrap_or_default().to_string(),
                    arn: out.arn().unwrap_or_default().to_string(),
                    stages: stages_of(out.version_ids_to_stages().into_iter().flatten()),
                    tags: tags(out.tags()),
                })),
                Err(e) => match classify(&e, key) {
                    Error::SecretNotFound { .. } => Ok(None),
                    other => Err(other),
                },
            }
        }
        .boxed()
    }

    fn list_secrets<'a>(
        &'a self,
        filters: &'a [ListFilter],
        page_size: i32,
        token: Option<String>,
    ) -> BoxFuture<'a, Result<ListPage>> {
        async move {
            let filters: Vec<Filter> = filters.iter().map(sdk_filter).collect();
            let req = self
                .sm
                .list_secrets()
                .max_results(page_size)
                .set_next_token(token)
                .set_filters((!filters.is_empty()).then_some(filters));
            let page = req.send().await.map_err(|e| classify(&e, "ListSecrets"))?;
            let secrets = page
                .secret_list()
                .iter()
                .filter(|s| s.deleted_date().is_none())
                .map(|s| SecretMeta {
                    name: s.name().unwrap_or_default().to_string(),
                    arn: s.arn().unwrap_or_default().to_string(),
                    stages: stages_of(s.secret_versions_to_stages().into_iter().flatten()),
                    tags: tags(s.tags()),
                })
                .collect();
            Ok(ListPage { secrets, next_token: page.next_token().map(String::from) })
        }
        .boxed()
    }

    fn get_caller_identity(&self) -> BoxFuture<'_, Result<String>> {
        async move {
            let out = self.sts.get_caller_identity().send().await.map_err(|e| classify(&e, "GetCallerIdentity"))?;
            Ok(out.arn().unwrap_or_default().to_string())
        }
        .boxed()
    }

    fn receive_messages<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<Vec<QueueMessage>>> {
        self.receive(queue).boxed()
    }

    fn delete_messages<'a>(
        &'a self,
        queue: &'a str,
        messages: &'a [QueueMessage],
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        self.delete(queue, messages).boxed()
    }
}

impl Sdk {
    fn sqs(&self, queue: &str) -> Result<&aws_sdk_sqs::Client> {
        self.sqs.as_ref().ok_or_else(|| Error::EventsUnavailable(format!("no SQS client for {queue}")))
    }

    async fn receive(&self, queue: &str) -> Result<Vec<QueueMessage>> {
        let out = self
            .sqs(queue)?
            .receive_message()
            .queue_url(queue)
            .wait_time_seconds(LONG_POLL.as_secs() as i32)
            .max_number_of_messages(RECEIVE_MAX as i32)
            .send()
            .await
            .map_err(|e| sqs_error(&e, "ReceiveMessage", queue))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                Some(QueueMessage {
                    id: m.message_id()?.to_string(),
                    receipt: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }

    async fn delete(&self, queue: &str, messages: &[QueueMessage]) -> Result<Vec<String>> {
        use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
        let entries = messages
            .iter()
            .enumerate()
            .map(|(n, m)| {
                DeleteMessageBatchRequestEntry::builder().id(n.to_string()).receipt_handle(&m.receipt).build()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::EventsUnavailable(format!("DeleteMessageBatch on {queue}: {e}")))?;
        let out = self
            .sqs(queue)?
            .delete_message_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sqs_error(&e, "DeleteMessageBatch", queue))?;
        Ok(out
            .failed()
            .iter()
            .filter_map(|f| f.id().parse::<usize>().ok())
            .filter_map(|n| messages.get(n).map(|m| m.id.clone()))
            .collect())
    }
}

/// An SQS failure, for the store's events condition: what SQS said, never a message body.
fn sqs_error<E>(
    err: &aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
    operation: &str,
    queue: &str,
) -> Error
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    let detail = match err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            match (e.code(), e.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => format!("HTTP {}", ctx.raw().status().as_u16()),
            }
        }
        _ => match classify(err, queue) {
            Error::ProviderUnavailable(m) => m,
            other => other.to_string(),
        },
    };
    Error::EventsUnavailable(format!("{operation} on {queue}: {detail}"))
}

fn sdk_filter(f: &ListFilter) -> Filter {
    let (key, value) = match f {
        ListFilter::Name(v) => (FilterNameStringType::Name, v),
        ListFilter::TagKey(v) => (FilterNameStringType::TagKey, v),
        ListFilter::TagValue(v) => (FilterNameStringType::TagValue, v),
    };
    Filter::builder().key(key).values(value).build()
}

fn tags(tags: &[aws_sdk_secretsmanager::types::Tag]) -> std::collections::BTreeMap<String, String> {
    tags.iter().map(|t| (t.key().unwrap_or_default().into(), t.value().unwrap_or_default().into())).collect()
}

fn fetched(
    key: &str,
    string: Option<String>,
    binary: Option<aws_smithy_types::Blob>,
    version_id: Option<String>,
    created: Option<&aws_smithy_types::DateTime>,
) -> Result<Fetched> {
    let payload = match (string, binary) {
        (Some(s), _) => Payload::String(SecretBytes::from(s)),
        (None, Some(b)) => Payload::Binary(SecretBytes::new(b.into_inner())),
        (None, None) => {
            return Err(Error::SecretNotFound {
                key: key.to_string(),
                detail: Some("the version holds no value".into()),
            });
        }
    };
    Ok(Fetched {
        payload,
        version_id: version_id.unwrap_or_default(),
        created_date: created.and_then(|d| d.fmt(Format::DateTime).ok()),
    })
}
