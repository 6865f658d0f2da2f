use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use proptest::prelude::*;

use super::scan::{Scanner, Slot, string, unescape};
use super::*;
use crate::read::TextColumns;
use crate::transform::conform;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("day", DataType::Date32, true),
        Field::new("amount", DataType::Decimal128(12, 3), true),
        Field::new("big", DataType::Decimal128(38, 0), true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("small", DataType::Int8, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
    ]))
}

/// What the reader did before the scanner: every line through serde_json into text
/// columns, the typed conversion left to `conform`.
fn reference(text: &[u8], schema: &Schema) -> Decoded {
    let mut columns = TextColumns::new(schema);
    let (mut origins, mut rejects) = (Vec::new(), Vec::new());
    let (mut at, mut line, mut row) = (0, 0, 0);
    while at < text.len() {
        let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |i| at + i + 1);
        let origin = Origin {
            start: at as u64,
            len: (end - at) as u32,
            line,
            row,
        };
        let body = text[at..end].strip_suffix(b"\n").unwrap_or(&text[at..end]);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        at = end;
        line += 1;
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        row += 1;
        match general(body, schema, origin) {
            Ok(values) => {
                let values: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
                columns.push(&values);
                origins.push(origin);
            }
            Err(r) => rejects.push(r),
        }
    }
    Decoded {
        object: String::new(),
        batch: columns.finish().unwrap(),
        origins,
        rejects,
        text: bytes::Bytes::new(),
        text_offset: Some(0),
        decompressed: false,
        lines_before: LinesBefore::Known(0),
        bytes_read: 0,
    }
}

type Refused = Vec<(u64, String, Option<String>, String)>;

/// The rows kept and every record refused (reading or converting), as a job sees them.
fn outcome(d: &Decoded, schema: &SchemaRef) -> (RecordBatch, Refused) {
    let c = conform(d, schema, &[]).unwrap();
    let mut refused: Refused = d
        .rejects
        .iter()
        .chain(c.rejects.iter().map(|(_, r)| r))
        .map(|r| {
            (
                r.origin.start,
                r.rule.clone(),
                r.column.clone(),
                r.message.clone(),
            )
        })
        .collect();
    refused.sort();
    (c.batch, refused)
}

fn same_as_reference(text: &[u8]) {
    let schema = schema();
    let fast = decode(text, 0, &schema, "t.jsonl").unwrap();
    let want = reference(text, &schema);
    assert_eq!(
        outcome(&fast, &schema),
        outcome(&want, &schema),
        "{}",
        String::from_utf8_lossy(text)
    );
    assert_eq!(fast.records(), want.records());
}

#[test]
fn clean_lines_go_straight_to_typed_columns() {
    let text = br#"{"id": 1, "name": "a\u00e9\ud83d\ude00\n", "score": 2.5, "day": "2024-01-02", "amount": 12.345, "big": 99999999999999999999999999999999999999, "ok": true, "small": -128, "at": "2024-01-01T00:00:00Z"}
{"id":2,"extra":{"deep":[1,{"x":[]}],"s":"\ud800"},"name":null}
"#;
    let d = decode(text, 0, &schema(), "t.jsonl").unwrap();
    assert!(d.rejects.is_empty());
    assert_eq!(d.batch.num_rows(), 2);
    assert_eq!(d.batch.schema().field(0).data_type(), &DataType::Int64);
    assert_eq!(d.batch.schema().field(8).data_type(), &DataType::Utf8);
    let name = d.batch.column(1).as_string::<i32>();
    assert_eq!(name.value(0), "aé😀\n");
    assert!(name.is_null(1));
    let big = d
        .batch
        .column(5)
        .as_primitive::<arrow::datatypes::Decimal128Type>();
    assert_eq!(big.value(0), 10i128.pow(38) - 1);
    same_as_reference(text);
}

#[test]
fn lines_outside_the_fast_subset_keep_their_rules_messages_and_origins() {
    let text = concat!(
        "{\"id\": 1}\n",
        "{\"id\": \"two\"}\n",
        "\n",
        "{\"id\": 3, \"x\": [1, 2,]}\n",
        "{\"id\": 4, \"name\": {\"a\": 1}}\n",
        "{\"id\": 5, \"score\": true}\r\n",
        "{\"id\": 6.5}\n",
        "{\"id\": \" 7 \", \"amount\": \"1e2\", \"day\": 20240107}\n",
        "{\"i\\u0064\": 8, \"name\": \"\\ud800\"}\n",
        "{\"id\": 9, \"x\": \"\\udc00\"}\n",
        "[1]\n",
        "{\"id\": 10, \"id\": 11}\n",
        "{\"id\": 12, \"amount\": 1.0005, \"small\": 300, \"ok\": 1}\n",
        "{\"id\": 13} x\n",
        "{\"id\": 14, \"name\": \"tab\there\"}\n",
        "{\"id\": 15}"
    );
    same_as_reference(text.as_bytes());
    let d = decode(text.as_bytes(), 0, &schema(), "t.jsonl").unwrap();
    let lines: Vec<u64> = d.rejects.iter().map(|r| r.origin.line).collect();
    assert_eq!(lines, [1, 3, 4, 5, 6, 7, 8, 10, 12, 13, 14]);
    assert_eq!(d.rejects[0].message, "`two` is not a valid Int64");
    assert_eq!(d.records(), 15);
    assert_eq!(d.batch.num_rows(), 4);
}

#[test]
fn invalid_utf8_is_refused_by_its_line_alone() {
    let text =
        b"{\"id\": 1, \"name\": \"caf\xe9\"}\n{\"id\": 2, \"name\": \"d\xc3\xa9j\xc3\xa0\"}\n";
    same_as_reference(text);
    let d = decode(text, 0, &schema(), "t.jsonl").unwrap();
    assert_eq!(d.rejects.len(), 1);
    assert_eq!(d.rejects[0].rule, "encoding");
    assert_eq!(d.batch.num_rows(), 1);
}

#[test]
fn nesting_deeper_than_any_stack_is_skipped() {
    let depth = 100_000;
    let line = format!(
        "{{\"id\": 1, \"x\": {}{}}}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let mut scanner = Scanner::new(&schema());
    let mut slots = vec![Slot::Missing; 9];
    assert!(scanner.scan(line.trim_end().as_bytes(), &mut slots));
    assert_eq!(slots[0], Slot::Number(7, 8));
    let open = format!("{{\"id\": 1, \"x\": {}}}", "[".repeat(depth));
    assert!(!scanner.scan(open.as_bytes(), &mut slots));
}

#[test]
fn strings_are_checked_and_decoded_as_json_defines_them() {
    for (raw, want) in [
        (r#"plain""#, Some("plain")),
        (
            r#"a\"b\\c\/d\b\f\n\r\t""#,
            Some("a\"b\\c/d\u{8}\u{c}\n\r\t"),
        ),
        (r#"\u0041\u00E9\u20ac\uD83D\uDE00""#, Some("Aé€😀")),
        ("0123456789abcdef\\u0000\"", Some("0123456789abcdef\u{0}")),
        (r#"\ud800""#, None),
        (r#"\udc00\ud800""#, None),
        (r#"\ud800\u0041""#, None),
        (r#"\x""#, None),
        (r#"\u12""#, None),
        ("a\tb\"", None),
        ("unclosed", None),
        ("long text without any end, past eight bytes", None),
    ] {
        let s = raw.as_bytes();
        let got = string(s, 0).map(|(end, _)| {
            let mut out = Vec::new();
            unescape(&s[..end], &mut out);
            String::from_utf8(out).unwrap()
        });
        let serde = serde_json::from_str::<String>(&format!("\"{raw}")).ok();
        assert_eq!(got.as_deref(), want, "{raw}");
        assert_eq!(got, serde, "{raw}");
    }
}

/// A JSON string's text: plain characters escaped where JSON needs it, and escapes
/// written out (unicode ones, surrogate pairs, and now and then a lone surrogate).
fn json_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => proptest::char::any().prop_map(|c| match c {
            '"' => "\\\"".to_string(),
            '\\' => "\\\\".to_string(),
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32),
            c => c.to_string(),
        }),
        2 => "[ -~]{0,12}".prop_map(|s| s.replace('\\', "/").replace('"', "'")),
        1 => prop::sample::select(vec![
            "\\n", "\\t", "\\/", "\\b", "\\f", "\\r", "\\u00e9", "\\u20AC", "\\ud83d\\ude00",
            "\\uD834\\uDD1E", "\\ud800", "\\udfff", "\\u0000", "\\\"", "1996-03-13", "true", "17.25",
            " 12 ", "-0", "1e3",
        ])
        .prop_map(str::to_string),
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|p| format!("\"{}\"", p.concat()))
}

fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-200i64..200).prop_map(|n| n.to_string()),
        "-?[1-9][0-9]{15,45}",
        "-?(0|[1-9][0-9]{0,12})\\.[0-9]{1,5}",
        "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,3})?[eE][+-]?[0-9]{1,3}",
        any::<f64>().prop_map(|f| serde_json::to_string(&f).unwrap()),
    ]
}

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        json_number(),
        json_string(),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec((json_string(), inner), 0..3).prop_map(|v| {
                let kv: Vec<String> = v.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", kv.join(", "))
            }),
        ]
    })
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "id", "name", "score", "day", "amount", "big", "ok", "small", "at",
        ])
        .prop_map(|k| format!("\"{k}\"")),
        1 => Just("\"n\\u0061me\"".to_string()),
        1 => json_string(),
    ]
}

/// A line: an object of random keys and values with random spacing, sometimes broken.
fn json_line() -> impl Strategy<Value = Vec<u8>> {
    let field = (
        json_key(),
        json_value(),
        prop::sample::select(vec!["", " ", "\t", "  "]),
    );
    let object = proptest::collection::vec(field, 0..8).prop_map(|fields| {
        let kv: Vec<String> = fields
            .into_iter()
            .map(|(k, v, sp)| format!("{sp}{k}{sp}:{sp}{v}{sp}"))
            .collect();
        format!("{{{}}}", kv.join(","))
    });
    let line = prop_oneof![4 => object, 1 => json_value()];
    (line, any::<u8>(), any::<prop::sample::Index>(), 0u8..8).prop_map(|(line, byte, at, how)| {
        let mut b = line.into_bytes();
        let i = at.index(b.len() + 1);
        match how {
            0 => b.truncate(i),
            1 if byte != b'\n' => b.insert(i, byte),
            2 if i < b.len() => {
                b.remove(i);
            }
            _ => {}
        }
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn reads_every_line_as_serde_json_and_conform_read_it(
        lines in proptest::collection::vec(json_line(), 1..6),
        crlf in any::<bool>(),
    ) {
        let end: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let text = lines.join(end);
        same_as_reference(&text);
    }

    #[test]
    fn a_scanned_line_holds_what_serde_json_reads_in_it(line in json_line()) {
        let schema = schema();
        let mut scanner = Scanner::new(&schema);
        let mut slots = vec![Slot::Missing; schema.fields().len()];
        let valid = std::str::from_utf8(&line).is_ok();
        if valid && scanner.scan(&line, &mut slots) {
            // As the general way reads a line: raw values, numbers never evaluated.
            let obj: HashMap<String, &RawValue> = serde_json::from_slice(&line).unwrap();
            for (f, slot) in schema.fields().iter().zip(&slots) {
                let want = obj.get(f.name()).map(|r| r.get().trim());
                let got = match *slot {
                    Slot::Missing => None,
                    Slot::Null => Some("null".to_string()),
                    Slot::True => Some("true".to_string()),
                    Slot::False => Some("false".to_string()),
                    Slot::Number(a, b) => {
                        Some(String::from_utf8(line[a as usize..b as usize].to_vec()).unwrap())
                    }
                    Slot::Str(a, b, _) => {
                        let mut out = Vec::new();
                        unescape(&line[a as usize..b as usize], &mut out);
                        let decoded = String::from_utf8(out).unwrap();
                        let serde: String = serde_json::from_str(want.unwrap()).unwrap();
                        prop_assert_eq!(&decoded, &serde);
                        want.map(str::to_string)
                    }
                };
                prop_assert_eq!(got.as_deref(), want, "{}", f.name());
            }
        }
    }
}
