//! Parquet in and out against an independent implementation (pyarrow, through
//! `tests/py/parquet_codecs.py`), run on the embedded pipeline in-process: input in every
//! codec is read, output in every documented codec is read back, and an object in a codec
//! this build cannot decode fails its chunk naming the object. A file of many row groups
//! streams in bounded batches; a row group over `input.max_row_group_size` is refused at
//! planning.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fanout::env::Env;
use fanout::metrics::MemoryMetrics;
use fanout::runner::{RunOptions, RunReport, Silent, run_local};
use fanout::spec::JobSpec;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader, ParquetMetaDataWriter};
use parquet::file::properties::WriterProperties;
use serde_json::Value;

/// Rows of each file `parquet_codecs.py write` makes.
const ROWS: u64 = 100;

fn script() -> PathBuf {
    common::repo().join("tests/py/parquet_codecs.py")
}

/// Runs the helper script; its stdout.
fn py(args: &[&str]) -> String {
    common::run_ok(Command::new(common::python()).arg(script()).args(args))
}

/// The helper's `read` of each file: (codecs, rows sorted by id).
fn py_read(files: &[PathBuf]) -> Vec<(Vec<String>, Vec<Value>)> {
    let mut args = vec!["read".to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    py(&args)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let codecs = v["codecs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            (codecs, v["rows"].as_array().unwrap().clone())
        })
        .collect()
}

fn spec(root: &Path, schema: &str, compression: &str) -> JobSpec {
    spec_with(root, schema, compression, "")
}

/// [`spec`] with `extra` YAML appended to the `input` section.
fn spec_with(root: &Path, schema: &str, compression: &str, extra: &str) -> JobSpec {
    let r = root.display();
    let text = format!(
        r#"
name: t
work: {r}/work/
input:
  location: {r}/in/
  format: parquet
{extra}
  schema:
{schema}
output: {{ location: {r}/out/, compression: "{compression}" }}
rejects: {{ location: {r}/rejects/, max_ratio: 1.0 }}
aggregate:
  group_by: []
  measures:
    - {{ name: n, fn: count }}
    - {{ name: total, fn: sum, column: id }}
queue: {{ max_receive_count: 2 }}
"#
    );
    JobSpec::parse("test.yaml", &text).unwrap()
}

const TABLE_SCHEMA: &str = "    - { name: id, type: int64, nullable: false }
    - { name: name, type: utf8 }
    - { name: score, type: float64 }
    - { name: day, type: date32 }";

#[allow(clippy::field_reassign_with_default)]
async fn run(spec: &JobSpec) -> RunReport {
    let mut o = RunOptions::default();
    o.workers = 2;
    o.retry_backoff = |_| Duration::from_millis(5);
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        run_local(&env, spec, &o, Arc::new(Silent)),
    )
    .await
    .expect("the job hung");
    report.unwrap()
}

fn footer(path: &Path) -> ParquetMetaData {
    let bytes = Bytes::from(std::fs::read(path).unwrap());
    ParquetMetaDataReader::new()
        .parse_and_finish(&bytes)
        .unwrap()
}

/// The codecs of a file's column chunks, as parquet-rs reads its footer.
fn codecs(path: &Path) -> Vec<String> {
    let mut c: Vec<String> = footer(path)
        .row_groups()
        .iter()
        .flat_map(|g| g.columns().iter().map(|c| codec_name(c.compression())))
        .collect();
    c.sort();
    c.dedup();
    c
}

/// The codec without its level.
fn codec_name(c: Compression) -> String {
    c.to_string().split('(').next().unwrap().to_string()
}

/// Rewrites a Parquet file with `props`, rows unchanged.
fn rewrite(from: &Path, to: &Path, props: WriterProperties) {
    let bytes = Bytes::from(std::fs::read(from).unwrap());
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let mut w: Option<ArrowWriter<std::fs::File>> = None;
    for b in reader {
        let b = b.unwrap();
        let w = w.get_or_insert_with(|| {
            ArrowWriter::try_new(
                std::fs::File::create(to).unwrap(),
                b.schema(),
                Some(props.clone()),
            )
            .unwrap()
        });
        w.write(&b).unwrap();
    }
    w.unwrap().close().unwrap();
}

/// Replaces a file's footer with `edit` of it, the pages left as they are.
fn patch_footer(path: &Path, edit: impl FnOnce(ParquetMetaData) -> ParquetMetaData) {
    let bytes = std::fs::read(path).unwrap();
    let n = bytes.len();
    let meta_len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    let pages = &bytes[..n - 8 - meta_len];
    let meta = edit(footer(path));
    let mut out = pages.to_vec();
    ParquetMetaDataWriter::new(&mut out, &meta)
        .finish()
        .unwrap();
    std::fs::write(path, out).unwrap();
}

/// Every row of the job's output files, as pyarrow reads them, sorted by id; and the
/// codecs of the files.
fn output(root: &Path, m: &fanout::job::Manifest) -> (Vec<String>, Vec<Value>) {
    let files: Vec<PathBuf> = m
        .files
        .iter()
        .map(|f| root.join("out").join(&f.file.key))
        .collect();
    assert!(!files.is_empty(), "no output files");
    let mut codecs = Vec::new();
    let mut rows = Vec::new();
    for (c, r) in py_read(&files) {
        codecs.extend(c);
        rows.extend(r);
    }
    codecs.sort();
    codecs.dedup();
    rows.sort_by_key(|r| r["id"].as_i64().unwrap());
    (codecs, rows)
}

#[tokio::test]
async fn parquet_input_in_every_codec_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let input = root.join("in");
    let written = ["snappy", "gzip", "zstd", "brotli", "lz4", "none"];
    let mut args = vec!["write", input.to_str().unwrap()];
    args.extend(written);
    py(&args);
    // pyarrow writes LZ4_RAW only; parquet-rs writes the older Hadoop-framed LZ4.
    rewrite(
        &input.join("none.parquet"),
        &input.join("lz4_hadoop.parquet"),
        WriterProperties::builder()
            .set_compression(Compression::LZ4)
            .set_max_row_group_row_count(Some(40))
            .build(),
    );
    for (file, codec) in [
        ("snappy", "SNAPPY"),
        ("gzip", "GZIP"),
        ("zstd", "ZSTD"),
        ("brotli", "BROTLI"),
        ("lz4", "LZ4_RAW"),
        ("lz4_hadoop", "LZ4"),
        ("none", "UNCOMPRESSED"),
    ] {
        let path = input.join(format!("{file}.parquet"));
        assert_eq!(codecs(&path), vec![codec.to_string()], "{file}");
    }
    let report = run(&spec(root, TABLE_SCHEMA, "zstd(3)")).await;
    let m = report.result.unwrap();
    let files = 7;
    assert_eq!(
        (m.counts.read, m.counts.written, m.counts.rejected),
        (files * ROWS, files * ROWS, 0)
    );
    // Every input file's rows, value for value, as pyarrow reads the input.
    let (_, want) = py_read(&[input.join("none.parquet")]).pop().unwrap();
    let (_, got) = output(root, &m);
    for (i, row) in got.iter().enumerate() {
        let w = &want[i / files as usize];
        assert_eq!(row["name"], w["name"], "{row}");
        assert_eq!(row["score"], w["score"], "{row}");
        assert_eq!(row["day"], w["day"], "{row}");
    }
}

#[tokio::test]
async fn output_in_every_documented_codec_is_read_back_by_pyarrow() {
    for (compression, codec) in [
        ("zstd(3)", "ZSTD"),
        ("zstd(19)", "ZSTD"),
        ("snappy", "SNAPPY"),
        ("gzip(6)", "GZIP"),
        ("gzip", "GZIP"),
        ("lz4", "LZ4"),
        ("none", "UNCOMPRESSED"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let input = root.join("in");
        py(&["write", input.to_str().unwrap(), "none"]);
        let report = run(&spec(root, TABLE_SCHEMA, compression)).await;
        let m = report
            .result
            .unwrap_or_else(|e| panic!("{compression}: {e}"));
        let (codecs, rows) = output(root, &m);
        // pyarrow names LZ4_RAW `LZ4` too.
        assert_eq!(codecs, vec![codec.to_string()], "{compression}");
        let (_, want) = py_read(&[input.join("none.parquet")]).pop().unwrap();
        assert_eq!(rows, want, "{compression}");
    }
}

#[tokio::test]
async fn an_object_in_a_codec_this_build_cannot_decode_fails_its_chunk_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let input = root.join("in");
    py(&["write", input.to_str().unwrap(), "none"]);
    // LZO: a codec of the format that parquet-rs has no decoder for.
    patch_footer(&input.join("none.parquet"), |meta| {
        let mut b = meta.into_builder();
        let groups = b
            .take_row_groups()
            .into_iter()
            .map(|g| {
                let mut gb = g.into_builder();
                let columns = gb
                    .take_columns()
                    .into_iter()
                    .map(|c| {
                        c.into_builder()
                            .set_compression(Compression::LZO)
                            .build()
                            .unwrap()
                    })
                    .collect();
                gb.set_column_metadata(columns).build().unwrap()
            })
            .collect();
        b.set_row_groups(groups).build()
    });
    assert_eq!(codecs(&input.join("none.parquet")), vec!["LZO".to_string()]);
    let report = run(&spec(root, TABLE_SCHEMA, "zstd(3)")).await;
    let e = report.result.unwrap_err().to_string();
    assert_eq!(report.status.committed, 0, "{e}");
    let failure = &report.status.dead_lettered[0].message;
    // Refused from the footer, before any page is decoded.
    for want in [
        "reading `none.parquet`",
        "column `id` of row group 0 is LZO-compressed",
        "this build cannot decode",
    ] {
        assert!(failure.contains(want), "{want} missing from: {failure}");
    }
}

type RowGroup = parquet::file::metadata::RowGroupMetaData;

/// A file of `groups` row groups of 6 rows (id, name), then its footer's row groups edited
/// by `edit_group` (given each one's index; the file's row count is re-summed from the row
/// groups by the footer writer).
fn six_rows_patched(path: &Path, groups: i64, edit_group: impl Fn(usize, RowGroup) -> RowGroup) {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let rows = 1..=6 * groups;
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(rows.clone())) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(rows.map(|i| format!("n{i}")))) as ArrayRef,
        ),
    ])
    .unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(6))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    patch_footer(path, |meta| {
        let mut b = meta.into_builder();
        let groups = b.take_row_groups().into_iter().enumerate();
        let groups = groups.map(|(i, g)| edit_group(i, g)).collect();
        b.set_row_groups(groups).build()
    });
}

const ID_NAME_SCHEMA: &str = "    - { name: id, type: int64, nullable: false }
    - { name: name, type: utf8 }";

/// The job over `root/in` fails, commits no chunk, and its chunk's failure holds `want`.
async fn fails_committing_nothing(root: &Path, want: &[&str]) {
    let report = run(&spec(root, ID_NAME_SCHEMA, "zstd(3)")).await;
    let e = report.result.unwrap_err().to_string();
    assert_eq!(report.status.committed, 0, "{e}");
    assert!(
        !root
            .join("work/jobs")
            .join(report.plan.summary.job_id.as_str())
            .join("_SUCCESS")
            .exists()
    );
    let failure = &report.status.dead_lettered[0].message;
    for w in want {
        assert!(failure.contains(w), "{w} missing from: {failure}");
    }
}

#[tokio::test]
async fn a_footer_saying_0_rows_over_row_groups_holding_6_fails_its_chunk_naming_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    six_rows_patched(&root.join("in/six.parquet"), 1, |_, g| {
        g.into_builder().set_num_rows(0).build().unwrap()
    });
    let meta = footer(&root.join("in/six.parquet"));
    assert_eq!(meta.file_metadata().num_rows(), 0);
    fails_committing_nothing(
        root,
        &[
            "reading `six.parquet`",
            "row group 0 says 0 rows, its column `id` holds 6 values",
        ],
    )
    .await;
}

/// `g` claiming 8 rows, its columns 8 values, where its pages hold 6.
fn claims_8(g: RowGroup) -> RowGroup {
    let mut b = g.into_builder().set_num_rows(8);
    let columns = b
        .take_columns()
        .into_iter()
        .map(|c| c.into_builder().set_num_values(8).build().unwrap())
        .collect();
    b.set_column_metadata(columns).build().unwrap()
}

#[tokio::test]
async fn a_row_group_claiming_more_rows_than_its_pages_hold_fails_its_chunk_naming_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    six_rows_patched(&root.join("in/six.parquet"), 1, |_, g| claims_8(g));
    fails_committing_nothing(
        root,
        &[
            "reading `six.parquet`",
            "row group 0 decoded to 6 rows, the footer says 8",
        ],
    )
    .await;
}

#[tokio::test]
async fn one_row_group_of_several_decoding_to_fewer_rows_than_its_footer_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let path = root.join("in/six.parquet");
    six_rows_patched(&path, 3, |i, g| if i == 1 { claims_8(g) } else { g });
    let counts: Vec<i64> = footer(&path)
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .collect();
    assert_eq!(counts, vec![6, 8, 6]);
    fails_committing_nothing(
        root,
        &[
            "reading `six.parquet`",
            "row group 1 decoded to 6 rows, the footer says 8",
        ],
    )
    .await;
}

/// `parquet_codecs.py groups`: `rows` rows in row groups of `group_rows`, at `root/in/g.parquet`.
fn row_groups_file(root: &Path, rows: u64, group_rows: u64) -> PathBuf {
    let path = root.join("in/g.parquet");
    let (n, g) = (rows.to_string(), group_rows.to_string());
    py(&["groups", path.to_str().unwrap(), &n, &g]);
    path
}

#[tokio::test]
async fn a_file_of_many_row_groups_streams_in_bounded_batches_and_is_read_exactly() {
    use fanout::read::parquet::{MAX_BATCH_ROWS, ParquetPieceReader};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let rows = 100_000;
    let path = row_groups_file(root, rows, 12_000);
    assert_eq!(footer(&path).num_row_groups(), 9);
    // Split by row group over several chunks.
    let mut spec = spec(root, TABLE_SCHEMA, "zstd(3)");
    spec.chunking.target_bytes = 256 * 1024;
    let store = fanout::store::FsStore::new(root.join("in"));
    let meta = fanout::store::ObjectStore::head(&store, "g.parquet")
        .await
        .unwrap()
        .unwrap();
    let piece = fanout::plan::Piece::Object {
        key: meta.key,
        etag: meta.etag,
        size: meta.size,
    };
    let mut reader = ParquetPieceReader::open(&store, &piece, &spec.input.schema)
        .await
        .unwrap();
    let mut next_row = 0;
    while let Some(d) = reader.next().await.unwrap() {
        let n = d.batch.num_rows();
        assert!((1..=MAX_BATCH_ROWS).contains(&n), "a batch of {n} rows");
        let ids = d
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        for (o, id) in d.origins.iter().zip(ids.values()) {
            assert_eq!((o.row, *id), (next_row, next_row as i64 + 1));
            next_row += 1;
        }
    }
    assert_eq!(next_row, rows);
    let report = run(&spec).await;
    assert!(
        report.plan.chunks.len() > 2,
        "{} chunks",
        report.plan.chunks.len()
    );
    let m = report.result.unwrap();
    assert_eq!(
        (m.counts.read, m.counts.written, m.counts.rejected),
        (rows, rows, 0)
    );
    let (_, want) = py_read(&[path]).pop().unwrap();
    let (_, got) = output(root, &m);
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_row_group_over_max_row_group_size_is_refused_at_planning_naming_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let path = row_groups_file(root, 30_000, 10_000);
    let spec = spec(root, ID_NAME_SCHEMA, "zstd(3)");
    let sizes =
        fanout::read::parquet::projected_row_group_bytes(&footer(&path), &spec.input.schema);
    let (largest, biggest) = sizes
        .iter()
        .enumerate()
        .map(|(i, b)| (*b, i))
        .max()
        .unwrap();
    // Below the object's size and the chunk target: the footer is read for the limit alone.
    assert!(largest < std::fs::metadata(&path).unwrap().len());
    let at = |limit: u64| {
        let extra = format!("  max_row_group_size: {limit}");
        spec_with(root, ID_NAME_SCHEMA, "zstd(3)", &extra)
    };
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let e = run_local(
        &env,
        &at(largest - 1),
        &RunOptions::default(),
        Arc::new(Silent),
    )
    .await
    .map(|_| ())
    .unwrap_err()
    .to_string();
    for want in [
        "reading `g.parquet`".to_string(),
        format!("row group {biggest} holds {largest} bytes"),
        format!("over input.max_row_group_size ({} bytes)", largest - 1),
    ] {
        assert!(e.contains(&want), "{want} missing from: {e}");
    }
    // Refused before anything was written or enqueued.
    assert!(!root.join("work").exists());
    let m = run(&at(largest)).await.result.unwrap();
    assert_eq!((m.counts.read, m.counts.written), (30_000, 30_000));
}

/// The job's rejects: (object, row, rule, column, message).
fn rejects(root: &Path, m: &fanout::job::Manifest) -> Vec<(String, u64, String, String, String)> {
    let mut out: Vec<_> = m
        .rejects
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(root.join("rejects").join(&f.key)).unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<fanout::transform::Reject>(l).unwrap())
                .map(|r| {
                    (
                        r.object,
                        r.row.unwrap(),
                        r.rule,
                        r.column.unwrap_or_default(),
                        r.message,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

const INT96_SCHEMA: &str = "    - { name: id, type: int64, nullable: false }
    - { name: ts, type: \"TYPE\" }";

/// Runs the INT96 file (see `parquet_codecs.py int96`, `how` its options) with `ts` read
/// as `ts_type`.
async fn run_int96(root: &Path, how: &[&str], ts_type: &str) -> fanout::job::Manifest {
    let file = root.join("in/int96.parquet");
    let mut args = vec!["int96", file.to_str().unwrap()];
    args.extend(how);
    py(&args);
    let schema = INT96_SCHEMA.replace("TYPE", ts_type);
    let report = run(&spec(root, &schema, "zstd(3)")).await;
    report.result.unwrap()
}

fn ts_of(rows: &[Value]) -> Vec<(i64, Value)> {
    rows.iter()
        .map(|r| (r["id"].as_i64().unwrap(), r["ts"].clone()))
        .collect()
}

#[tokio::test]
async fn int96_instants_beyond_timestamp_ns_are_rejected_by_type_and_the_rest_kept_exact() {
    // As Spark writes it, and with pyarrow's schema (µs) embedded.
    for how in [&[][..], &["arrow"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let m = run_int96(root, how, "timestamp(ns)").await;
        assert_eq!(
            (m.counts.read, m.counts.rejected, m.counts.written),
            (6, 2, 4),
            "{how:?}"
        );
        let got = rejects(root, &m);
        let coordinates: Vec<_> = got
            .iter()
            .map(|(o, row, rule, c, _)| (o.as_str(), *row, rule.as_str(), c.as_str()))
            .collect();
        let t = |row: u64| ("int96.parquet", row, "type", "ts");
        assert_eq!(coordinates, vec![t(2), t(4)], "{how:?}");
        assert!(got[0].4.contains("9999-12-31T23:59:59"), "{:?}", got[0]);
        let (_, rows) = output(root, &m);
        assert_eq!(
            ts_of(&rows),
            vec![
                (1, Value::from("2024-05-01T12:30:15.123456")),
                (2, Value::from("1900-01-01T06:00:00.250000")),
                (4, Value::from("2262-04-11T00:00:00")),
                (6, Value::Null),
            ],
            "{how:?}"
        );
    }
}

#[tokio::test]
async fn int96_instants_beyond_timestamp_ns_are_kept_exact_in_a_coarser_unit() {
    for ts_type in ["timestamp(us)", "timestamp(ms)"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let m = run_int96(root, &[], ts_type).await;
        assert_eq!(
            (m.counts.read, m.counts.rejected, m.counts.written),
            (6, 0, 6),
            "{ts_type}"
        );
        let (_, rows) = output(root, &m);
        let micros = if ts_type == "timestamp(us)" {
            "123456"
        } else {
            "123000"
        };
        assert_eq!(
            ts_of(&rows),
            vec![
                (1, Value::from(format!("2024-05-01T12:30:15.{micros}"))),
                (2, Value::from("1900-01-01T06:00:00.250000")),
                (3, Value::from("9999-12-31T23:59:59")),
                (4, Value::from("2262-04-11T00:00:00")),
                (5, Value::from("9999-12-31T00:00:00")),
                (6, Value::Null),
            ],
            "{ts_type}"
        );
    }
}
