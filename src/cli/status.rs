//! `lockstep status`: the ExternalSecrets of a namespace (or all) as a table, with the Ready
//! reason, when they last synced from AWS, the AWS version ids live, and for a
//! not-Ready one the message and what to do.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use super::{CliError, EXIT_NOT_READY, EXIT_OK, Format, fix, paint, serialize, table};
use crate::api::{ExternalSecret, SourceStatus, StoreKind};
use crate::status::READY;

/// One ExternalSecret as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    /// `name` for a SecretStore, `ClusterSecretStore/name` for the other kind.
    pub store: String,
    /// `True`, `False`, or `Pending` (no Ready condition for the current generation yet).
    pub ready: String,
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// When the last sync that read AWS wrote (or confirmed) the Secret (`status.refreshTime`,
    /// RFC 3339); before any, when the operator last wrote the status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<String>,
    pub sources: Vec<SourceStatus>,
}

impl Row {
    fn is_ready(&self) -> bool {
        self.ready == "True"
    }
}

/// PURE: the row of one ExternalSecret.
pub fn row(es: &ExternalSecret) -> Row {
    let store_ref = &es.spec.secret_store_ref;
    let store = match store_ref.kind {
        StoreKind::SecretStore => store_ref.name.clone(),
        StoreKind::ClusterSecretStore => format!("ClusterSecretStore/{}", store_ref.name),
    };
    let status = es.status.clone().unwrap_or_default();
    let condition = status.conditions.iter().find(|c| c.type_ == READY);
    let generation = es.metadata.generation;
    let (ready, reason, message) = match condition {
        Some(c) if c.observed_generation == generation || generation.is_none() => {
            (c.status.clone(), c.reason.clone(), c.message.clone())
        }
        Some(c) => (
            "Pending".to_string(),
            c.reason.clone(),
            format!(
                "generation {} is not synced yet; the last sync said: {}",
                generation.unwrap_or_default(),
                c.message
            ),
        ),
        None => ("Pending".to_string(), String::new(), "not synced yet".to_string()),
    };
    // `status.refreshTime` (the last sync that read AWS), else the time of the operator's last
    // status write, else the condition's last transition.
    let written = es
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some(crate::MANAGER) && m.subresource.as_deref() == Some("status"));
    let last_sync = status
        .refresh_time
        .clone()
        .or_else(|| written.and_then(|m| m.time.clone()))
        .or_else(|| condition.map(|c| c.last_transition_time.clone()));
    let fix = if ready == "True" { None } else { fix(&reason).map(String::from) };
    Row {
        namespace: es.namespace().unwrap_or_default(),
        name: es.name_any(),
        store,
        ready,
        reason,
        message,
        fix,
        last_sync: last_sync.map(|Time(t)| t.to_string()),
        sources: status.sources,
    }
}

/// PURE: a duration as kubectl shows ages: `42s`, `5m`, `3h`, `12d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// PURE: the versions column: `key=<first 8 of the version id>` each, at most three.
fn versions(sources: &[SourceStatus]) -> String {
    let mut shown: Vec<String> = sources
        .iter()
        .take(3)
        .map(|s| format!("{}={}", s.key, s.version_id.chars().take(8).collect::<String>()))
        .collect();
    if sources.len() > 3 {
        shown.push(format!("+{} more", sources.len() - 3));
    }
    if shown.is_empty() { "-".into() } else { shown.join(",") }
}

/// PURE: `rows` as the table, each not-Ready row followed by its message and fix. `now` in Unix
/// seconds; `namespaces`: add the NAMESPACE column.
pub fn render_table(rows: &[Row], now: i64, namespaces: bool, colour: bool) -> String {
    let mut header = vec!["NAME", "STORE", "READY", "REASON", "LAST SYNC", "VERSIONS"];
    if namespaces {
        header.insert(0, "NAMESPACE");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let since = r
                .last_sync
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map_or_else(|| "-".to_string(), |t| age(now - t.as_second()));
            let mut c =
                vec![r.name.clone(), r.store.clone(), r.ready.clone(), r.reason.clone(), since, versions(&r.sources)];
            if namespaces {
                c.insert(0, r.namespace.clone());
            }
            c
        })
        .collect();
    let ready_col = usize::from(namespaces) + 2;
    let body = table(&header, &cells, |r, c, s| {
        if c == ready_col || c == ready_col + 1 { paint(s, rows[r].is_ready(), colour) } else { s.to_string() }
    });
    let mut lines = body.lines();
    let mut out = String::new();
    if let Some(h) = lines.next() {
        out.push_str(h);
        out.push('\n');
    }
    for (line, r) in lines.zip(rows) {
        out.push_str(line);
        out.push('\n');
        if !r.is_ready() {
            out.push_str(&format!("    message: {}\n", r.message));
            if let Some(fix) = &r.fix {
                out.push_str(&format!("    fix: {fix}\n"));
            }
        }
    }
    out
}

/// What `lockstep status` asks.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Args {
    /// Only this ExternalSecret.
    pub name: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// List, print to `out`, and return the exit code: [`EXIT_NOT_READY`] when any is not Ready.
pub async fn run(client: Client, namespace: &str, args: &Args, out: &mut impl std::io::Write) -> Result<u8, CliError> {
    let api: Api<ExternalSecret> = match args.all_namespaces {
        true => Api::all(client),
        false => Api::namespaced(client, namespace),
    };
    let mut list = match &args.name {
        Some(name) => match api.get_opt(name).await? {
            Some(es) => vec![es],
            None => return Err(CliError::NotFound(format!("{namespace}/{name}"))),
        },
        None => api.list(&ListParams::default()).await?.items,
    };
    list.sort_by_key(|es| (es.namespace(), es.name_any()));
    let rows: Vec<Row> = list.iter().map(row).collect();
    let text = match args.output {
        Format::Table if rows.is_empty() => {
            format!("No ExternalSecrets in {}.\n", if args.all_namespaces { "any namespace" } else { namespace })
        }
        Format::Table => render_table(&rows, jiff::Timestamp::now().as_second(), args.all_namespaces, super::colour()),
        format => serialize(&rows, format)?,
    };
    out.write_all(text.as_bytes()).map_err(|e| CliError::Output(e.to_string()))?;
    Ok(if rows.iter().all(Row::is_ready) { EXIT_OK } else { EXIT_NOT_READY })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ExternalSecretSpec, ExternalSecretStatus, SecretStoreRef};
    use crate::status::{Reason, set_ready};

    fn es(name: &str, generation: i64, outcome: Option<(Reason, &str, i64)>) -> ExternalSecret {
        let mut es = ExternalSecret::new(
            name,
            ExternalSecretSpec {
                secret_store_ref: SecretStoreRef { name: "aws".into(), ..Default::default() },
                ..Default::default()
            },
        );
        es.metadata.namespace = Some("ns".into());
        es.metadata.generation = Some(generation);
        if let Some((reason, message, observed)) = outcome {
            let at = Time(jiff::Timestamp::from_second(1_000).unwrap_or_default());
            es.status = Some(ExternalSecretStatus {
                conditions: set_ready(&[], reason, message, Some(observed), at),
                observed_generation: Some(observed),
                sources: vec![SourceStatus {
                    key: "prod/db".into(),
                    version_stage: Some("AWSCURRENT".into()),
                    version_id: "0123456789abcdef".into(),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        es
    }

    #[test]
    fn rows_for_ready_failing_and_pending() {
        let cases = [
            (es("ok", 1, Some((Reason::SecretSynced, "in sync", 1))), "True", "SecretSynced", None),
            (
                es("gone", 1, Some((Reason::SecretNotFound, "AWS secret \"x\" not found", 1))),
                "False",
                "SecretNotFound",
                Some("check `remoteRef.key` / version; restore the secret"),
            ),
            (es("moved", 2, Some((Reason::SecretSynced, "in sync", 1))), "Pending", "SecretSynced", None),
            (es("new", 1, None), "Pending", "", None),
        ];
        for (es, ready, reason, want_fix) in cases {
            let r = row(&es);
            assert_eq!(
                (r.ready.as_str(), r.reason.as_str(), r.fix.as_deref()),
                (ready, reason, want_fix),
                "{}",
                r.name
            );
        }
        let r = row(&es("moved", 2, Some((Reason::SecretSynced, "in sync", 1))));
        assert!(r.message.starts_with("generation 2 is not synced yet"), "{}", r.message);
    }

    #[test]
    fn table_with_message_and_fix_under_a_failing_row() {
        let rows = vec![
            row(&es("ok", 1, Some((Reason::SecretSynced, "in sync", 1)))),
            row(&es("denied", 1, Some((Reason::AccessDenied, "AWS denied GetSecretValue", 1)))),
        ];
        let out = render_table(&rows, 1_090, false, false);
        let want = "\
NAME    STORE  READY  REASON        LAST SYNC  VERSIONS
ok      aws    True   SecretSynced  1m         prod/db=01234567
denied  aws    False  AccessDenied  1m         prod/db=01234567
    message: AWS denied GetSecretValue
    fix: grant `secretsmanager:GetSecretValue` (and `kms:Decrypt`) to the store's identity; `dataFrom.find` also needs `secretsmanager:ListSecrets` and `secretsmanager:BatchGetSecretValue`
";
        assert_eq!(out, want);
        assert!(render_table(&rows, 1_090, true, false).starts_with("NAMESPACE  NAME"));
    }

    #[test]
    fn ages_as_kubectl_shows_them() {
        for (s, want) in [(-5, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (86_400 * 3, "3d")] {
            assert_eq!(age(s), want);
        }
    }
}
