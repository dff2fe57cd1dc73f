//! PURE: the Sprig and External Secrets functions templates may call, beside Go's builtins
//! (`index`, `printf`, `eq`, `and`, `len`, ...), which the engine provides.
//!
//! Each takes its arguments as Sprig does: a piped value comes last, so `{{ .x | filterPEM
//! "CERTIFICATE" }}` is `filterPEM "CERTIFICATE" .x`. Error messages name the function and what is
//! wrong with its input, never the input.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use gtmpl_ng::{Func, FuncError, Number, NumberKind, Value};
use sha2::Digest;

/// Every function here, by the name templates call it.
pub const FUNCS: &[(&str, Func)] = &[
    ("index", index),
    ("b64enc", b64enc),
    ("b64dec", b64dec),
    ("fromJson", from_json),
    ("toJson", to_json),
    ("fromYaml", from_yaml),
    ("toYaml", to_yaml),
    ("upper", upper),
    ("lower", lower),
    ("trim", trim),
    ("trimPrefix", trim_prefix),
    ("trimSuffix", trim_suffix),
    ("replace", replace),
    ("quote", quote),
    ("squote", squote),
    ("indent", indent),
    ("nindent", nindent),
    ("default", default),
    ("empty", empty),
    ("coalesce", coalesce),
    ("split", split),
    ("splitList", split_list),
    ("join", join),
    ("contains", contains),
    ("hasPrefix", has_prefix),
    ("hasSuffix", has_suffix),
    ("list", list),
    ("dict", dict),
    ("get", get),
    ("hasKey", has_key),
    ("keys", keys),
    ("sha256sum", sha256sum),
    ("filterPEM", filter_pem),
    ("filterCertChain", filter_cert_chain),
    ("jwkPublicKeyPem", jwk_public_key_pem),
    ("jwkPrivateKeyPem", jwk_private_key_pem),
    ("pkcs12key", pkcs12_key),
    ("pkcs12keyPass", pkcs12_key_pass),
    ("pkcs12cert", pkcs12_cert),
    ("pkcs12certPass", pkcs12_cert_pass),
    ("pemToPkcs12", pem_to_pkcs12),
    ("pemToPkcs12Pass", pem_to_pkcs12_pass),
    ("fullPemToPkcs12", full_pem_to_pkcs12),
    ("fullPemToPkcs12Pass", full_pem_to_pkcs12_pass),
];

/// Bytes from 0x80 to 0xFF that are not part of UTF-8 text travel through templates as these
/// private-use characters (a Go string holds any bytes; a Rust one holds text), and turn back into
/// the bytes on the way out.
const RAW_BYTE_BASE: u32 = 0xF700;

thread_local! {
    /// The strings functions handed back during the current render: an error message that
    /// quotes one of them would show a value.
    static PRODUCED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Forget what functions produced: before a render, and after it so no copy of a value stays behind.
pub fn forget_produced() {
    PRODUCED.with(|p| p.borrow_mut().clear());
}

/// What functions produced since [`forget_produced`].
pub fn produced() -> Vec<String> {
    PRODUCED.with(|p| p.borrow().clone())
}

/// A value's bytes as template text: UTF-8 as is, other bytes as private-use characters.
pub fn bytes_to_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        out.extend(chunk.invalid().iter().filter_map(|b| char::from_u32(RAW_BYTE_BASE + u32::from(*b))));
    }
    out
}

/// The inverse of [`bytes_to_text`].
pub fn text_to_bytes(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match u32::from(c).checked_sub(RAW_BYTE_BASE).and_then(|b| u8::try_from(b).ok()).filter(|b| *b >= 0x80) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

fn fail(msg: impl Into<String>) -> FuncError {
    FuncError::Generic(msg.into())
}

/// Records the strings in `v` (see [`PRODUCED`]) and hands it back.
fn produce(v: Value) -> Result<Value, FuncError> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Map(m) | Value::Object(m) => m.iter().for_each(|(k, i)| {
                out.push(k.clone());
                walk(i, out);
            }),
            _ => {}
        }
    }
    PRODUCED.with(|p| walk(&v, &mut p.borrow_mut()));
    Ok(v)
}

fn arity(name: &str, args: &[Value], n: usize) -> Result<(), FuncError> {
    if args.len() == n { Ok(()) } else { Err(FuncError::ExactlyXArgs(name.to_string(), n)) }
}

/// Go's `%v` of a value, as Sprig's string conversion writes it (nil is empty).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Nil | Value::NoValue => String::new(),
        other => other.to_string(),
    }
}

/// Whether `v` is Go's zero value of its type (Sprig's `empty`).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Nil | Value::NoValue => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Map(m) | Value::Object(m) => m.is_empty(),
        Value::Number(n) => match n.kind() {
            NumberKind::Unsigned(u) => u == 0,
            NumberKind::Signed(i) => i == 0,
            NumberKind::Float(f) => f == 0.0,
        },
        Value::Function(_) => false,
    }
}

fn int(name: &str, v: &Value) -> Result<i64, FuncError> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| fail(format!("{name}: the count is not an integer")))
}

/// Go's `index`, where a key a map does not hold gives the empty string: the zero value of
/// External Secrets' `map[string]string` context (Go's `missingkey=error` covers `.name`, not this).
fn index(args: &[Value]) -> Result<Value, FuncError> {
    let Some((first, keys)) = args.split_first() else {
        return Err(FuncError::AtLeastXArgs("index".to_string(), 1));
    };
    let mut current = first.clone();
    for (i, key) in keys.iter().enumerate() {
        match &current {
            Value::Map(m) | Value::Object(m) => {
                let Value::String(k) = key else { return Err(fail("index: a map's key is not a string")) };
                current = m.get(k).cloned().unwrap_or_else(|| Value::from(""));
            }
            // The engine's message would quote the collection.
            _ => {
                return gtmpl_ng::funcs::index(&[&[current.clone()], &keys[i..]].concat())
                    .map_err(|_| fail("index: the index is out of range or the value cannot be indexed by it"));
            }
        }
    }
    Ok(current)
}

fn b64enc(args: &[Value]) -> Result<Value, FuncError> {
    arity("b64enc", args, 1)?;
    produce(Value::from(base64::engine::general_purpose::STANDARD.encode(text_to_bytes(&text(&args[0])))))
}

fn b64dec(args: &[Value]) -> Result<Value, FuncError> {
    arity("b64dec", args, 1)?;
    let bytes = crate::codec::decode_base64_any(text(&args[0]).as_bytes())
        .ok_or_else(|| fail("b64dec: the input is not base64"))?;
    produce(Value::from(bytes_to_text(&bytes)))
}

fn from_json(args: &[Value]) -> Result<Value, FuncError> {
    arity("fromJson", args, 1)?;
    // The serde error is dropped: it may quote the input.
    let json: serde_json::Value =
        serde_json::from_str(&text(&args[0])).map_err(|_| fail("fromJson: the input is not JSON"))?;
    produce(from_serde(json))
}

fn to_json(args: &[Value]) -> Result<Value, FuncError> {
    arity("toJson", args, 1)?;
    let json = serde_json::to_string(&to_serde(&args[0])).map_err(|_| fail("toJson: the value cannot be JSON"))?;
    produce(Value::from(json))
}

fn from_yaml(args: &[Value]) -> Result<Value, FuncError> {
    arity("fromYaml", args, 1)?;
    let yaml: serde_json::Value =
        serde_yaml::from_str(&text(&args[0])).map_err(|_| fail("fromYaml: the input is not YAML"))?;
    produce(from_serde(yaml))
}

/// YAML as Sprig's `toYaml` writes it: no document marker, no trailing newline.
fn to_yaml(args: &[Value]) -> Result<Value, FuncError> {
    arity("toYaml", args, 1)?;
    let yaml = serde_yaml::to_string(&to_serde(&args[0])).map_err(|_| fail("toYaml: the value cannot be YAML"))?;
    produce(Value::from(yaml.trim_end_matches('\n').to_string()))
}

fn from_serde(json: serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::Number(Number::from(u)),
            (None, Some(i), _) => Value::Number(Number::from(i)),
            (None, None, f) => Value::Number(Number::from(f.unwrap_or_default())),
        },
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(a) => Value::Array(a.into_iter().map(from_serde).collect()),
        serde_json::Value::Object(o) => Value::Map(o.into_iter().map(|(k, v)| (k, from_serde(v))).collect()),
    }
}

/// Maps come out with sorted keys, as Go's encoders write them.
fn to_serde(v: &Value) -> serde_json::Value {
    match v {
        Value::Nil | Value::NoValue | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => match n.kind() {
            NumberKind::Unsigned(u) => u.into(),
            NumberKind::Signed(i) => i.into(),
            NumberKind::Float(f) => serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into),
        },
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_serde).collect()),
        Value::Map(m) | Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            serde_json::Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), to_serde(v))).collect())
        }
    }
}

fn string_fn(name: &str, args: &[Value], f: impl Fn(&str) -> String) -> Result<Value, FuncError> {
    arity(name, args, 1)?;
    produce(Value::from(f(&text(&args[0]))))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    string_fn("upper", args, str::to_uppercase)
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    string_fn("lower", args, str::to_lowercase)
}

fn trim(args: &[Value]) -> Result<Value, FuncError> {
    string_fn("trim", args, |s| s.trim().to_string())
}

fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let quoted: Vec<String> = args.iter().filter(|a| !matches!(a, Value::Nil | Value::NoValue)).map(go_quote).collect();
    produce(Value::from(quoted.join(" ")))
}

fn squote(args: &[Value]) -> Result<Value, FuncError> {
    let quoted: Vec<String> =
        args.iter().filter(|a| !matches!(a, Value::Nil | Value::NoValue)).map(|a| format!("'{}'", text(a))).collect();
    produce(Value::from(quoted.join(" ")))
}

/// Go's `%q`: a double-quoted string with Go escapes.
fn go_quote(v: &Value) -> String {
    let mut out = String::from("\"");
    for c in text(v).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn two_strings(name: &str, args: &[Value]) -> Result<(String, String), FuncError> {
    arity(name, args, 2)?;
    Ok((text(&args[0]), text(&args[1])))
}

fn trim_prefix(args: &[Value]) -> Result<Value, FuncError> {
    let (prefix, s) = two_strings("trimPrefix", args)?;
    produce(Value::from(s.strip_prefix(prefix.as_str()).unwrap_or(&s).to_string()))
}

fn trim_suffix(args: &[Value]) -> Result<Value, FuncError> {
    let (suffix, s) = two_strings("trimSuffix", args)?;
    produce(Value::from(s.strip_suffix(suffix.as_str()).unwrap_or(&s).to_string()))
}

fn contains(args: &[Value]) -> Result<Value, FuncError> {
    let (needle, s) = two_strings("contains", args)?;
    Ok(Value::Bool(s.contains(needle.as_str())))
}

fn has_prefix(args: &[Value]) -> Result<Value, FuncError> {
    let (prefix, s) = two_strings("hasPrefix", args)?;
    Ok(Value::Bool(s.starts_with(prefix.as_str())))
}

fn has_suffix(args: &[Value]) -> Result<Value, FuncError> {
    let (suffix, s) = two_strings("hasSuffix", args)?;
    Ok(Value::Bool(s.ends_with(suffix.as_str())))
}

/// `replace OLD NEW STRING`; the engine bounds how large the result may be.
fn replace(args: &[Value]) -> Result<Value, FuncError> {
    arity("replace", args, 3)?;
    let (old, new, s) = (text(&args[0]), text(&args[1]), text(&args[2]));
    if old.is_empty() {
        return Err(fail("replace: the string to replace is empty"));
    }
    let grows = new.len().saturating_sub(old.len()).saturating_mul(s.matches(old.as_str()).count());
    if s.len().saturating_add(grows) > super::MAX_VALUE {
        return Err(fail("replace: the result would be larger than a Secret can hold"));
    }
    produce(Value::from(s.replace(old.as_str(), &new)))
}

fn indent_by(name: &str, args: &[Value], newline: bool) -> Result<Value, FuncError> {
    arity(name, args, 2)?;
    let n = usize::try_from(int(name, &args[0])?).map_err(|_| fail(format!("{name}: the count is negative")))?;
    let s = text(&args[1]);
    let lines = s.matches('\n').count() + 1;
    if n.saturating_mul(lines).saturating_add(s.len()) > super::MAX_VALUE {
        return Err(fail(format!("{name}: the result would be larger than a Secret can hold")));
    }
    let pad = " ".repeat(n);
    let indented = format!("{pad}{}", s.replace('\n', &format!("\n{pad}")));
    produce(Value::from(if newline { format!("\n{indented}") } else { indented }))
}

fn indent(args: &[Value]) -> Result<Value, FuncError> {
    indent_by("indent", args, false)
}

fn nindent(args: &[Value]) -> Result<Value, FuncError> {
    indent_by("nindent", args, true)
}

/// `default FALLBACK GIVEN`: GIVEN unless it is empty (or absent).
fn default(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [fallback] => Ok(fallback.clone()),
        [fallback, given] => Ok(if is_empty(given) { fallback.clone() } else { given.clone() }),
        _ => Err(FuncError::AtLeastXArgs("default".to_string(), 1)),
    }
}

fn empty(args: &[Value]) -> Result<Value, FuncError> {
    arity("empty", args, 1)?;
    Ok(Value::Bool(is_empty(&args[0])))
}

fn coalesce(args: &[Value]) -> Result<Value, FuncError> {
    Ok(args.iter().find(|a| !is_empty(a)).cloned().unwrap_or(Value::Nil))
}

/// `split SEP STRING`: a dict of `_0`, `_1`, ... as Sprig makes it.
fn split(args: &[Value]) -> Result<Value, FuncError> {
    let (sep, s) = two_strings("split", args)?;
    let parts: HashMap<String, Value> =
        split_parts(&sep, &s).into_iter().enumerate().map(|(i, p)| (format!("_{i}"), Value::from(p))).collect();
    produce(Value::Map(parts))
}

fn split_list(args: &[Value]) -> Result<Value, FuncError> {
    let (sep, s) = two_strings("splitList", args)?;
    produce(Value::Array(split_parts(&sep, &s).into_iter().map(Value::from).collect()))
}

/// Go's `strings.Split`: an empty separator splits after each character.
fn split_parts(sep: &str, s: &str) -> Vec<String> {
    if sep.is_empty() { s.chars().map(String::from).collect() } else { s.split(sep).map(String::from).collect() }
}

/// `join SEP LIST`; a single value joins to itself.
fn join(args: &[Value]) -> Result<Value, FuncError> {
    arity("join", args, 2)?;
    let sep = text(&args[0]);
    let joined = match &args[1] {
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(&sep),
        other => text(other),
    };
    produce(Value::from(joined))
}

fn list(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Array(args.to_vec()))
}

/// `dict K1 V1 K2 V2 ...`; a key without a value maps to the empty string.
fn dict(args: &[Value]) -> Result<Value, FuncError> {
    let map: HashMap<String, Value> =
        args.chunks(2).map(|kv| (text(&kv[0]), kv.get(1).cloned().unwrap_or_else(|| Value::from("")))).collect();
    Ok(Value::Map(map))
}

fn map_arg<'a>(name: &str, v: &'a Value) -> Result<&'a HashMap<String, Value>, FuncError> {
    match v {
        Value::Map(m) | Value::Object(m) => Ok(m),
        _ => Err(fail(format!("{name}: the first argument is not a dict"))),
    }
}

/// `get DICT KEY`: the value, or the empty string.
fn get(args: &[Value]) -> Result<Value, FuncError> {
    arity("get", args, 2)?;
    Ok(map_arg("get", &args[0])?.get(&text(&args[1])).cloned().unwrap_or_else(|| Value::from("")))
}

fn has_key(args: &[Value]) -> Result<Value, FuncError> {
    arity("hasKey", args, 2)?;
    Ok(Value::Bool(map_arg("hasKey", &args[0])?.contains_key(&text(&args[1]))))
}

/// The keys of one or more dicts, sorted (Sprig leaves their order to chance).
fn keys(args: &[Value]) -> Result<Value, FuncError> {
    let mut all = Vec::new();
    for a in args {
        all.extend(map_arg("keys", a)?.keys().cloned());
    }
    all.sort();
    produce(Value::Array(all.into_iter().map(Value::from).collect()))
}

fn sha256sum(args: &[Value]) -> Result<Value, FuncError> {
    arity("sha256sum", args, 1)?;
    produce(Value::from(hex::encode(sha2::Sha256::digest(text_to_bytes(&text(&args[0]))))))
}

/// `filterPEM TYPE INPUT`: the PEM blocks of one type (`CERTIFICATE`, `PRIVATE KEY`, ...), each
/// ending in a newline; an error when there is none.
fn filter_pem(args: &[Value]) -> Result<Value, FuncError> {
    let (kind, s) = two_strings("filterPEM", args)?;
    let blocks: String =
        pem_blocks(&s).into_iter().filter(|(label, _)| *label == kind).map(|(_, block)| format!("{block}\n")).collect();
    if blocks.is_empty() {
        return Err(fail(format!("filterPEM: no {kind} block in the input")));
    }
    produce(Value::from(blocks))
}

/// `filterCertChain KIND S` with KIND `leaf`, `intermediate` or `root`: the certificates of a PEM
/// chain of that kind, each a PEM block ending in a newline; none is an error. A root is a CA whose
/// subject is its issuer, an intermediate any other CA, a leaf a certificate that is not a CA
/// (basicConstraints); signatures are not checked.
fn filter_cert_chain(args: &[Value]) -> Result<Value, FuncError> {
    let (kind, s) = two_strings("filterCertChain", args)?;
    let wanted = match kind.as_str() {
        "leaf" => CertKind::Leaf,
        "intermediate" => CertKind::Intermediate,
        "root" => CertKind::Root,
        _ => return Err(fail("filterCertChain: the kind is leaf, intermediate or root")),
    };
    let mut out = String::new();
    for (_, block) in pem_blocks(&s).into_iter().filter(|(label, _)| *label == "CERTIFICATE") {
        let found = pem_body(block)
            .as_deref()
            .and_then(cert_kind)
            .ok_or_else(|| fail("filterCertChain: a CERTIFICATE block is not an X.509 certificate"))?;
        if found == wanted {
            out.push_str(block);
            out.push('\n');
        }
    }
    if out.is_empty() {
        return Err(fail(format!("filterCertChain: no {kind} certificate in the input")));
    }
    produce(Value::from(out))
}

#[derive(Debug, PartialEq)]
enum CertKind {
    Leaf,
    Intermediate,
    Root,
}

/// The DER inside a PEM block (header lines such as `Proc-Type:` skipped).
pub(super) fn pem_body(block: &str) -> Option<Vec<u8>> {
    let lines: String = block.lines().filter(|l| !l.starts_with("-----") && !l.contains(':')).map(str::trim).collect();
    base64::engine::general_purpose::STANDARD.decode(lines).ok()
}

/// One DER element: (tag, contents, what follows).
pub(super) fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Every element of a DER SEQUENCE's contents.
fn der_items(mut contents: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut items = Vec::new();
    while !contents.is_empty() {
        let (tag, value, rest) = der(contents)?;
        items.push((tag, value));
        contents = rest;
    }
    Some(items)
}

/// What [`cert_kind`] and the PKCS#12 functions read of a certificate.
pub(super) struct CertFields<'a> {
    pub issuer: &'a [u8],
    pub subject: &'a [u8],
    /// subjectPublicKeyInfo's contents.
    pub public_key: &'a [u8],
    /// (OID contents, extnValue contents) of each extension.
    pub extensions: Vec<(&'a [u8], &'a [u8])>,
}

/// A certificate's issuer, subject and extensions (`None`: not an X.509 certificate).
pub(super) fn cert_fields(cert: &[u8]) -> Option<CertFields<'_>> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, cert, _) = der(cert)? else { return None };
    let (SEQUENCE, tbs, _) = der(cert)? else { return None };
    let mut fields = der_items(tbs)?;
    if fields.first().is_some_and(|(tag, _)| *tag == 0xa0) {
        fields.remove(0);
    }
    // serial, signature, issuer, validity, subject, subjectPublicKeyInfo, then optional fields.
    if fields.len() < 6 || fields[1..6].iter().any(|(tag, _)| *tag != SEQUENCE) {
        return None;
    }
    let (issuer, subject, public_key) = (fields[2].1, fields[4].1, fields[5].1);
    let mut extensions = Vec::new();
    if let Some((_, list)) = fields.iter().skip(6).find(|(tag, _)| *tag == 0xa3) {
        let (SEQUENCE, list, _) = der(list)? else { return None };
        for (_, ext) in der_items(list)? {
            let parts = der_items(ext)?;
            match (parts.first(), parts.last()) {
                (Some((0x06, oid)), Some((0x04, value))) => extensions.push((*oid, *value)),
                _ => return None,
            }
        }
    }
    Some(CertFields { issuer, subject, public_key, extensions })
}

/// Reads a certificate's issuer, subject and basicConstraints' cA.
fn cert_kind(cert: &[u8]) -> Option<CertKind> {
    const SEQUENCE: u8 = 0x30;
    const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    let fields = cert_fields(cert)?;
    let mut is_ca = false;
    for (oid, value) in &fields.extensions {
        if *oid == BASIC_CONSTRAINTS {
            let (SEQUENCE, constraints, _) = der(value)? else { return None };
            is_ca = der_items(constraints)?.first().is_some_and(|(tag, v)| *tag == 0x01 && v.iter().any(|b| *b != 0));
        }
    }
    Some(match (is_ca, fields.issuer == fields.subject) {
        (false, _) => CertKind::Leaf,
        (true, true) => CertKind::Root,
        (true, false) => CertKind::Intermediate,
    })
}

/// `jwkPublicKeyPem JWK`: the public key of a JSON Web Key (RSA, EC P-256/384/521, Ed25519;
/// private or public) as a `PUBLIC KEY` PEM block (PKIX, as Go's `x509.MarshalPKIXPublicKey`).
fn jwk_public_key_pem(args: &[Value]) -> Result<Value, FuncError> {
    arity("jwkPublicKeyPem", args, 1)?;
    let jwk = Jwk::parse("jwkPublicKeyPem", &text(&args[0]))?;
    let spki = match jwk.kty.as_str() {
        "RSA" => {
            let key = der_seq(&[der_uint(&jwk.part("n")?), der_uint(&jwk.part("e")?)]);
            der_seq(&[der_seq(&[RSA_ENCRYPTION.to_vec(), DER_NULL.to_vec()]), der_bits(&key)])
        }
        "EC" => der_seq(&[der_seq(&[EC_PUBLIC_KEY.to_vec(), jwk.curve()?.to_vec()]), der_bits(&jwk.ec_point()?)]),
        "OKP" => {
            jwk.ed25519()?;
            der_seq(&[der_seq(&[ED25519.to_vec()]), der_bits(&jwk.part("x")?)])
        }
        _ => return Err(jwk.unsupported()),
    };
    produce(Value::from(pem_encode("PUBLIC KEY", &spki)))
}

/// `jwkPrivateKeyPem JWK`: the private key of a JSON Web Key as a `PRIVATE KEY` PEM block (PKCS#8,
/// as Go's `x509.MarshalPKCS8PrivateKey`); a public JWK is an error.
fn jwk_private_key_pem(args: &[Value]) -> Result<Value, FuncError> {
    arity("jwkPrivateKeyPem", args, 1)?;
    let jwk = Jwk::parse("jwkPrivateKeyPem", &text(&args[0]))?;
    let version = der_uint(&[0]);
    let pkcs8 = match jwk.kty.as_str() {
        "RSA" => {
            let mut fields = vec![der_uint(&[0])];
            for name in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
                fields.push(der_uint(&jwk.part(name)?));
            }
            let algorithm = der_seq(&[RSA_ENCRYPTION.to_vec(), DER_NULL.to_vec()]);
            der_seq(&[version, algorithm, der_tlv(0x04, &der_seq(&fields))])
        }
        "EC" => {
            let key =
                der_seq(&[der_uint(&[1]), der_tlv(0x04, &jwk.part("d")?), der_tlv(0xa1, &der_bits(&jwk.ec_point()?))]);
            let algorithm = der_seq(&[EC_PUBLIC_KEY.to_vec(), jwk.curve()?.to_vec()]);
            der_seq(&[version, algorithm, der_tlv(0x04, &key)])
        }
        "OKP" => {
            jwk.ed25519()?;
            der_seq(&[version, der_seq(&[ED25519.to_vec()]), der_tlv(0x04, &der_tlv(0x04, &jwk.part("d")?))])
        }
        _ => return Err(jwk.unsupported()),
    };
    produce(Value::from(pem_encode("PRIVATE KEY", &pkcs8)))
}

/// The PKCS#12 file (its bytes) of `pkcs12key INPUT` / `pkcs12keyPass PASS INPUT` and the cert
/// forms, decoded with the password (empty without one).
fn pkcs12_input(name: &str, args: &[Value], with_password: bool) -> Result<super::pkcs12::Pfx, FuncError> {
    let (password, input) = if with_password {
        let (password, input) = two_strings(name, args)?;
        (go_string(&password), input)
    } else {
        arity(name, args, 1)?;
        (String::new(), text(&args[0]))
    };
    super::pkcs12::decode(&text_to_bytes(&input), &password).map_err(|e| fail(format!("{name}: {e}")))
}

/// A template string as Go's string of the same bytes reads as text (a byte that is not UTF-8 is
/// U+FFFD): how go-pkcs12 turns a password into UTF-16.
fn go_string(s: &str) -> String {
    String::from_utf8_lossy(&text_to_bytes(s)).into_owned()
}

fn pkcs12_key_of(name: &str, args: &[Value], with_password: bool) -> Result<Value, FuncError> {
    let pfx = pkcs12_input(name, args, with_password)?;
    produce(Value::from(pem_encode("PRIVATE KEY", &pfx.key)))
}

/// `pkcs12key INPUT`: the private key of a PKCS#12 file without a password as a PKCS#8 `PRIVATE
/// KEY` PEM block.
fn pkcs12_key(args: &[Value]) -> Result<Value, FuncError> {
    pkcs12_key_of("pkcs12key", args, false)
}

/// `pkcs12keyPass PASS INPUT`: the same for a file with a password.
fn pkcs12_key_pass(args: &[Value]) -> Result<Value, FuncError> {
    pkcs12_key_of("pkcs12keyPass", args, true)
}

/// The certificates as External Secrets gives them: `CERTIFICATE` blocks in the order
/// [`super::pkcs12::eso_chain_order`] finds (from the one no other certificate names as its issuer,
/// up), or else as the file has them (the first, the leaf, then the others).
fn pkcs12_cert_of(name: &str, args: &[Value], with_password: bool) -> Result<Value, FuncError> {
    let pfx = pkcs12_input(name, args, with_password)?;
    let order = super::pkcs12::eso_chain_order(&pfx.certs).unwrap_or_else(|| (0..pfx.certs.len()).collect());
    let pem: String =
        order.into_iter().filter_map(|i| pfx.certs.get(i)).map(|c| pem_encode("CERTIFICATE", c)).collect();
    produce(Value::from(pem))
}

/// `pkcs12cert INPUT`: the certificates of a PKCS#12 file without a password.
fn pkcs12_cert(args: &[Value]) -> Result<Value, FuncError> {
    pkcs12_cert_of("pkcs12cert", args, false)
}

/// `pkcs12certPass PASS INPUT`: the same for a file with a password.
fn pkcs12_cert_pass(args: &[Value]) -> Result<Value, FuncError> {
    pkcs12_cert_of("pkcs12certPass", args, true)
}

/// `pemToPkcs12 CERT KEY` and its forms: a PKCS#12 file, base64 (as External Secrets gives it; `|
/// b64dec` for the file's bytes), of the first PEM block of CERT (and with `full` the certificates
/// after it, as the chain) and the first PEM block of KEY (PKCS#1, PKCS#8 or SEC 1). The same
/// inputs give the same file.
fn pem_to_pkcs12_of(name: &str, args: &[Value], full: bool, with_password: bool) -> Result<Value, FuncError> {
    arity(name, args, if with_password { 3 } else { 2 })?;
    let (cert, key) = (text(&args[0]), text(&args[1]));
    let password = args.get(2).map(|p| go_string(&text(p))).unwrap_or_default();
    let blocks: Vec<Vec<u8>> = pem_blocks(&cert).into_iter().filter_map(|(_, b)| pem_body(b)).collect();
    let Some(leaf) = blocks.first() else {
        return Err(fail(format!("{name}: the certificate is not PEM")));
    };
    let certs = if full { blocks.as_slice() } else { &blocks[..1] };
    if let Some(i) = certs.iter().position(|c| !super::pkcs12::is_certificate(c)) {
        let which = if i == 0 { "the certificate".to_string() } else { format!("certificate {} of the chain", i) };
        return Err(fail(format!("{name}: {which} is not an X.509 certificate")));
    }
    let key_der = pem_blocks(&key)
        .first()
        .and_then(|(_, b)| pem_body(b))
        .ok_or_else(|| fail(format!("{name}: the private key is not PEM")))?;
    let pkcs8 = super::pkcs12::private_key_pkcs8(&key_der, leaf).map_err(|e| fail(format!("{name}: {e}")))?;
    let pfx = super::pkcs12::encode(&pkcs8, certs, &password).map_err(|e| fail(format!("{name}: {e}")))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(pfx);
    if b64.len() > super::MAX_VALUE {
        return Err(fail(format!("{name}: the result would be larger than a Secret can hold")));
    }
    produce(Value::from(b64))
}

fn pem_to_pkcs12(args: &[Value]) -> Result<Value, FuncError> {
    pem_to_pkcs12_of("pemToPkcs12", args, false, false)
}

/// `pemToPkcs12Pass CERT KEY PASS`.
fn pem_to_pkcs12_pass(args: &[Value]) -> Result<Value, FuncError> {
    pem_to_pkcs12_of("pemToPkcs12Pass", args, false, true)
}

/// `fullPemToPkcs12 CERT KEY`: CERT's further certificates go in as the chain.
fn full_pem_to_pkcs12(args: &[Value]) -> Result<Value, FuncError> {
    pem_to_pkcs12_of("fullPemToPkcs12", args, true, false)
}

/// `fullPemToPkcs12Pass CERT KEY PASS`.
fn full_pem_to_pkcs12_pass(args: &[Value]) -> Result<Value, FuncError> {
    pem_to_pkcs12_of("fullPemToPkcs12Pass", args, true, true)
}

/// OIDs and NULL, DER-encoded whole.
pub(super) const RSA_ENCRYPTION: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
pub(super) const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub(super) const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub(super) const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
pub(super) const P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
pub(super) const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const DER_NULL: &[u8] = &[0x05, 0x00];

/// A JSON Web Key's members, read by name; errors name the function and the member.
struct Jwk {
    function: &'static str,
    kty: String,
    members: serde_json::Map<String, serde_json::Value>,
}

impl Jwk {
    fn parse(function: &'static str, s: &str) -> Result<Jwk, FuncError> {
        let Ok(serde_json::Value::Object(members)) = serde_json::from_str(s) else {
            return Err(fail(format!("{function}: the input is not a JSON Web Key (a JSON object)")));
        };
        let kty = members.get("kty").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        Ok(Jwk { function, kty, members })
    }

    /// A base64url member's bytes.
    fn part(&self, name: &str) -> Result<Vec<u8>, FuncError> {
        self.members
            .get(name)
            .and_then(|v| v.as_str())
            .and_then(|v| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
            .ok_or_else(|| fail(format!("{}: the {} key has no base64url member {name:?}", self.function, self.kty)))
    }

    fn crv(&self) -> &str {
        self.members.get("crv").and_then(|v| v.as_str()).unwrap_or_default()
    }

    fn curve(&self) -> Result<&'static [u8], FuncError> {
        match self.crv() {
            "P-256" => Ok(P256),
            "P-384" => Ok(P384),
            "P-521" => Ok(P521),
            _ => Err(self.unsupported()),
        }
    }

    /// The uncompressed point 04 || x || y.
    fn ec_point(&self) -> Result<Vec<u8>, FuncError> {
        Ok([vec![0x04], self.part("x")?, self.part("y")?].concat())
    }

    fn ed25519(&self) -> Result<(), FuncError> {
        if self.crv() == "Ed25519" { Ok(()) } else { Err(self.unsupported()) }
    }

    fn unsupported(&self) -> FuncError {
        let (kty, crv) = (&self.kty, self.crv());
        fail(format!("{}: kty {kty:?} crv {crv:?} is not RSA, EC P-256/P-384/P-521 or OKP Ed25519", self.function))
    }
}

pub(super) fn der_tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(contents);
    out
}

pub(super) fn der_seq(items: &[Vec<u8>]) -> Vec<u8> {
    der_tlv(0x30, &items.concat())
}

/// An INTEGER from a big-endian unsigned magnitude.
pub(super) fn der_uint(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = magnitude.iter().copied().skip_while(|b| *b == 0).collect();
    let body = match trimmed.first() {
        None => vec![0],
        Some(b) if *b >= 0x80 => [vec![0], trimmed].concat(),
        Some(_) => trimmed,
    };
    der_tlv(0x02, &body)
}

/// A BIT STRING of whole bytes.
fn der_bits(bytes: &[u8]) -> Vec<u8> {
    der_tlv(0x03, &[&[0u8][..], bytes].concat())
}

/// A PEM block as Go's `pem.EncodeToMemory` writes it: 64-character lines, ending in a newline.
pub(super) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// (label, whole block from BEGIN to END line) for each well-formed PEM block.
pub(super) fn pem_blocks(s: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else { break };
        let label = &after[..label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else { break };
        let stop = start + end + end_marker.len();
        out.push((label, &rest[start..stop]));
        rest = &rest[stop..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    fn call(name: &str, args: &[Value]) -> Result<Value, String> {
        let f = FUNCS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).ok_or("no such function")?;
        f(args).map_err(|e| e.to_string())
    }

    fn ok_text(name: &str, args: &[Value]) -> String {
        match call(name, args) {
            Ok(v) => text(&v),
            Err(e) => panic!("{name}: {e}"),
        }
    }

    const BUNDLE: &str = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\njunk\n-----BEGIN PRIVATE KEY-----\nKKK\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";

    #[test]
    fn functions_return_what_sprig_does() {
        let map = Value::Map([("b".to_string(), s("2")), ("a".to_string(), s("1"))].into());
        let nested = Value::Map([("m".to_string(), map.clone()), ("l".to_string(), Value::Array(vec![s("x")]))].into());
        let cases: &[(&str, Vec<Value>, &str)] = &[
            ("index", vec![map.clone(), s("a")], "1"),
            ("index", vec![map.clone(), s("missing")], ""),
            ("index", vec![nested.clone(), s("m"), s("b")], "2"),
            ("index", vec![nested.clone(), s("l"), Value::from(0i64)], "x"),
            ("b64enc", vec![s("u:p")], "dTpw"),
            ("b64dec", vec![s("aGVsbG8")], "hello"),
            ("b64dec", vec![s("aGVsbG8=")], "hello"),
            ("toJson", vec![map.clone()], r#"{"a":"1","b":"2"}"#),
            ("toYaml", vec![map.clone()], "a: '1'\nb: '2'"),
            ("upper", vec![s("abc")], "ABC"),
            ("lower", vec![s("ABC")], "abc"),
            ("trim", vec![s("  a b \n")], "a b"),
            ("trimPrefix", vec![s("pre-"), s("pre-x")], "x"),
            ("trimPrefix", vec![s("no"), s("pre-x")], "pre-x"),
            ("trimSuffix", vec![s(".com"), s("a.com")], "a"),
            ("replace", vec![s("-"), s("_"), s("a-b-c")], "a_b_c"),
            ("quote", vec![s("a\"b"), s("c")], r#""a\"b" "c""#),
            ("squote", vec![s("a")], "'a'"),
            ("indent", vec![Value::from(2i64), s("a\nb")], "  a\n  b"),
            ("nindent", vec![Value::from(2i64), s("a")], "\n  a"),
            ("default", vec![s("d"), s("")], "d"),
            ("default", vec![s("d"), s("given")], "given"),
            ("default", vec![s("d")], "d"),
            ("empty", vec![s("")], "true"),
            ("empty", vec![Value::from(0i64)], "true"),
            ("empty", vec![s("x")], "false"),
            ("coalesce", vec![s(""), Value::Nil, s("c"), s("d")], "c"),
            ("splitList", vec![s(","), s("a,b")], "[a b]"),
            ("join", vec![s(","), Value::Array(vec![s("a"), Value::from(1i64)])], "a,1"),
            ("contains", vec![s("ell"), s("hello")], "true"),
            ("hasPrefix", vec![s("he"), s("hello")], "true"),
            ("hasSuffix", vec![s("he"), s("hello")], "false"),
            ("list", vec![s("a"), s("b")], "[a b]"),
            ("get", vec![map.clone(), s("a")], "1"),
            ("get", vec![map.clone(), s("zz")], ""),
            ("hasKey", vec![map.clone(), s("b")], "true"),
            ("keys", vec![map.clone()], "[a b]"),
            ("sha256sum", vec![s("abc")], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (
                "filterPEM",
                vec![s("CERTIFICATE"), s(BUNDLE)],
                "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n",
            ),
            (
                "filterPEM",
                vec![s("PRIVATE KEY"), s(BUNDLE)],
                "-----BEGIN PRIVATE KEY-----\nKKK\n-----END PRIVATE KEY-----\n",
            ),
        ];
        for (name, args, want) in cases {
            assert_eq!(ok_text(name, args), *want, "{name} {args:?}");
        }
        let parsed = call("fromJson", &[s(r#"{"a":{"b":[1,"x",true,null]}}"#)]).unwrap_or(Value::Nil);
        assert_eq!(ok_text("toJson", &[parsed]), r#"{"a":{"b":[1,"x",true,null]}}"#);
        let parsed = call("fromYaml", &[s("a:\n  b: 1\n")]).unwrap_or(Value::Nil);
        assert_eq!(ok_text("toJson", &[parsed]), r#"{"a":{"b":1}}"#);
        let parts = call("split", &[s("$"), s("a$b")]).unwrap_or(Value::Nil);
        assert_eq!(ok_text("toJson", &[parts]), r#"{"_0":"a","_1":"b"}"#);
        let d = call("dict", &[s("k"), s("v"), s("lone")]).unwrap_or(Value::Nil);
        assert_eq!(ok_text("toJson", &[d]), r#"{"k":"v","lone":""}"#);
    }

    #[test]
    fn functions_refuse_bad_input_without_quoting_it() {
        let cases: &[(&str, Vec<Value>, &str)] = &[
            ("b64dec", vec![s("SECRET!!")], "not base64"),
            ("fromJson", vec![s("SECRET")], "not JSON"),
            ("fromYaml", vec![s("SECRET: [")], "not YAML"),
            ("replace", vec![s(""), s("x"), s("SECRET")], "empty"),
            ("indent", vec![s("SECRET"), s("x")], "not an integer"),
            ("indent", vec![Value::from(-1i64), s("SECRET")], "negative"),
            ("indent", vec![Value::from(2_000_000i64), s("SECRET")], "larger than"),
            ("get", vec![s("SECRET"), s("k")], "not a dict"),
            ("filterPEM", vec![s("CERTIFICATE"), s("SECRET")], "no CERTIFICATE block"),
            ("upper", vec![], "exactly 1"),
            ("index", vec![Value::Array(vec![s("SECRET")]), Value::from(5i64)], "out of range"),
        ];
        for (name, args, want) in cases {
            let e = call(name, args).err().unwrap_or_default();
            assert!(e.contains(want) && !e.contains("SECRET"), "{name}: {e}");
        }
    }

    #[test]
    fn cert_chains_split_by_kind() {
        let chain = include_str!("testdata/chain.pem");
        let blocks: Vec<String> = pem_blocks(chain).into_iter().map(|(_, b)| format!("{b}\n")).collect();
        for (kind, want) in [("leaf", &blocks[0]), ("intermediate", &blocks[1]), ("root", &blocks[2])] {
            assert_eq!(&ok_text("filterCertChain", &[s(kind), s(chain)]), want, "{kind}");
        }
        let leaf_only = blocks[0].clone();
        for (args, want) in [
            (vec![s("root"), s(&leaf_only)], "no root certificate"),
            (vec![s("other"), s(chain)], "leaf, intermediate or root"),
            (vec![s("leaf"), s("-----BEGIN CERTIFICATE-----\nU0VDUkVU\n-----END CERTIFICATE-----\n")], "not an X.509"),
        ] {
            let e = call("filterCertChain", &args).err().unwrap_or_default();
            assert!(e.contains(want) && !e.contains("SECRET") && !e.contains("U0VD"), "{e}");
        }
        assert_eq!(der(&[0x30, 0x85, 1, 1, 1, 1, 1]), None, "lengths past 4 bytes are refused");
        assert_eq!(der(&[0x30, 0x05, 1]), None, "a length past the input is refused");
    }

    #[test]
    fn jwks_become_the_pem_go_writes() {
        let fixtures = [
            (
                include_str!("testdata/rsa.jwk.json"),
                include_str!("testdata/rsa.pub.pem"),
                include_str!("testdata/rsa.key.pem"),
            ),
            (
                include_str!("testdata/ec.jwk.json"),
                include_str!("testdata/ec.pub.pem"),
                include_str!("testdata/ec.key.pem"),
            ),
            (
                include_str!("testdata/ed.jwk.json"),
                include_str!("testdata/ed.pub.pem"),
                include_str!("testdata/ed.key.pem"),
            ),
        ];
        for (jwk, public, private) in fixtures {
            assert_eq!(ok_text("jwkPublicKeyPem", &[s(jwk)]), public, "{jwk}");
            assert_eq!(ok_text("jwkPrivateKeyPem", &[s(jwk)]), private, "{jwk}");
        }
        let public_only = r#"{"kty":"EC","crv":"P-256","x":"AQ","y":"Ag"}"#;
        for (name, jwk, want) in [
            ("jwkPrivateKeyPem", public_only, "no base64url member \"d\""),
            ("jwkPublicKeyPem", r#"{"kty":"EC","crv":"P-999","x":"AQ","y":"Ag"}"#, "crv \"P-999\" is not"),
            ("jwkPublicKeyPem", r#"{"kty":"oct","k":"U0VDUkVU"}"#, "kty \"oct\""),
            ("jwkPublicKeyPem", "SECRET", "not a JSON Web Key"),
        ] {
            let e = call(name, &[s(jwk)]).err().unwrap_or_default();
            assert!(e.contains(want) && !e.contains("SECRET") && !e.contains("U0VD"), "{name}: {e}");
        }
        assert_eq!(der_uint(&[0, 0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der_tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
    }

    #[test]
    fn bytes_that_are_not_text_round_trip() {
        let raw = [b'a', 0xff, 0x80, b'z', 0xc3];
        let t = bytes_to_text(&raw);
        assert_eq!(text_to_bytes(&t), raw);
        assert_eq!(text_to_bytes("plain é"), "plain é".as_bytes());
        assert_eq!(ok_text("b64enc", &[Value::from(t)]), "Yf+AesM=");
        assert_eq!(text_to_bytes(&ok_text("b64dec", &[s("Yf+AesM=")])), raw);
    }
}
