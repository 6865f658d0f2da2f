//! The partitioned writer and its spill store, checked against an in-memory encoder.

use super::spill::{Spill, SpilledPages};
use super::*;
use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field};
use parquet::arrow::arrow_writer::{PageKey, PageStore};

fn rows() -> (SchemaRef, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batches = (0..8)
        .map(|b| {
            let ids: Vec<i64> = (b * 25_000..(b + 1) * 25_000).collect();
            let names: Vec<Option<String>> = ids
                .iter()
                .map(|i| (i % 7 != 0).then(|| format!("name-{}", i % 5_000)))
                .collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(names)),
                ],
            )
            .expect("batch")
        })
        .collect();
    (schema, batches)
}

/// Writes `rows()` through a [`PartitionedWriter`] whose pages may wait on the heap up
/// to `page_memory` bytes (the rest in the spill file) with `row_group_rows`, and
/// encodes them in memory with the same properties; also returns the bytes of the
/// pages that went through the spill file.
async fn spilled_and_in_memory(
    row_group_rows: usize,
    page_memory: usize,
) -> (Vec<u8>, Vec<u8>, u64) {
    let (schema, batches) = rows();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::store::FsStore::new(dir.path());
    let output = OutputSpec {
        location: crate::location::Location::parse(&dir.path().display().to_string())
            .expect("location"),
        partition_by: vec![],
        compression: OutputCompression::Zstd(1),
        row_group_rows,
        catalog: None,
        max_file_bytes: u64::MAX,
        target_file_bytes: None,
    };
    let mut w = PartitionedWriter::new(&output, &ChunkId::parse("c1").expect("id"), &schema)
        .expect("writer");
    w.spill.0.lock().memory_limit = page_memory;
    let spill = w.spill.0.clone();
    let mut spilled = 0;
    for b in &batches {
        w.write(b).expect("write");
        spilled = spilled.max(spill.lock().end);
    }
    let files = w.finish(&store, &|_| Ok(())).await.expect("write");
    assert_eq!(files.len(), 1);
    let f = spill.lock();
    assert_eq!((f.memory, f.held), (0, 0), "every page taken back");
    let written = std::fs::read(dir.path().join(&files[0].key)).expect("read");
    let props = writer_properties(OutputCompression::Zstd(1), row_group_rows).expect("props");
    let in_memory = encode_parquet(&schema, &batches, props).expect("encode");
    (written, in_memory.to_vec(), spilled)
}

#[tokio::test]
async fn pages_spilled_to_disk_give_the_bytes_of_an_in_memory_writer() {
    // 200,000 rows in pages of at most 20,000: each column went through the spill
    // file page by page, and came back in order.
    let (written, in_memory, spilled) = spilled_and_in_memory(1_000_000, 0).await;
    assert_eq!(written, in_memory);
    assert!(
        spilled as usize > written.len() / 2,
        "{spilled} bytes spilled"
    );
    // Some pages on the heap, the rest in the file; all of them on the heap.
    let (mixed, _, spilled) = spilled_and_in_memory(1_000_000, 100_000).await;
    assert_eq!(mixed, in_memory);
    assert!(spilled > 0 && (spilled as usize) < written.len() - 50_000);
    let (heap, _, spilled) = spilled_and_in_memory(1_000_000, PAGE_MEMORY_BYTES).await;
    assert_eq!(heap, in_memory);
    assert_eq!(spilled, 0);
}

#[tokio::test]
async fn row_groups_sharing_the_spill_file_give_the_bytes_of_an_in_memory_writer() {
    let (written, in_memory, _) = spilled_and_in_memory(30_000, 0).await;
    // Seven row groups: the spill file was emptied after each and used again.
    use parquet::file::reader::FileReader;
    let meta = parquet::file::reader::SerializedFileReader::new(Bytes::from(written.clone()))
        .expect("parquet");
    assert_eq!(meta.metadata().num_row_groups(), 7);
    assert_eq!(written, in_memory);
}

#[tokio::test]
async fn many_partitions_open_at_once_keep_whole_row_groups() {
    // 60 partitions of 16 columns each get rows from every batch: their encoders
    // together hold more than the budget, which must not cut their files into
    // row groups of a few rows.
    let mut fields = vec![Field::new("p", DataType::Int64, false)];
    fields.extend((0..15).map(|c| Field::new(format!("c{c}"), DataType::Utf8, false)));
    let schema = Arc::new(Schema::new(fields));
    let batches: Vec<RecordBatch> = (0..10)
        .map(|b| {
            let ids: Vec<i64> = (b * 30_000..(b + 1) * 30_000).collect();
            let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|i| i % 60),
            ))];
            for c in 0..15 {
                cols.push(Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| format!("value {c}-{i}")),
                )));
            }
            RecordBatch::try_new(schema.clone(), cols).expect("batch")
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::store::FsStore::new(dir.path());
    let output = OutputSpec {
        location: crate::location::Location::parse(&dir.path().display().to_string())
            .expect("location"),
        partition_by: vec!["p".into()],
        compression: OutputCompression::Zstd(1),
        row_group_rows: 1_000_000,
        catalog: None,
        max_file_bytes: u64::MAX,
        target_file_bytes: None,
    };
    let mut w = PartitionedWriter::new(&output, &ChunkId::parse("c1").expect("id"), &schema)
        .expect("writer");
    let mut peak = 0;
    for b in &batches {
        w.write(b).expect("write");
        let held: usize = w
            .parts
            .values()
            .filter_map(|p| p.open.as_ref())
            .map(|o| o.writer.memory_size())
            .sum();
        peak = peak.max(held);
    }
    // Flushing early would have kept this under the budget, in row groups of 500 rows.
    assert!(
        peak > ROW_GROUP_BUDGET_BYTES,
        "the case needs {peak} > the budget"
    );
    let files = w.finish(&store, &|_| Ok(())).await.expect("finish");
    assert_eq!(files.len(), 60);
    use parquet::file::reader::FileReader;
    for f in &files {
        let bytes = Bytes::from(std::fs::read(dir.path().join(&f.key)).expect("read"));
        let r = parquet::file::reader::SerializedFileReader::new(bytes).expect("parquet");
        assert_eq!(f.rows, 5_000);
        assert_eq!(r.metadata().num_row_groups(), 1, "{}", f.key);
    }
}

/// A spill file in `dir` keeping at most `memory_limit` bytes of pages on the heap.
fn spill_in(dir: &tempfile::TempDir, memory_limit: usize) -> Arc<Spill> {
    let spill = Spill::create(dir.path().join("0.spill")).expect("spill");
    spill.lock().memory_limit = memory_limit;
    spill
}

/// A column chunk's view of `spill`.
fn pages_of(spill: &Arc<Spill>) -> SpilledPages {
    SpilledPages::new(spill.clone())
}

#[test]
fn a_spill_file_returns_pages_by_key_and_is_emptied_by_the_last_take() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spill = spill_in(&dir, 0);
    let (mut a, mut b) = (pages_of(&spill), pages_of(&spill));
    let a0 = a.put(Bytes::from_static(b"first page of a")).expect("put");
    let b0 = b.put(Bytes::from_static(b"b")).expect("put");
    let a1 = a.put(Bytes::from_static(b"second page of a")).expect("put");
    let size = || std::fs::metadata(&spill.path).expect("metadata").len();
    assert_eq!(size(), 32);
    assert_eq!(&a.take(a1).expect("take")[..], b"second page of a");
    assert_eq!(&a.take(a0).expect("take")[..], b"first page of a");
    assert_eq!(size(), 32, "b's page is still held");
    assert_eq!(&b.take(b0).expect("take")[..], b"b");
    assert_eq!(size(), 0);
    // The file is reused from its start.
    let b1 = b.put(Bytes::from_static(b"again")).expect("put");
    assert_eq!(size(), 5);
    assert_eq!(&b.take(b1).expect("take")[..], b"again");
    assert!(a.take(PageKey::new(7)).is_err());
    assert!(a.take(a0).is_err(), "a page is taken once");
    // A column chunk dropped with pages still waiting gives them up.
    let mut c = pages_of(&spill);
    c.put(Bytes::from_static(b"never taken")).expect("put");
    assert_eq!(size(), 11);
    drop(c);
    assert_eq!(size(), 0);
}

#[test]
fn pages_wait_on_the_heap_up_to_its_limit_and_in_the_file_past_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spill = spill_in(&dir, 20);
    let mut a = pages_of(&spill);
    let size = || std::fs::metadata(&spill.path).expect("metadata").len();
    let a0 = a.put(Bytes::from_static(b"sixteen bytes...")).expect("put");
    let a1 = a.put(Bytes::from_static(b"five!")).expect("put");
    let a2 = a.put(Bytes::from_static(b"four")).expect("put");
    assert_eq!(
        (spill.lock().memory, size()),
        (20, 5),
        "the second page spilled"
    );
    assert_eq!(&a.take(a1).expect("take")[..], b"five!");
    assert_eq!(size(), 0);
    assert_eq!(&a.take(a0).expect("take")[..], b"sixteen bytes...");
    assert_eq!(spill.lock().memory, 4);
    let a3 = a.put(Bytes::from_static(b"heap again!!")).expect("put");
    assert_eq!((spill.lock().memory, size()), (16, 0));
    assert_eq!(&a.take(a2).expect("take")[..], b"four");
    assert_eq!(&a.take(a3).expect("take")[..], b"heap again!!");
    assert_eq!(spill.lock().memory, 0);
    // A column chunk dropped with pages still waiting gives the heap back too.
    a.put(Bytes::from_static(b"never taken")).expect("put");
    a.put(Bytes::from_static(b"never taken either"))
        .expect("put");
    assert_eq!((spill.lock().memory, size()), (11, 18));
    drop(a);
    assert_eq!((spill.lock().memory, size()), (0, 0));
}

#[test]
fn the_key_limit_counts_the_s3_prefix_and_the_longest_file_name() {
    let id = ChunkId::parse("0a1b2c3d4e5f60718293").expect("id");
    let file = 1 + hive::part_file_name(&id, usize::MAX).len();
    for (prefix, taken) in [("", 0), ("out/orders", 11), ("out/orders/", 11)] {
        let loc = crate::location::Location::S3 {
            bucket: "b".into(),
            prefix: prefix.into(),
        };
        let limit = KeyLimit::new(&loc, &id);
        let max = S3_MAX_KEY_BYTES - taken - file;
        assert_eq!(limit.path_bytes(), max, "{prefix:?}");
        // At the limit the longest key is exactly S3's 1,024 bytes.
        let path = format!("p={}", "x".repeat(max - 2));
        let key = format!(
            "{prefix}{}{path}/{}",
            if prefix.is_empty() || prefix.ends_with('/') {
                ""
            } else {
                "/"
            },
            hive::part_file_name(&id, usize::MAX)
        );
        assert_eq!(key.len(), S3_MAX_KEY_BYTES);
        assert_eq!(limit.path_problem(&path), None);
        assert!(limit.path_problem(&format!("{path}x")).is_some());
        // S3 has no limit of its own per folder name.
        assert_eq!(limit.segment_problem(&"y".repeat(900)), None);
    }
}

#[test]
fn the_local_key_limit_is_a_file_name_and_a_path_from_the_root() {
    let id = ChunkId::parse("c1").expect("id");
    let root = "/tmp/somewhere/out";
    let limit = KeyLimit::new(&crate::location::Location::Local(root.into()), &id);
    let name = "x".repeat(LOCAL_MAX_NAME_BYTES);
    assert_eq!(limit.segment_problem(&name), None);
    assert!(limit.segment_problem(&format!("{name}x")).is_some());
    let file = 1 + hive::part_file_name(&id, usize::MAX).len();
    assert_eq!(
        limit.path_bytes(),
        LOCAL_MAX_PATH_BYTES - root.len() - 1 - file
    );
}

/// A writer below a local folder for rows (id, p, q) partitioned by `p` and `q`.
fn two_level_writer(dir: &tempfile::TempDir) -> (PartitionedWriter, SchemaRef) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("p", DataType::Utf8, true),
        Field::new("q", DataType::Utf8, true),
    ]));
    let output = OutputSpec {
        location: crate::location::Location::Local(dir.path().to_path_buf()),
        partition_by: vec!["p".into(), "q".into()],
        compression: OutputCompression::Zstd(1),
        row_group_rows: 1000,
        catalog: None,
        max_file_bytes: u64::MAX,
        target_file_bytes: None,
    };
    let w = PartitionedWriter::new(&output, &ChunkId::parse("c1").expect("id"), &schema)
        .expect("writer");
    (w, schema)
}

#[tokio::test]
async fn a_row_whose_partition_path_cannot_be_a_key_is_set_aside_and_the_rest_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, schema) = two_level_writer(&dir);
    // Row 1's `q` is over a file name; row 3's value escapes to 3 bytes a `/`, past it.
    // (The whole local path, 4,095 bytes, would take some 16 such names: the limit's
    // arithmetic is checked above.)
    let q_over = "q".repeat(LOCAL_MAX_NAME_BYTES);
    let slashes = "/".repeat(100);
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![0, 1, 2, 3])),
            Arc::new(StringArray::from(vec![
                Some("a"),
                Some("a"),
                Some("b"),
                Some("c"),
            ])),
            Arc::new(StringArray::from(vec![
                Some("x"),
                Some(q_over.as_str()),
                None,
                Some(slashes.as_str()),
            ])),
        ],
    )
    .expect("batch");
    w.write(&batch).expect("write");
    assert_eq!(w.rows(), 2);
    let rejects = w.take_rejects();
    let ids: Vec<String> = rejects
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.raw).expect("json")["id"].to_string())
        .collect();
    assert_eq!(ids, ["\"1\"", "\"3\""]);
    assert!(rejects.iter().all(|r| r.column == "q"), "{rejects:?}");
    let m = &rejects[0].message;
    assert!(
        m.contains("(255 bytes)") && m.contains("take 257 bytes"),
        "{m}"
    );
    let m = &rejects[1].message;
    assert!(
        m.contains("(100 bytes)") && m.contains("take 302 bytes"),
        "{m}"
    );
    let files = w
        .finish(&crate::store::FsStore::new(dir.path()), &|_| Ok(()))
        .await
        .expect("finish");
    let keys: Vec<&str> = files.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "p=a/q=x/part-c1-00000.parquet",
            "p=b/q=__HIVE_DEFAULT_PARTITION__/part-c1-00000.parquet"
        ]
    );
}

/// The ids in the Parquet file at `path`, in file order.
fn ids_in(path: &std::path::Path) -> Vec<i64> {
    let f = std::fs::File::open(path).expect("open");
    parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(f, 1024)
        .expect("reader")
        .flat_map(|b| {
            let b = b.expect("batch");
            let ids = b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("ids");
            ids.values().to_vec()
        })
        .collect()
}

#[tokio::test]
async fn interleaved_partitions_keep_their_rows_in_order_and_a_set_aside_one_takes_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, schema) = two_level_writer(&dir);
    let q_over = "q".repeat(LOCAL_MAX_NAME_BYTES);
    // Three partitions taking turns row by row, a fourth whose path is too long among
    // them, then a batch of one partition (written without a copy).
    let mut expected: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (ids, ps, qs) in [
        (
            vec![0i64, 1, 2, 3, 4, 5, 6, 7],
            vec!["a", "b", "a", "c", "b", "a", "a", "c"],
            vec!["x", "x", "x", "y", "x", q_over.as_str(), "x", "y"],
        ),
        (vec![8, 9], vec!["b", "b"], vec!["x", "x"]),
    ] {
        for ((id, p), q) in ids.iter().zip(&ps).zip(&qs) {
            if q.len() < LOCAL_MAX_NAME_BYTES {
                let key = match (*p, *q) {
                    ("a", _) => "p=a/q=x/part-c1-00000.parquet",
                    ("b", _) => "p=b/q=x/part-c1-00000.parquet",
                    _ => "p=c/q=y/part-c1-00000.parquet",
                };
                expected.entry(key).or_default().push(*id);
            }
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(ps)),
                Arc::new(StringArray::from(qs)),
            ],
        )
        .expect("batch");
        w.write(&batch).expect("write");
    }
    assert_eq!(w.rows(), 9);
    assert_eq!(w.take_rejects().len(), 1);
    let files = w
        .finish(&crate::store::FsStore::new(dir.path()), &|_| Ok(()))
        .await
        .expect("finish");
    let written: BTreeMap<&str, Vec<i64>> = files
        .iter()
        .map(|f| (f.key.as_str(), ids_in(&dir.path().join(&f.key))))
        .collect();
    assert_eq!(written, expected);
    assert!(
        files
            .iter()
            .all(|f| f.rows as usize == expected[f.key.as_str()].len())
    );
}
