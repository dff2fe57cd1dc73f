//! AWS Secrets Manager access: one client per store, built once and reused; fetches; error
//! classification.

mod client;
mod errors;
pub mod fetch;
pub mod limit;
pub mod metadata;
mod sts_credentials;

pub use client::{StaticKeys, StoreClient, StoreConfig};
pub use errors::{classify, classify_code};
pub use fetch::get_secret_value;
pub use sts_credentials::CallCounter;
