//! AWS Secrets Manager access: one client per store, built once and reused; fetches; error
//! classification.

mod client;
mod errors;
pub mod fetch;
pub mod limit;
pub mod metadata;
mod web_identity;

pub use client::{StaticKeys, StoreClient, StoreConfig};
pub use errors::{classify, classify_code};
pub use fetch::get_secret_value;
