//! AWS Secrets Manager access: one seam per store ([`StoreClient`]) through which every call is
//! rate-limited, classified and counted; the SDK transport behind it, built once per store and
//! reused; change metadata and listing rules.

mod client;
mod errors;
#[cfg(test)]
pub mod fake;
pub mod limit;
pub mod metadata;
mod sdk;
mod seam;
mod sts_credentials;

pub use client::{
    EventsConfig, NoTokens, STS_AUDIENCE, ServiceAccountIdentity, ServiceAccountTokens, StaticKeys, StoreConfig, build,
    session_name,
};
pub use errors::{classify, classify_code};
pub use seam::{BATCH_MAX, BatchPage, Calls, LONG_POLL, ListPage, QueueMessage, RECEIVE_MAX, StoreClient, Transport};
