//! Where a chunk's files go: Hive-style partition paths (`col=value/…`, values
//! percent-encoded as Hive does, nulls as [`NULL_PARTITION`]) and the file names below
//! them. Names derive from the chunk id and the data alone, so a chunk run twice writes
//! the same keys.

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::ids::ChunkId;

/// Hive's name for a null (or empty) partition value.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Characters Hive escapes in partition values.
const HIVE_ESCAPE: &AsciiSet = &CONTROLS
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'\'')
    .add(b'*')
    .add(b'/')
    .add(b':')
    .add(b'=')
    .add(b'?')
    .add(b'\\')
    .add(b'{')
    .add(b'[')
    .add(b']')
    .add(b'^');

/// The Hive path segment for a partition value.
///
/// ```
/// assert_eq!(fanout::write::partition_segment("region", Some("EU/West")), "region=EU%2FWest");
/// assert_eq!(fanout::write::partition_segment("region", None), "region=__HIVE_DEFAULT_PARTITION__");
/// ```
pub fn partition_segment(column: &str, value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => format!(
            "{}={}",
            utf8_percent_encode(column, HIVE_ESCAPE),
            utf8_percent_encode(v, HIVE_ESCAPE)
        ),
        _ => format!(
            "{}={NULL_PARTITION}",
            utf8_percent_encode(column, HIVE_ESCAPE)
        ),
    }
}

/// The name of a chunk's `n`-th file in one partition: derived from the chunk id only,
/// so a retried chunk overwrites its own earlier files instead of adding to them.
pub(super) fn part_file_name(chunk_id: &ChunkId, n: usize) -> String {
    format!("part-{chunk_id}-{n:05}.parquet")
}

/// The key of the file `name` below the partition path `path` (empty when unpartitioned).
pub(super) fn object_key(path: &str, name: String) -> String {
    if path.is_empty() {
        name
    } else {
        format!("{path}/{name}")
    }
}
