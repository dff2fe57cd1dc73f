//! `lockstep refresh`: sync again, and fetch afresh, every ExternalSecret that reads one AWS
//! secret (or uses one store, or one by name), through the cluster API only: it sets the
//! annotation [`REFRESH_ANNOTATION`] to the time of the request, which the operator honours as a
//! change of the ExternalSecret.

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::json;

use super::{CliError, EXIT_NOT_READY, EXIT_OK, FIELD_MANAGER, Format, serialize, table};
use crate::api::{ExternalSecret, StoreKind};
use crate::source::SourceRef;

pub use crate::REFRESH_ANNOTATION;

/// Which ExternalSecrets a refresh touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// The one of this name.
    Name(String),
    /// Those reading AWS secret `key` (a name or an ARN), through `store` when given.
    AwsSecret { key: String, store: Option<StoreSel> },
    /// Those using this store.
    Store(StoreSel),
}

/// A store as `--store [KIND/]NAME` names it (KIND `SecretStore`, the default, or
/// `ClusterSecretStore`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSel {
    pub kind: StoreKind,
    pub name: String,
}

impl std::str::FromStr for StoreSel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, name) = match s.split_once('/') {
            None => (StoreKind::SecretStore, s),
            Some((k, name)) if k.eq_ignore_ascii_case("SecretStore") => (StoreKind::SecretStore, name),
            Some((k, name)) if k.eq_ignore_ascii_case("ClusterSecretStore") => (StoreKind::ClusterSecretStore, name),
            Some((k, _)) => return Err(format!("unknown store kind {k:?}: SecretStore or ClusterSecretStore")),
        };
        if name.is_empty() {
            return Err("a store name is needed".into());
        }
        Ok(StoreSel { kind, name: name.to_string() })
    }
}

/// PURE: the secret name an AWS key means: the name itself, or the name inside a Secrets Manager
/// ARN (`arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 random characters>`).
fn secret_name(key: &str) -> &str {
    match key.split_once(":secret:") {
        Some((arn, rest)) if arn.starts_with("arn:") => match rest.rsplit_once('-') {
            Some((name, suffix)) if suffix.len() == 6 => name,
            _ => rest,
        },
        _ => key,
    }
}

/// PURE: whether two keys (names or ARNs) name the same AWS secret.
pub fn same_secret(a: &str, b: &str) -> bool {
    a == b || secret_name(a) == secret_name(b)
}

fn uses(es: &ExternalSecret, store: &StoreSel) -> bool {
    let r = &es.spec.secret_store_ref;
    r.kind == store.kind && r.name == store.name
}

/// PURE: whether `es` reads AWS secret `key`: named by `data` or `dataFrom.extract`, or found by
/// a `dataFrom.find` at its last sync (its `status.sources`).
pub fn reads(es: &ExternalSecret, key: &str) -> bool {
    let named = crate::source::Sources::of(&es.spec).named.into_iter().map(|s: SourceRef| s.key);
    let live = es.status.iter().flat_map(|s| s.sources.iter().map(|s| s.key.clone()));
    named.chain(live).any(|k| same_secret(&k, key))
}

/// PURE: whether `selector` picks `es`.
pub fn selects(selector: &Selector, es: &ExternalSecret) -> bool {
    match selector {
        Selector::Name(name) => es.name_any() == *name,
        Selector::Store(store) => uses(es, store),
        Selector::AwsSecret { key, store } => reads(es, key) && store.as_ref().is_none_or(|s| uses(es, s)),
    }
}

/// What `lockstep refresh` asks.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["name", "store", "aws_secret"])))]
pub struct Args {
    /// The ExternalSecret to refresh.
    #[arg(conflicts_with_all = ["store", "aws_secret"])]
    pub name: Option<String>,
    /// Every ExternalSecret using this store: `NAME` (a SecretStore) or `ClusterSecretStore/NAME`;
    /// with --aws-secret, only those reading it through this store.
    #[arg(long)]
    pub store: Option<StoreSel>,
    /// Every ExternalSecret reading this AWS secret (name or ARN).
    #[arg(long)]
    pub aws_secret: Option<String>,
    /// In every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

impl Args {
    fn selector(&self) -> Selector {
        match (&self.name, &self.aws_secret, &self.store) {
            (Some(name), _, _) => Selector::Name(name.clone()),
            (None, Some(key), store) => Selector::AwsSecret { key: key.clone(), store: store.clone() },
            (None, None, Some(store)) => Selector::Store(store.clone()),
            (None, None, None) => Selector::Name(String::new()),
        }
    }
}

/// An ExternalSecret a refresh touched.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Touched {
    pub namespace: String,
    pub name: String,
    pub requested: String,
}

/// Annotate every selected ExternalSecret, print which, and return the exit code:
/// [`EXIT_NOT_READY`] when none matched.
pub async fn run(client: Client, namespace: &str, args: &Args, out: &mut impl std::io::Write) -> Result<u8, CliError> {
    let api: Api<ExternalSecret> = match args.all_namespaces {
        true => Api::all(client.clone()),
        false => Api::namespaced(client.clone(), namespace),
    };
    let selector = args.selector();
    let mut list = api.list(&ListParams::default()).await?.items;
    list.retain(|es| selects(&selector, es));
    list.sort_by_key(|es| (es.namespace(), es.name_any()));
    let now = jiff::Timestamp::now().to_string();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut touched = Vec::new();
    for es in &list {
        let ns = es.namespace().unwrap_or_default();
        let patch = json!({
            "apiVersion": <ExternalSecret as kube::Resource>::api_version(&()),
            "kind": "ExternalSecret",
            "metadata": {"name": es.name_any(), "annotations": {REFRESH_ANNOTATION: now}},
        });
        Api::<ExternalSecret>::namespaced(client.clone(), &ns)
            .patch(&es.name_any(), &params, &Patch::Apply(&patch))
            .await?;
        touched.push(Touched { namespace: ns, name: es.name_any(), requested: now.clone() });
    }
    let text = match args.output {
        Format::Table if touched.is_empty() => "No ExternalSecret matched; nothing refreshed.\n".to_string(),
        Format::Table => {
            let rows: Vec<Vec<String>> = touched.iter().map(|t| vec![t.namespace.clone(), t.name.clone()]).collect();
            let plural = if touched.len() == 1 { "" } else { "s" };
            table(&["NAMESPACE", "NAME"], &rows, |_, _, s| s.to_string())
                + &format!("Refresh requested for {} ExternalSecret{plural}.\n", touched.len())
        }
        format => serialize(&touched, format)?,
    };
    out.write_all(text.as_bytes()).map_err(|e| CliError::Output(e.to_string()))?;
    Ok(if touched.is_empty() { EXIT_NOT_READY } else { EXIT_OK })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        ExternalSecretData, ExternalSecretSpec, ExternalSecretStatus, RemoteRef, SecretStoreRef, SourceStatus,
    };

    fn es(name: &str, store: (StoreKind, &str), keys: &[&str], found: &[&str]) -> ExternalSecret {
        let data = keys
            .iter()
            .map(|k| ExternalSecretData {
                secret_key: "k".into(),
                remote_ref: RemoteRef { key: k.to_string(), ..Default::default() },
                ..Default::default()
            })
            .collect();
        let spec = ExternalSecretSpec {
            secret_store_ref: SecretStoreRef { name: store.1.into(), kind: store.0 },
            data,
            ..Default::default()
        };
        let mut es = ExternalSecret::new(name, spec);
        es.status = Some(ExternalSecretStatus {
            sources: found.iter().map(|k| SourceStatus { key: k.to_string(), ..Default::default() }).collect(),
            ..Default::default()
        });
        es
    }

    #[test]
    fn selection_by_name_store_and_aws_secret() {
        const ARN: &str = "arn:aws:secretsmanager:us-east-1:111111111111:secret:prod/db-AbCdEf";
        let all = [
            es("a", (StoreKind::SecretStore, "aws"), &["prod/db"], &[]),
            es("b", (StoreKind::SecretStore, "aws"), &[ARN], &[]),
            es("c", (StoreKind::ClusterSecretStore, "aws"), &["prod/api"], &["prod/db"]),
            es("d", (StoreKind::SecretStore, "other"), &["prod/db-old"], &[]),
        ];
        let picked = |s: Selector| all.iter().filter(|e| selects(&s, e)).map(|e| e.name_any()).collect::<Vec<_>>();
        let store = |s: &str| s.parse::<StoreSel>().expect("a store");
        assert_eq!(picked(Selector::Name("b".into())), ["b"]);
        assert_eq!(picked(Selector::AwsSecret { key: "prod/db".into(), store: None }), ["a", "b", "c"]);
        assert_eq!(picked(Selector::AwsSecret { key: ARN.into(), store: None }), ["a", "b", "c"]);
        assert_eq!(picked(Selector::AwsSecret { key: "prod/db".into(), store: Some(store("aws")) }), ["a", "b"]);
        assert_eq!(picked(Selector::Store(store("ClusterSecretStore/aws"))), ["c"]);
        assert_eq!(picked(Selector::Store(store("secretstore/other"))), ["d"]);
        assert!(picked(Selector::AwsSecret { key: "prod".into(), store: None }).is_empty());
        assert!("Vault/x".parse::<StoreSel>().is_err() && "SecretStore/".parse::<StoreSel>().is_err());
    }

    #[test]
    fn arns_and_names_of_one_secret() {
        let arn = "arn:aws:secretsmanager:eu-central-1:1:secret:a/b-c-123456";
        assert!(same_secret(arn, "a/b-c"));
        assert!(same_secret("a/b-c", arn));
        assert!(!same_secret(arn, "a/b"));
        assert!(same_secret("x", "x") && !same_secret("x", "y"));
    }
}
