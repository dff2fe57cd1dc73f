//! The `lockstep` subcommands for people: `status`, `refresh` and `template`. Each is a pure
//! part (rows, selection, rendering: table-tested) and a thin IO part (the cluster API, files).
//!
//! Exit codes a script can use: [`EXIT_OK`], [`EXIT_FAILED`], clap's 2 for a usage error, and
//! [`EXIT_NOT_READY`] when the command ran and the answer is "no".

pub mod refresh;
pub mod status;
pub mod template;

use std::io::IsTerminal;
use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Everything asked is done (status: every ExternalSecret shown is Ready).
pub const EXIT_OK: u8 = 0;
/// The command could not do its job (cluster unreachable, denied, unreadable input).
pub const EXIT_FAILED: u8 = 1;
/// It ran, and the answer is no: an ExternalSecret is not Ready (status), nothing matched
/// (refresh), the spec does not render (template).
pub const EXIT_NOT_READY: u8 = 3;

/// Field manager of the CLI's writes (the refresh annotation).
pub const FIELD_MANAGER: &str = "lockstep-cli";

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot load the kubeconfig: {0}")]
    Config(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("ExternalSecret {0} not found")]
    NotFound(String),
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Input(String),
    #[error("cannot write the output: {0}")]
    Output(String),
}

impl CliError {
    /// The exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        EXIT_FAILED
    }
}

/// Output format of a command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Yaml,
    Json,
}

/// How to reach the cluster, as kubectl does: `--kubeconfig` (else `$KUBECONFIG`, else
/// `~/.kube/config`, else in-cluster), `--context`, and the context's namespace unless `-n`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Cluster {
    /// Path to the kubeconfig file.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace [default: the context's].
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

impl Cluster {
    /// A client and the namespace to work in.
    pub async fn connect(&self) -> Result<(Client, String), CliError> {
        let options = KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| CliError::Config(e.to_string()))?;
                Config::from_custom_kubeconfig(kc, &options).await.map_err(|e| CliError::Config(e.to_string()))?
            }
            None if self.context.is_some() => {
                Config::from_kubeconfig(&options).await.map_err(|e| CliError::Config(e.to_string()))?
            }
            None => Config::infer().await.map_err(|e| CliError::Config(e.to_string()))?,
        };
        let namespace = self.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(crate::with_user_agent(config))?;
        Ok((client, namespace))
    }
}

/// Whether to colour what goes to stdout: only on a terminal, and not under `NO_COLOR`.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` in green (`good`) or red, when `on`.
pub(crate) fn paint(text: &str, good: bool, on: bool) -> String {
    match (on, good) {
        (false, _) => text.to_string(),
        (true, true) => format!("\x1b[32m{text}\x1b[0m"),
        (true, false) => format!("\x1b[31m{text}\x1b[0m"),
    }
}

/// `rows` as columns padded to their widest cell (two spaces between), `header` first. `paint`
/// colours a cell after padding (so colour codes do not count as width).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>], paint: impl Fn(usize, usize, &str) -> String) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<(String, usize)>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (shown, width)) in cells.into_iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(&shown);
            if i < last {
                s.push_str(&" ".repeat(widths.get(i).copied().unwrap_or(0).saturating_sub(width)));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| (h.to_string(), h.len())).collect());
    for (r, row) in rows.iter().enumerate() {
        out.push_str(&line(
            row.iter().enumerate().map(|(c, cell)| (paint(r, c, cell), cell.chars().count())).collect(),
        ));
    }
    out
}

/// `value` as YAML or JSON (with a trailing newline).
pub(crate) fn serialize(value: &impl serde::Serialize, format: Format) -> Result<String, CliError> {
    match format {
        Format::Json => {
            serde_json::to_string_pretty(value).map(|s| s + "\n").map_err(|e| CliError::Output(e.to_string()))
        }
        _ => serde_yaml::to_string(value).map_err(|e| CliError::Output(e.to_string())),
    }
}

/// What to do about a Ready reason (the README's troubleshooting table, "what to do").
pub fn fix(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "SecretNotFound" => "check `remoteRef.key` / version; restore the secret",
        "PropertyNotFound" => "check `remoteRef.property`",
        "InvalidValue" => "remove `property`, fix the value, set `conversionStrategy: Unicode`, fix the regexp",
        "KeyConflict" => "change the `rewrite` rules or narrow `find`",
        "AccessDenied" => {
            "grant `secretsmanager:GetSecretValue` (and `kms:Decrypt`) to the store's identity; `dataFrom.find` also needs `secretsmanager:ListSecrets` and `secretsmanager:BatchGetSecretValue`"
        }
        "Throttled" => "nothing, or raise `refreshInterval`",
        "ProviderUnavailable" => "check `endpoint`, network",
        "StoreNotReady" => "create it / fix `auth.secretRef`",
        "StoreNotAllowed" => "add the namespace to its conditions",
        "TargetConflict" => "rename `target.name`, use `Merge`, or delete the Secret",
        "TargetTooLarge" => "split it",
        "InvalidTemplate" => "fix the template at that line; add the key the type needs",
        "ApplyFailed" => "read the message",
        "NamespacesFailed" => {
            "read `status.failedNamespaces`: delete or rename the ExternalSecret in the way, or set `spec.externalSecretName`"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixes are the README's troubleshooting table, word for word.
    #[test]
    fn every_failure_reason_has_the_readmes_fix() {
        let readme = include_str!("../../README.md");
        let section = readme.split("## Troubleshooting: Ready condition reasons").nth(1).unwrap_or_default();
        for reason in crate::status::Reason::ALL {
            let row = section.lines().find(|l| l.starts_with(&format!("| `{}` |", reason.as_str())));
            let row = row.unwrap_or_else(|| panic!("README has no row for {reason}"));
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            let want = cells.get(2).copied().filter(|c| !c.is_empty());
            assert_eq!(fix(reason.as_str()), want, "{reason}");
        }
    }

    #[test]
    fn a_table_pads_plain_text_and_paints_after() {
        let rows = vec![vec!["a".to_string(), "True".to_string(), "x".to_string()]];
        let out =
            table(&["NAME", "READY", "REASON"], &rows, |_, c, s| if c == 1 { paint(s, true, true) } else { s.into() });
        assert_eq!(out, "NAME  READY  REASON\na     \x1b[32mTrue\x1b[0m   x\n");
        let plain =
            table(&["NAME", "READY"], &rows[..1].iter().map(|r| r[..2].to_vec()).collect::<Vec<_>>(), |_, _, s| {
                s.into()
            });
        assert_eq!(plain, "NAME  READY\na     True\n");
    }
}
