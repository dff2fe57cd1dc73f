//! Integration tests against the real rig (kube-apiserver + etcd, moto). One test binary, so the
//! rig starts once.

mod chart;
mod common;
mod faults;
mod ha;
mod hygiene;
mod mapping;
mod operator;
mod rotation;
mod smoke;
mod tenancy;
