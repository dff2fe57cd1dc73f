//! What a spec reads: references to AWS secret versions, and the values fetched for them.
//!
//! These types sit below both the AWS layer (which fetches them) and the renderer (which reads
//! them), so neither depends on the other.

use std::collections::BTreeMap;

use crate::api::{AWSCURRENT, ExternalSecretSpec, MetadataPolicy, RemoteRef};
use crate::value::Payload;

/// Which version of an AWS secret is read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// A staging label (AWSCURRENT unless the spec says otherwise): follows rotations.
    Stage(String),
    /// A version id: pinned, its value never changes.
    Id(String),
    /// The secret's tags instead of a value (ESO's metadataPolicy Fetch), read at every sync.
    Tags,
}

/// One AWS secret version: what a (store, secret, version) fetch is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceRef {
    /// Name or ARN as written in the spec.
    pub key: String,
    pub version: Version,
}

impl SourceRef {
    /// The AWSCURRENT version of `key` (how a secret found by `dataFrom.find` is read).
    pub fn current(key: &str) -> Self {
        SourceRef { key: key.to_string(), version: Version::Stage(AWSCURRENT.to_string()) }
    }

    /// The stage this reads, if it follows one.
    pub fn stage(&self) -> Option<&str> {
        match &self.version {
            Version::Stage(stage) => Some(stage),
            Version::Id(_) | Version::Tags => None,
        }
    }
}

impl From<&RemoteRef> for SourceRef {
    fn from(r: &RemoteRef) -> Self {
        let version = match (r.metadata_policy, r.version_id(), r.stage()) {
            (MetadataPolicy::Fetch, _, _) => Version::Tags,
            (MetadataPolicy::None, Some(id), _) => Version::Id(id.to_string()),
            (MetadataPolicy::None, None, stage) => Version::Stage(stage.unwrap_or(AWSCURRENT).to_string()),
        };
        SourceRef { key: r.key.clone(), version }
    }
}

/// A fetched version of an AWS secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub payload: Payload,
    /// The version id that was read (for a stage: the one holding it at the time).
    pub version_id: String,
    /// When that version was created, RFC 3339, when AWS said.
    pub created_date: Option<String>,
}

/// The AWS secrets each `dataFrom[].find` selected (names, sorted), by dataFrom index.
pub type FindResults = BTreeMap<usize, Vec<String>>;

/// Everything one sync reads: the versions the spec names (`data`, `dataFrom.extract`) and the
/// secrets its `dataFrom.find` entries selected. Computed once per sync.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sources {
    /// The versions `data` and `dataFrom.extract` name, sorted, without duplicates.
    pub named: Vec<SourceRef>,
    pub found: FindResults,
    /// Found secret -> the version id behind its AWSCURRENT when it was listed.
    pub listed: BTreeMap<String, String>,
}

impl Sources {
    /// The sources a spec names; `found` is filled by listing its finds.
    pub fn of(spec: &ExternalSecretSpec) -> Self {
        let mut named: Vec<SourceRef> = spec
            .data
            .iter()
            .map(|d| SourceRef::from(&d.remote_ref))
            .chain(spec.data_from.iter().filter_map(|d| d.extract.as_ref()).map(SourceRef::from))
            .collect();
        named.sort();
        named.dedup();
        Sources { named, ..Default::default() }
    }

    /// Every version read: the named ones and the AWSCURRENT of each found secret, sorted,
    /// without duplicates.
    pub fn all(&self) -> Vec<SourceRef> {
        let mut out = self.named.clone();
        out.extend(self.found.values().flatten().map(|name| SourceRef::current(name)));
        out.sort();
        out.dedup();
        out
    }

    /// Forget a found secret (deleted between listing and fetching: no longer found).
    pub fn lose(&mut self, name: &str) {
        self.found.values_mut().for_each(|names| names.retain(|n| n != name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ExternalSecretData, ExternalSecretDataFrom};

    fn rref(key: &str, stage: Option<&str>) -> RemoteRef {
        RemoteRef { key: key.into(), version: stage.map(Into::into), ..Default::default() }
    }

    #[test]
    fn sources_are_listed_once_each_in_order() {
        let spec = ExternalSecretSpec {
            data: vec![
                ExternalSecretData { secret_key: "a".into(), remote_ref: rref("db", None), ..Default::default() },
                ExternalSecretData { secret_key: "b".into(), remote_ref: rref("db", None), ..Default::default() },
                ExternalSecretData {
                    secret_key: "c".into(),
                    remote_ref: rref("db", Some("AWSPREVIOUS")),
                    ..Default::default()
                },
            ],
            data_from: vec![ExternalSecretDataFrom { extract: Some(rref("api", None)), ..Default::default() }],
            ..Default::default()
        };
        let mut s = Sources::of(&spec);
        assert_eq!(s.named.len(), 3, "db twice at AWSCURRENT is one source");
        s.found.insert(1, vec!["db".into(), "x".into()]);
        let all = s.all();
        assert_eq!(all.len(), 4, "a found secret also named is read once: {all:?}");
        s.lose("x");
        assert_eq!(s.all().len(), 3);
    }
}
