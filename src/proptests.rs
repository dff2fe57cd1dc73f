//! Property tests of the parsers and renderers that read user input: the property-path parser and
//! lookup, and the template renderer. `make test` runs the default 256 cases each; `make fuzz` runs
//! many more (`PROPTEST_CASES`).

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;

use crate::api::{SecretTemplate, TemplateMetadata};
use crate::render::{lookup, parse_path};
use crate::value::SecretBytes;

/// Carried by every secret value here: no error message may show it.
const SENTINEL: &str = "SENTINEL";

/// A path segment written so `parse_path` reads it back as is.
fn escape(segment: &str) -> String {
    segment.replace('\\', "\\\\").replace('.', "\\.")
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z0-9.\\\\]{0,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Pieces of templates: valid and broken syntax, filters that fail on some input, slices and loops
/// that put parts of a value into play, and any text.
fn template_source() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{ a }}".to_string()),
        Just("{{ a | int }}".to_string()),
        Just("{{ a | float }}".to_string()),
        Just("{{ a | b64dec }}".to_string()),
        Just("{{ a | b64enc | b64dec | int }}".to_string()),
        Just("{{ a | fromJson }}".to_string()),
        Just("{{ (a | fromJson).x | int }}".to_string()),
        Just("{{ b | fromJson | toJson | int }}".to_string()),
        Just("{{ a.x.y }}".to_string()),
        Just("{{ a[0:12] }}".to_string()),
        Just("{{ a[0:12] | int }}".to_string()),
        Just("{{ a[2:] | fromJson }}".to_string()),
        Just("{{ a[:-1] | b64dec }}".to_string()),
        Just("{% for c in a %}{{ c | int }}{% endfor %}".to_string()),
        Just("{{ a ~ b | int }}".to_string()),
        Just("{{ a + 1 }}".to_string()),
        Just("{{ a | upper | int }}".to_string()),
        Just("{{ a | replace('S', 'Z') | int }}".to_string()),
        Just("{{ a | pemKey }}".to_string()),
        Just("{{ a | filterPEM('KEY') }}".to_string()),
        Just("{{ a | nope }}".to_string()),
        Just("{{ missing }}".to_string()),
        Just("{{ range(100000000) | list | length }}".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{% if a %}".to_string()),
        Just("{%".to_string()),
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
    fn proptest_lookup_never_panics(json in json(), property in "[a-z0-9.\\\\]{0,12}") {
        let _ = lookup(&json, &property);
    }

    #[test]
    fn proptest_lookup_finds_what_a_path_builds(segments in prop::collection::vec("[a-z.\\\\]{1,4}", 1..5), leaf in json()) {
        let value = segments.iter().rev().fold(leaf.clone(), |inner, s| serde_json::json!({ s.as_str(): inner }));
        let path = segments.iter().map(|s| escape(s)).collect::<Vec<_>>().join(".");
        prop_assert_eq!(lookup(&value, &path), Some(&leaf));
    }

    #[test]
    fn proptest_lookup_prefers_a_top_level_key_spelled_exactly(key in "\\PC{1,8}", json in json()) {
        let value = serde_json::json!({ key.as_str(): json });
        prop_assert_eq!(lookup(&value, &key), Some(&json));
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
        if let Err(e) = crate::template::apply(&template, data) {
            let message = e.to_string();
            prop_assert!(!leaks(&message), "{}", message);
        }
    }
}

#[test]
fn errors_over_parts_of_a_value_withhold_them() {
    let value = SecretBytes::from(serde_json::json!({"x": format!("{SENTINEL}-part")}).to_string());
    for source in ["{{ a[0:14] | int }}", "{{ (a | fromJson).x | int }}", "{{ a[2:] | fromJson }}", "{{ a | float }}"] {
        let template = SecretTemplate { data: [("out".to_string(), source.to_string())].into(), ..Default::default() };
        let r = crate::template::apply(&template, [("a".to_string(), value.clone())].into());
        let message = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.starts_with("template data[\"out\"]"), "{source} must fail: {message}");
        assert!(!leaks(&message), "{source}: {message}");
    }
}
