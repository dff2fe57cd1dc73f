//! The HTTP client of the rig (moto's own API, the operator's admin server) and a reader of the
//! Prometheus text the operator exposes.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// An HTTP answer: its status code and its body (de-chunked).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// The body of a 2xx answer, an error that shows the answer otherwise.
    pub fn success(self) -> anyhow::Result<String> {
        if !(200..300).contains(&self.status) {
            bail!("HTTP {}: {}", self.status, self.body);
        }
        Ok(self.body)
    }
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`: the answer ends at EOF).
/// `addr` is `127.x.x.x:port` or `http://127.x.x.x:port`; any other address is refused.
pub fn request(addr: &str, method: &str, path: &str, body: &str) -> anyhow::Result<Response> {
    request_with(addr, method, path, &[("Content-Type", "text/plain")], body)
}

/// [`request`] with these headers (besides Host, Content-Length and Connection).
pub fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<Response> {
    let host = addr.trim_start_matches("http://").trim_end_matches('/');
    if !host.starts_with("127.") {
        bail!("refusing a non-loopback address: {host}");
    }
    let mut s = TcpStream::connect(host).with_context(|| format!("{method} {host}{path}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).with_context(|| format!("{method} {host}{path}"))?;
    let (head, rest) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("{method} {host}{path}: no status line in {head:?}"))?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok(Response { status, body: if chunked { dechunk(rest) } else { rest.to_string() } })
}

/// A GET of `path` from `addr` (see [`request`]).
pub fn get(addr: &str, path: &str) -> anyhow::Result<Response> {
    request(addr, "GET", path, "")
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One line of a Prometheus text exposition: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A Prometheus (or OpenMetrics) text exposition: the text as served, and its samples.
#[derive(Clone, Debug)]
pub struct Metrics {
    text: String,
    samples: Vec<Sample>,
}

impl Metrics {
    /// Read every sample line; comments, blank lines and lines that do not parse are passed over.
    pub fn parse(text: impl Into<String>) -> Metrics {
        let text = text.into();
        let samples = text.lines().filter_map(parse_sample).collect();
        Metrics { text, samples }
    }

    /// The exposition as served.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The samples of `name` that carry every one of `labels` (and maybe others).
    pub fn samples<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
        })
    }

    /// The value of the first sample of `name` that carries every one of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name, labels).next().map(|s| s.value)
    }

    /// The sum of the samples of `name` that carry every one of `labels` (0 when there is none:
    /// +0.0, where `Iterator::sum` of no f64 is -0.0, which a table printed as "-0").
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).fold(0.0, |total, s| total + s.value)
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name: name.to_string(), labels, value })
}

/// `k="v",k2="v2"}` (quotes escaped as `\"`, `\\` and `\n`): the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        s = &rest[end + 1..];
    }
}
