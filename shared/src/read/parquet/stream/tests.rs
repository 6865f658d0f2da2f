//! The streaming reader over files written by parquet-rs, in a local directory.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use super::{MAX_BATCH_ROWS, ParquetPieceReader, TARGET_BATCH_BYTES};
use crate::plan::Piece;
use crate::read::Decoded;
use crate::store::{FsStore, ObjectStore};

/// `rows` rows (`id` = row number, `name` of `width` bytes) in row groups of `group_rows`.
fn write(dir: &std::path::Path, rows: i64, group_rows: usize, width: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows))
        .build();
    let file = std::fs::File::create(dir.join("t.parquet")).unwrap();
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
    for start in (0..rows).step_by(1000) {
        let ids = start..(start + 1000).min(rows);
        let names = ids.clone().map(|i| format!("{i:0>width$}"));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(ids)) as ArrayRef,
                Arc::new(StringArray::from_iter_values(names)),
            ],
        )
        .unwrap();
        w.write(&batch).unwrap();
    }
    w.close().unwrap();
}

fn spec(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, t)| Field::new(*n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

async fn piece(store: &FsStore, row_groups: Option<Vec<usize>>) -> Piece {
    let m = store.head("t.parquet").await.unwrap().unwrap();
    match row_groups {
        None => Piece::Object {
            key: m.key,
            etag: m.etag,
            size: m.size,
        },
        Some(row_groups) => Piece::RowGroups {
            key: m.key,
            etag: m.etag,
            size: m.size,
            row_groups,
            first_row: 0,
        },
    }
}

/// Every batch of the piece, and the bytes fetched.
async fn read_all(store: &FsStore, piece: &Piece, schema: &SchemaRef) -> (Vec<Decoded>, u64) {
    let mut r = ParquetPieceReader::open(store, piece, schema)
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(d) = r.next().await.unwrap() {
        out.push(d);
    }
    let fetched = r.bytes_fetched();
    assert_eq!(out.iter().map(|d| d.bytes_read).sum::<u64>(), fetched);
    (out, fetched)
}

fn ids(batches: &[Decoded]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|d| {
            let c = d.batch.column(0).as_primitive::<Int64Type>();
            c.values().to_vec()
        })
        .collect()
}

#[tokio::test]
async fn a_piece_streams_in_bounded_batches_numbered_by_row_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 50_000, 10_000, 8);
    let store = FsStore::new(dir.path());
    let schema = spec(&[("name", DataType::Utf8), ("id", DataType::Int64)]);
    let whole = piece(&store, None).await;
    let (batches, _) = read_all(&store, &whole, &schema).await;
    // Columns come in the spec's order.
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|d| {
            d.batch
                .column(1)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(ids, (0..50_000).collect::<Vec<_>>());
    for d in &batches {
        assert!(
            d.batch.num_rows() <= MAX_BATCH_ROWS,
            "{}",
            d.batch.num_rows()
        );
        assert_eq!(d.origins.len(), d.batch.num_rows());
        let col = d.batch.column(1).as_primitive::<Int64Type>();
        for (o, id) in d.origins.iter().zip(col.values()) {
            assert_eq!(o.row, *id as u64);
        }
    }
    let two = piece(&store, Some(vec![2, 3])).await;
    let (batches, fetched) = read_all(&store, &two, &schema).await;
    let rows: Vec<u64> = batches
        .iter()
        .flat_map(|d| d.origins.iter().map(|o| o.row))
        .collect();
    assert_eq!(rows, (20_000..40_000).collect::<Vec<_>>());
    let size = std::fs::metadata(dir.path().join("t.parquet"))
        .unwrap()
        .len();
    assert!(fetched < size * 6 / 10, "{fetched} of {size}");
}

#[tokio::test]
async fn only_the_spec_columns_are_fetched() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 20_000, 10_000, 64);
    let store = FsStore::new(dir.path());
    let whole = piece(&store, None).await;
    let schema = spec(&[("id", DataType::Int64)]);
    let (batches, fetched) = read_all(&store, &whole, &schema).await;
    assert_eq!(ids(&batches), (0..20_000).collect::<Vec<_>>());
    let bytes = std::fs::read(dir.path().join("t.parquet")).unwrap();
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&bytes::Bytes::from(bytes.clone()))
        .unwrap();
    let id_bytes: u64 = super::super::projected_row_group_bytes(&meta, &schema)
        .iter()
        .sum();
    let footer = (bytes.len() as u64).min(super::super::FOOTER_GUESS);
    assert_eq!(fetched, footer + id_bytes);
    assert!(fetched < bytes.len() as u64 / 2);
}

#[tokio::test]
async fn wide_rows_come_in_fewer_rows_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let width = 32 * 1024;
    write(dir.path(), 600, 600, width);
    let store = FsStore::new(dir.path());
    let whole = piece(&store, None).await;
    let schema = spec(&[("id", DataType::Int64), ("name", DataType::Utf8)]);
    let (batches, _) = read_all(&store, &whole, &schema).await;
    assert_eq!(ids(&batches), (0..600).collect::<Vec<_>>());
    for d in &batches {
        assert!(d.batch.num_rows() <= TARGET_BATCH_BYTES as usize / width);
        let held: usize = d
            .batch
            .columns()
            .iter()
            .map(|c| c.get_array_memory_size())
            .sum();
        assert!(held as u64 <= 2 * TARGET_BATCH_BYTES, "{held}");
    }
}

#[tokio::test]
async fn a_file_without_a_spec_column_rejects_every_row_in_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 25_000, 10_000, 4);
    let store = FsStore::new(dir.path());
    let two = piece(&store, Some(vec![1, 2])).await;
    let schema = spec(&[("id", DataType::Int64), ("missing", DataType::Utf8)]);
    let (batches, fetched) = read_all(&store, &two, &schema).await;
    let rows: Vec<u64> = batches
        .iter()
        .flat_map(|d| d.rejects.iter().map(|r| r.origin.row))
        .collect();
    assert_eq!(rows, (10_000..25_000).collect::<Vec<_>>());
    for d in &batches {
        assert_eq!(d.batch.num_rows(), 0);
        assert!(d.rejects.len() <= MAX_BATCH_ROWS);
        assert!(d.rejects.iter().all(|r| r.rule == "schema"));
    }
    assert!(
        batches[0].rejects[0]
            .message
            .contains("lacks column(s) missing")
    );
    // The footer only.
    let size = std::fs::metadata(dir.path().join("t.parquet"))
        .unwrap()
        .len();
    assert_eq!(fetched, size.min(super::super::FOOTER_GUESS));
}

#[tokio::test]
async fn a_file_replaced_after_its_footer_was_read_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 20_000, 10_000, 8);
    let store = FsStore::new(dir.path());
    let whole = piece(&store, None).await;
    let schema = spec(&[("id", DataType::Int64)]);
    let mut r = ParquetPieceReader::open(&store, &whole, &schema)
        .await
        .unwrap();
    // Another version (another size) of the same object.
    write(dir.path(), 20_001, 10_000, 8);
    let e = r.next().await.unwrap_err();
    assert!(
        matches!(&e, crate::Error::Store(crate::store::StoreError::Changed { key, .. }) if key == "t.parquet"),
        "{e}"
    );
}
