use super::*;
use arrow::datatypes::{DataType, TimeUnit};

const GOOD: &str = r#"
name: orders
work: out/_fanout/
input:
  location: examples/data/orders/
  include: ["*.csv", "*.csv.gz"]
  format: csv
  csv: { delimiter: ",", quote: "\"", header: true, null_values: ["", "NULL"], multiline: false }
  schema:
    - { name: order_id,    type: int64, nullable: false }
    - { name: customer_id, type: utf8,  nullable: false }
    - { name: amount,      type: "decimal(12,2)" }
    - { name: status,      type: utf8 }
    - { name: ordered_at,  type: "timestamp(ms, UTC)" }
chunking: { target_size: 64MiB }
validate:
  - { column: amount, min: 0 }
  - { column: status, one_of: [NEW, PAID, SHIPPED, CANCELLED] }
  - { column: customer_id, matches: "^C[0-9]{6}$" }
transform:
  lookups:
    - { name: customers, location: examples/data/customers.csv, format: csv }
  sql: |
    SELECT o.*, c.region FROM input o LEFT JOIN customers c USING (customer_id)
output:
  location: out/orders/
  partition_by: [region]
  compression: zstd(3)
  row_group_rows: 1000000
  max_file_size: 256MiB
rejects: { location: out/_rejects/orders/, max_ratio: 0.01 }
aggregate:
  group_by: [region, status]
  measures:
    - { name: orders,      fn: count }
    - { name: revenue,     fn: sum, column: amount }
metrics: { namespace: Fanout }
"#;

fn refuse(text: &str) -> SpecError {
    match JobSpec::parse("job.yaml", text) {
        Ok(_) => panic!("spec was accepted:\n{text}"),
        Err(e) => e,
    }
}

/// Replaces `from` (which must occur) in the good spec.
fn mutate(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn the_design_example_is_accepted() {
    let spec = JobSpec::parse("job.yaml", GOOD).unwrap();
    assert_eq!(spec.input.schema.fields().len(), 5);
    assert_eq!(spec.chunking.target_bytes, 64 << 20);
    assert_eq!(spec.output.compression, OutputCompression::Zstd(3));
    // Two not-null columns plus three rules.
    assert_eq!(spec.rules.len(), 5);
    assert!(matches!(spec.rules[0].check, Check::NotNull));
    assert_eq!(
        spec.input.schema.field(4).data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
}

/// Each bad spec: (what to change, what to change it to, the field the error must name).
const BAD: &[(&str, &str, &str)] = &[
    ("format: csv", "format: xml", "input.format"),
    (
        "type: int64, nullable: false",
        "type: integer64, nullable: false",
        "input.schema[0].type",
    ),
    (
        "\"decimal(12,2)\"",
        "\"decimal(40,2)\"",
        "input.schema[2].type",
    ),
    (
        "\"timestamp(ms, UTC)\"",
        "\"timestamp(ms, Mars/Olympus)\"",
        "input.schema[4].type",
    ),
    (
        "{ column: amount, min: 0 }",
        "{ column: amout, min: 0 }",
        "validate[0].column",
    ),
    (
        "{ column: amount, min: 0 }",
        "{ column: amount, min: zero }",
        "validate[0].min",
    ),
    (
        "{ column: status, one_of",
        "{ column: status, min: 1, one_of",
        "validate[1].min",
    ),
    (
        "matches: \"^C[0-9]{6}$\"",
        "matches: \"^C[0-9{6}$\"",
        "validate[2].matches",
    ),
    (
        "target_size: 64MiB",
        "target_size: 64 parsecs",
        "chunking.target_size",
    ),
    (
        "compression: zstd(3)",
        "compression: zstd(99)",
        "output.compression",
    ),
    (
        "compression: zstd(3)",
        "compression: brotli",
        "output.compression",
    ),
    ("max_ratio: 0.01", "max_ratio: 1.5", "rejects.max_ratio"),
    (
        "location: out/orders/",
        "location: examples/data/orders/2024/",
        "output.location",
    ),
    (
        "location: out/orders/",
        "location: gs://bucket/orders/",
        "output.location",
    ),
    (
        "{ name: revenue,     fn: sum, column: amount }",
        "{ name: revenue, fn: median, column: amount }",
        "aggregate.measures[1].fn",
    ),
    (
        "{ name: revenue,     fn: sum, column: amount }",
        "{ name: revenue, fn: sum }",
        "aggregate.measures[1].column",
    ),
    (
        "{ name: revenue,     fn: sum, column: amount }",
        "{ name: orders, fn: sum, column: amount }",
        "aggregate.measures[1].name",
    ),
    ("name: orders\n", "name: \"orders with spaces\"\n", "name"),
    (
        "row_group_rows: 1000000",
        "row_group_rows: 0",
        "output.row_group_rows",
    ),
    (
        "row_group_rows: 1000000",
        "row_groups: 1000000",
        "output.row_groups",
    ),
    (
        "{ name: customers, location",
        "{ name: input, location",
        "transform.lookups[0].name",
    ),
    (
        "delimiter: \",\"",
        "delimiter: \";;\"",
        "input.csv.delimiter",
    ),
    (
        "namespace: Fanout",
        "namespace: AWS/Lambda",
        "metrics.namespace",
    ),
    (
        "{ name: customer_id, type: utf8,  nullable: false }",
        "{ name: order_id, type: utf8,  nullable: false }",
        "input.schema[1].name",
    ),
    (
        "partition_by: [region]",
        "partition_by: [region, region]",
        "output.partition_by[1]",
    ),
    (
        "multiline: false }",
        "multiline: nope }",
        "input.csv.multiline",
    ),
    (
        "metrics: { namespace: Fanout }",
        "metrics: { namespace: Fanout }\nqueue: { max_message_size: 2MiB }",
        "queue.max_message_size",
    ),
    (
        "metrics: { namespace: Fanout }",
        "metrics: { namespace: Fanout }\nqueue: { max_message_size: 512 }",
        "queue.max_message_size",
    ),
    (
        "multiline: false }",
        "multiline: false }\n  max_record_size: 2GiB",
        "input.max_record_size",
    ),
    (
        "multiline: false }",
        "multiline: false }\n  max_record_size: 0",
        "input.max_record_size",
    ),
    // A row group limit is for Parquet input only.
    (
        "  format: csv\n",
        "  format: csv\n  max_row_group_size: 64MiB\n",
        "input.max_row_group_size",
    ),
];

#[test]
fn bad_specs_are_refused_naming_the_field_and_line() {
    for (from, to, field) in BAD {
        let text = mutate(from, to);
        let err = refuse(&text);
        let p = err
            .problems
            .iter()
            .find(|p| p.field == *field)
            .unwrap_or_else(|| panic!("no problem names `{field}` for `{to}`: {err}"));
        let needle = to.lines().next().unwrap().trim();
        let expected_line = line_of(&text, needle);
        assert!(p.line.is_some(), "no line for {field}: {err}");
        let shown = err.to_string();
        assert!(shown.contains(&format!("`{field}`")), "{shown}");
        // The line points at the field or, for flow mappings, at their line.
        let line = p.line.unwrap();
        assert!(
            line >= expected_line.saturating_sub(1) && line <= expected_line + 1,
            "{field}: line {line}, expected about {expected_line}\n{shown}"
        );
    }
    assert!(BAD.len() >= 20);
}

#[test]
fn missing_required_sections_are_named() {
    let err = refuse(
        "name: x\ninput: { location: a/, format: csv, schema: [{ name: a, type: utf8 }] }\nrejects: { location: r/ }\n",
    );
    assert!(err.to_string().contains("missing field `output`"), "{err}");
}

#[test]
fn syntax_errors_give_the_line() {
    let err = refuse("name: x\ninput: [unclosed\n");
    assert_eq!(err.problems[0].line, Some(3));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = mutate("format: csv", "format: xml").replacen("max_ratio: 0.01", "max_ratio: 7", 1);
    let err = refuse(&text);
    assert!(err.problems.len() >= 2, "{err}");
}

#[test]
fn sizes_and_types_parse() {
    assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
    assert_eq!(parse_size("1000").unwrap(), 1000);
    assert_eq!(parse_type("uint16").unwrap(), DataType::UInt16);
    assert_eq!(
        parse_type("timestamp(us, +02:00)").unwrap(),
        DataType::Timestamp(TimeUnit::Microsecond, Some("+02:00".into()))
    );
    assert_eq!(
        parse_type("timestamp(ns, Europe/Paris)").unwrap(),
        DataType::Timestamp(TimeUnit::Nanosecond, Some("Europe/Paris".into()))
    );
    assert!(parse_type("map<string,int>").is_err());
}

#[test]
fn the_record_size_limit_defaults_to_64_mib_and_takes_a_size() {
    let spec = JobSpec::parse("job.yaml", GOOD).expect("spec");
    assert_eq!(spec.input.max_record_bytes, 64 << 20);
    assert!(spec.resolved["input"].get("max_record_size").is_none());
    let text = mutate(
        "multiline: false }",
        "multiline: false }\n  max_record_size: 1MiB",
    );
    let spec = JobSpec::parse("job.yaml", &text).expect("spec");
    assert_eq!(spec.input.max_record_bytes, 1 << 20);
    assert_eq!(spec.resolved["input"]["max_record_size"], 1_048_576);
}

#[test]
fn the_queue_message_limit_defaults_to_256_kib_and_takes_a_size() {
    let spec = JobSpec::parse("job.yaml", GOOD).expect("spec");
    assert_eq!(spec.queue.max_message_bytes, 256 * 1024);
    assert!(spec.resolved["queue"].get("max_message_size").is_none());
    let text = format!("{GOOD}queue: {{ max_message_size: 1MiB }}\n");
    let spec = JobSpec::parse("job.yaml", &text).expect("spec");
    assert_eq!(spec.queue.max_message_bytes, 1024 * 1024);
    // Resolved to bytes, so `1MiB` and `1048576` give the same job.
    assert_eq!(spec.resolved["queue"]["max_message_size"], 1_048_576);
}

#[test]
fn the_parquet_row_group_limit_defaults_to_128_mib_and_takes_a_size() {
    // The good spec read as Parquet, without its CSV options.
    let parquet: String = mutate("  format: csv\n", "  format: parquet\n")
        .lines()
        .filter(|l| !l.starts_with("  csv:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let spec = JobSpec::parse("job.yaml", &parquet).expect("spec");
    assert_eq!(spec.input.max_row_group_bytes, 128 * 1024 * 1024);
    assert!(spec.resolved["input"].get("max_row_group_size").is_none());
    let text = parquet.replacen(
        "  format: parquet\n",
        "  format: parquet\n  max_row_group_size: 1GiB\n",
        1,
    );
    let spec = JobSpec::parse("job.yaml", &text).expect("spec");
    assert_eq!(spec.input.max_row_group_bytes, 1 << 30);
    // Resolved to bytes, so `1GiB` and `1073741824` give the same job.
    assert_eq!(spec.resolved["input"]["max_row_group_size"], 1u64 << 30);
    let text = parquet.replacen(
        "  format: parquet\n",
        "  format: parquet\n  max_row_group_size: lots\n",
        1,
    );
    let err = refuse(&text).to_string();
    assert!(err.contains("`input.max_row_group_size`"), "{err}");
}

#[test]
fn every_documented_output_codec_is_accepted_and_built() {
    for (text, want) in [
        ("zstd(3)", OutputCompression::Zstd(3)),
        ("zstd(22)", OutputCompression::Zstd(22)),
        ("snappy", OutputCompression::Snappy),
        ("gzip(0)", OutputCompression::Gzip(0)),
        ("gzip", OutputCompression::Gzip(6)),
        ("lz4", OutputCompression::Lz4),
        ("none", OutputCompression::None),
        ("uncompressed", OutputCompression::None),
    ] {
        let yaml = GOOD.replace("compression: zstd(3)", &format!("compression: {text}"));
        let spec = JobSpec::parse("job.yaml", &yaml).unwrap();
        assert_eq!(spec.output.compression, want, "{text}");
        assert!(crate::codec::is_built(want.codec().unwrap()), "{text}");
    }
}

#[test]
fn the_target_file_size_defaults_to_128_mib_turns_off_and_stays_within_max_file_size() {
    let spec = JobSpec::parse("job.yaml", GOOD).expect("spec");
    assert_eq!(spec.output.target_file_bytes, Some(128 << 20));
    // Resolved even when not given: the stored spec says whether the job compacts.
    assert_eq!(spec.resolved["output"]["target_file_size"], 128 << 20);
    for off in ["off", "none", "false", "0"] {
        let text = mutate(
            "max_file_size: 256MiB",
            &format!("max_file_size: 256MiB\n  target_file_size: {off}"),
        );
        let spec = JobSpec::parse("job.yaml", &text).expect("spec");
        assert_eq!(spec.output.target_file_bytes, None, "{off}");
        assert_eq!(spec.resolved["output"]["target_file_size"], "off");
    }
    let text = mutate(
        "max_file_size: 256MiB",
        "max_file_size: 256MiB\n  target_file_size: 64KiB",
    );
    let spec = JobSpec::parse("job.yaml", &text).expect("spec");
    assert_eq!(spec.output.target_file_bytes, Some(64 * 1024));
    assert_eq!(spec.resolved["output"]["target_file_size"], 65_536);
    // Above max_file_size, or not a size: refused, naming the field.
    for (value, says) in [
        ("1GiB", "above output.max_file_size"),
        ("lots", "not a size"),
    ] {
        let text = mutate(
            "max_file_size: 256MiB",
            &format!("max_file_size: 256MiB\n  target_file_size: {value}"),
        );
        let e = JobSpec::parse("job.yaml", &text)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("output.target_file_size") && e.contains(says),
            "{e}"
        );
    }
}
