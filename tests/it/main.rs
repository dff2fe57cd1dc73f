//! Integration tests against the real rig (kube-apiserver + etcd, moto). One test binary, so the
//! rig starts once.

// Tests say `expect("why")` and fail loudly. Clippy's allow-expect-in-tests covers `#[test]`
// functions, not the helpers of an integration-test crate, which are test code all the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chart;
mod cluster_external_secret;
mod common;
mod events;
mod faults;
mod ha;
mod hygiene;
mod lifecycle;
mod mapping;
mod migration;
mod operator;
mod ops;
mod rotation;
mod smoke;
mod tenancy;
