//! The Parquet codecs this build decodes and encodes.
//!
//! parquet-rs compiles each codec behind a cargo feature, and a writer asked for one it
//! was built without panics (`Disabled feature at compile time: lz4`) in every chunk. So
//! a codec is checked here before it is used: the spec refuses an output codec this build
//! cannot write, the writer refuses one too (for tables it builds itself), and the reader
//! refuses an object whose footer names one it cannot decode, naming the object, before
//! any page is read. The list follows the `parquet` features of the root `Cargo.toml`;
//! the tests below round-trip a table through every codec listed, so dropping a feature
//! fails them rather than a job.

use parquet::basic::Compression;

/// Whether this build decodes and encodes Parquet pages compressed with `codec`.
///
/// ```
/// use parquet::basic::Compression;
/// assert!(fanout::codec::is_built(Compression::LZ4_RAW));
/// assert!(!fanout::codec::is_built(Compression::LZO));
/// ```
pub fn is_built(codec: Compression) -> bool {
    // An exhaustive match: a codec parquet-rs adds later is refused until listed here.
    match codec {
        Compression::UNCOMPRESSED
        | Compression::SNAPPY
        | Compression::GZIP(_)
        | Compression::LZ4
        | Compression::LZ4_RAW
        | Compression::ZSTD(_)
        | Compression::BROTLI(_) => true,
        // parquet-rs has no LZO codec at all.
        Compression::LZO => false,
    }
}

/// The names of the codecs this build decodes, for messages.
pub const BUILT_NAMES: &str =
    "uncompressed, snappy, gzip, lz4 (Hadoop-framed), lz4_raw, zstd, brotli";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use bytes::Bytes;
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
    use parquet::file::properties::WriterProperties;

    use super::is_built;

    fn round_trip(codec: Compression) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..1000)),
                Arc::new(StringArray::from_iter_values(
                    (0..1000).map(|i| format!("row {}", i % 7)),
                )),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder().set_compression(codec).build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(out))
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let read = arrow::compute::concat_batches(&batch.schema(), &batches).unwrap();
        assert_eq!(read, batch, "{codec}");
    }

    #[test]
    fn every_codec_listed_as_built_round_trips() {
        let codecs = [
            Compression::UNCOMPRESSED,
            Compression::SNAPPY,
            Compression::GZIP(GzipLevel::default()),
            Compression::LZ4,
            Compression::LZ4_RAW,
            Compression::ZSTD(ZstdLevel::default()),
            Compression::BROTLI(BrotliLevel::default()),
        ];
        for c in codecs {
            assert!(is_built(c), "{c}");
            round_trip(c);
        }
    }

    #[test]
    fn lzo_is_not_built() {
        assert!(!is_built(Compression::LZO));
    }
}
