//! Property tests of the parsers and renderers that read user input: the property-path parser and
//! lookup, the raw JSON reader (`json_path`), and the template renderer. `make test` runs the default 256 cases each; `make fuzz` runs
//! many more (`PROPTEST_CASES`).

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::api::{SecretTemplate, TemplateMetadata};
use crate::json_path::parse_path;
use crate::value::SecretBytes;

/// Carried by every secret value here: no error message may show it.
const SENTINEL: &str = "SENTINEL";

/// A path segment written so `parse_path` reads it back as is.
fn escape(segment: &str) -> String {
    segment.replace('\\', "\\\\").replace('.', "\\.")
}

/// Pieces of templates: valid and broken syntax, filters that fail on some input, slices and loops
/// that put parts of a value into play, and any text.
fn template_source() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{ .a }}".to_string()),
        Just("{{ lt .a 1 }}".to_string()),
        Just("{{ .a | b64dec }}".to_string()),
        Just("{{ lt (.a | b64enc | b64dec) 1 }}".to_string()),
        Just("{{ .a | fromJson }}".to_string()),
        Just("{{ lt (.a | fromJson).x 1 }}".to_string()),
        Just("{{ lt (.b | fromJson | toJson) 1 }}".to_string()),
        Just("{{ (.a | fromJson).x.y }}".to_string()),
        Just("{{ .a.x.y }}".to_string()),
        Just("{{ slice .a 0 12 }}".to_string()),
        Just("{{ lt (slice .a 0 12) 1 }}".to_string()),
        Just("{{ slice .a 2 | fromJson }}".to_string()),
        Just("{{ slice .a 1 | b64dec }}".to_string()),
        Just("{{ range .a }}{{ end }}".to_string()),
        Just("{{ range $c := .a | splitList \"\" }}{{ lt $c 1 }}{{ end }}".to_string()),
        Just("{{ lt (printf \"%s%s\" .a .b) 1 }}".to_string()),
        Just("{{ index .a 99 }}".to_string()),
        Just("{{ lt (.a | upper) 1 }}".to_string()),
        Just("{{ lt (.a | replace \"S\" \"Z\") 1 }}".to_string()),
        Just("{{ .a | filterPEM \"KEY\" }}".to_string()),
        Just("{{ indent .a .b }}".to_string()),
        Just("{{ get .a \"x\" }}".to_string()),
        Just("{{ .a | nope }}".to_string()),
        Just("{{ .missing }}".to_string()),
        Just("{{ range 100000000 }}{{ end }}".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{{ if .a }}".to_string()),
        Just("{{ end }}".to_string()),
        "\\PC{0,6}",
    ];
    prop::collection::vec(piece, 0..5).prop_map(|p| p.concat())
}

/// Values carrying the sentinel: plain, JSON, base64 of either, and binary.
fn secret_value() -> impl Strategy<Value = SecretBytes> {
    use base64::Engine;
    let text = "[ -~]{0,12}".prop_map(|s| format!("{SENTINEL}-{s}"));
    prop_oneof![
        text.clone().prop_map(SecretBytes::from),
        text.clone().prop_map(|s| SecretBytes::from(serde_json::json!({"x": s, "n": 1}).to_string())),
        text.clone().prop_map(|s| SecretBytes::from(base64::engine::general_purpose::STANDARD.encode(s))),
        text.prop_map(|s| {
            let mut b = s.into_bytes();
            b.push(0xff);
            SecretBytes::new(b)
        }),
    ]
}

fn leaks(message: &str) -> bool {
    // The sentinel as is, and its base64 ("SENTINEL" at the three alignments).
    [SENTINEL, "U0VOVElORU", "NFTlRJTkVM", "TRU5USU5FT"].iter().any(|f| message.contains(f))
}

proptest! {
    #[test]
    fn proptest_parse_path_never_panics(path in "\\PC{0,32}") {
        let parts = parse_path(&path);
        prop_assert!(!parts.is_empty());
        // Each unescaped dot starts a segment; nothing is lost but the escapes.
        let unescaped_dots = {
            let (mut n, mut chars) = (0, path.chars());
            while let Some(c) = chars.next() {
                match c {
                    '\\' => { chars.next(); }
                    '.' => n += 1,
                    _ => {}
                }
            }
            n
        };
        prop_assert_eq!(parts.len(), unescaped_dots + 1);
    }

    #[test]
    fn proptest_parse_path_round_trips_escaped_segments(segments in prop::collection::vec("\\PC{0,6}", 1..5)) {
        let path = segments.iter().map(|s| escape(s)).collect::<Vec<_>>().join(".");
        prop_assert_eq!(parse_path(&path), segments);
    }

    #[test]
    fn proptest_template_errors_never_show_a_value(
        data_source in template_source(),
        label_source in template_source(),
        a in secret_value(),
        b in secret_value(),
    ) {
        let template = SecretTemplate {
            data: [("out".to_string(), data_source)].into(),
            metadata: Some(TemplateMetadata { labels: [("l".to_string(), label_source)].into(), ..Default::default() }),
            ..Default::default()
        };
        let data: BTreeMap<String, SecretBytes> = [("a".to_string(), a), ("b".to_string(), b)].into();
        if let Err(e) = crate::template::apply(&template, data, &[]) {
            let message = e.to_string();
            prop_assert!(!leaks(&message), "{}", message);
        }
    }
}

#[test]
fn errors_over_parts_of_a_value_withhold_them() {
    let value = SecretBytes::from(serde_json::json!({"x": format!("{SENTINEL}-part")}).to_string());
    for source in [
        "{{ lt (slice .a 0 14) 1 }}",
        "{{ lt (.a | fromJson).x 1 }}",
        "{{ slice .a 2 | fromJson }}",
        "{{ (.a | fromJson).x.y }}",
        "{{ range (.a | fromJson).x }}{{ end }}",
    ] {
        let template = SecretTemplate { data: [("out".to_string(), source.to_string())].into(), ..Default::default() };
        let r = crate::template::apply(&template, [("a".to_string(), value.clone())].into(), &[]);
        let message = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.starts_with("template data[\"out\"]"), "{source} must fail: {message}");
        assert!(!leaks(&message), "{source}: {message}");
    }
}

// --- json_path: values read as the exact text AWS holds --------------------------------------

/// A JSON document as generated: written out as text by `JsonWriter`, which records where each
/// value lands so the reader's answers can be checked byte for byte.
#[derive(Clone, Debug)]
enum Doc {
    Null,
    Bool(bool),
    /// The number's text, as written.
    Num(String),
    /// The string's content (the writer picks how to escape it).
    Str(String),
    Arr(Vec<Doc>),
    /// Keys are unique (a duplicate key is a table test in json_path).
    Obj(Vec<(String, Doc)>),
}

fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,8})?([eE][-+]?[0-9]{1,4})?",
        prop::sample::select(vec![
            "123456789012345678901234",
            "-9999999999999999999",
            "18446744073709551616",
            "1e400",
            "-1e400",
            "1e3",
            "1E+3",
            "2.5e-400",
            "-0",
            "0.0",
            "1.10",
        ])
        .prop_map(String::from),
    ]
}

/// Any text, and text full of what JSON escapes: quotes, backslashes, slashes, controls, non-ASCII
/// and astral characters (surrogate pairs when escaped), and dots (path separators).
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof!["\\PC{0,8}", "[\"\\\\/\\x00-\\x1f\\x7f.aé\u{2028}\u{1F600}]{0,6}"]
}

fn doc() -> impl Strategy<Value = Doc> {
    let leaf = prop_oneof![
        Just(Doc::Null),
        any::<bool>().prop_map(Doc::Bool),
        json_number().prop_map(Doc::Num),
        json_text().prop_map(Doc::Str),
    ];
    let tree = leaf.prop_recursive(4, 48, 6, |inner| containers(inner.boxed()));
    // The document itself is an object or an array (a scalar has no properties).
    containers(tree.boxed())
}

fn containers(inner: BoxedStrategy<Doc>) -> impl Strategy<Value = Doc> {
    let key = prop_oneof!["[a-z0-9.\\\\]{0,3}", json_text()];
    prop_oneof![
        prop::collection::vec(inner.clone(), 0..6).prop_map(Doc::Arr),
        prop::collection::btree_map(key, inner, 0..6)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>())
            .prop_shuffle()
            .prop_map(Doc::Obj),
    ]
}

/// Writes a `Doc` as JSON text, whitespace and escapes chosen by `choices`.
struct JsonWriter<'a> {
    out: String,
    choices: &'a [u8],
    next: usize,
}

/// Where a value landed: its path, the byte range of its text, and the value.
type Placed<'d> = (Vec<String>, std::ops::Range<usize>, &'d Doc);

impl<'a> JsonWriter<'a> {
    fn pick(&mut self) -> u8 {
        let c = self.choices.get(self.next % self.choices.len().max(1)).copied().unwrap_or(0);
        self.next += 1;
        c
    }

    /// Zero to three whitespace characters, any of the four JSON allows.
    fn ws(&mut self) {
        for _ in 0..self.pick() % 4 {
            let c = [' ', '\t', '\n', '\r'][usize::from(self.pick() % 4)];
            self.out.push(c);
        }
    }

    fn string(&mut self, s: &str) {
        use std::fmt::Write;
        self.out.push('"');
        for c in s.chars() {
            let choice = self.pick() % 3;
            let short = match c {
                '"' => Some("\\\""),
                '\\' => Some("\\\\"),
                '/' => Some("\\/"),
                '\u{8}' => Some("\\b"),
                '\u{c}' => Some("\\f"),
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                _ => None,
            };
            let must_escape = c == '"' || c == '\\' || c < ' ';
            match (choice, short) {
                (0, _) if !must_escape => self.out.push(c),
                (1, Some(esc)) => self.out.push_str(esc),
                _ => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        // Upper or lower case hex, as the writer likes.
                        let _ = if self.pick().is_multiple_of(2) {
                            write!(self.out, "\\u{u:04x}")
                        } else {
                            write!(self.out, "\\u{u:04X}")
                        };
                    }
                }
            }
        }
        self.out.push('"');
    }

    fn value<'d>(&mut self, doc: &'d Doc, path: Vec<String>, placed: &mut Vec<Placed<'d>>) {
        let start = self.out.len();
        match doc {
            Doc::Null => self.out.push_str("null"),
            Doc::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Doc::Num(n) => self.out.push_str(n),
            Doc::Str(s) => self.string(s),
            Doc::Arr(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.ws();
                        self.out.push(',');
                    }
                    self.ws();
                    let mut p = path.clone();
                    p.push(i.to_string());
                    self.value(item, p, placed);
                }
                self.ws();
                self.out.push(']');
            }
            Doc::Obj(members) => {
                self.out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        self.ws();
                        self.out.push(',');
                    }
                    self.ws();
                    self.string(k);
                    self.ws();
                    self.out.push(':');
                    self.ws();
                    let mut p = path.clone();
                    p.push(k.clone());
                    self.value(v, p, placed);
                }
                self.ws();
                self.out.push('}');
            }
        }
        placed.push((path, start..self.out.len(), doc));
    }
}

/// The document as text (with whitespace around it too) and where each value landed.
fn write_doc<'d>(doc: &'d Doc, choices: &[u8]) -> (String, Vec<Placed<'d>>) {
    let mut w = JsonWriter { out: String::new(), choices, next: 0 };
    let mut placed = Vec::new();
    w.ws();
    w.value(doc, Vec::new(), &mut placed);
    w.ws();
    (w.out, placed)
}

/// What the Secret must hold for a value: a string's content, else its text as written.
fn held(text: &str, range: &std::ops::Range<usize>, doc: &Doc) -> Vec<u8> {
    match doc {
        Doc::Str(s) => s.as_bytes().to_vec(),
        _ => text.as_bytes()[range.clone()].to_vec(),
    }
}

proptest! {
    #[test]
    fn proptest_json_values_round_trip_byte_for_byte(doc in doc(), choices in prop::collection::vec(any::<u8>(), 1..64)) {
        let (text, placed) = write_doc(&doc, &choices);
        let bytes = text.as_bytes();
        let root = placed.iter().find(|(p, _, _)| p.is_empty()).map(|(_, r, _)| r.clone()).unwrap_or_default();
        let parsed = crate::json_path::parse(bytes).map(|v| v.get().to_string());
        prop_assert_eq!(parsed.as_deref(), Ok(&text[root]), "{}", text);

        // A top-level key spelled exactly as a property wins over the walked path.
        let top: BTreeMap<&str, Vec<u8>> = placed
            .iter()
            .filter(|(p, _, _)| p.len() == 1 && matches!(doc, Doc::Obj(_)))
            .map(|(p, r, d)| (p[0].as_str(), held(&text, r, d)))
            .collect();
        for (path, range, value) in placed.iter().filter(|(p, _, _)| !p.is_empty()) {
            let property = path.iter().map(|s| escape(s)).collect::<Vec<_>>().join(".");
            let want = top.get(property.as_str()).cloned().unwrap_or_else(|| held(&text, range, value));
            let got = crate::json_path::lookup(bytes, &property).map(|b| b.expose().to_vec());
            prop_assert_eq!(got, Ok(want), "property {:?} of {}", property, text);
        }

        // Every object, the document's and each inner one, extracts to its members.
        for (path, _, value) in &placed {
            let Doc::Obj(_) = value else { continue };
            let want: BTreeMap<String, Vec<u8>> = placed
                .iter()
                .filter(|(p, _, _)| p.len() == path.len() + 1 && p.starts_with(path))
                .map(|(p, r, d)| (p[path.len()].clone(), held(&text, r, d)))
                .collect();
            let property = path.iter().map(|s| escape(s)).collect::<Vec<_>>().join(".");
            let property = (!path.is_empty()).then_some(property);
            // Skip an object its path does not reach (a top-level key spelled as the path wins).
            if property.as_deref().is_some_and(|p| top.contains_key(p) && path.as_slice() != [p]) {
                continue;
            }
            let got = crate::json_path::extract(bytes, property.as_deref())
                .map(|e| e.into_iter().map(|(k, v)| (k, v.expose().to_vec())).collect::<BTreeMap<_, _>>());
            prop_assert_eq!(got, Ok(want), "extract {:?} of {}", property, text);
        }
    }

    #[test]
    fn proptest_json_reader_never_panics_on_broken_documents(
        doc in doc(),
        choices in prop::collection::vec(any::<u8>(), 1..64),
        cut in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        property in "[a-z0-9.\\\\]{0,8}",
    ) {
        let (text, _) = write_doc(&doc, &choices);
        let mut bytes = text.into_bytes();
        let at = cut.index(bytes.len() + 1);
        // Truncated, and with one byte replaced.
        let _ = crate::json_path::lookup(&bytes[..at], &property);
        let _ = crate::json_path::extract(&bytes[..at], None);
        if let Some(b) = bytes.get_mut(at) {
            *b = byte;
        }
        let _ = crate::json_path::lookup(&bytes, &property);
        let _ = crate::json_path::extract(&bytes, Some(&property));
    }
}
