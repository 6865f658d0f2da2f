//! Where a chunk's files go: Hive-style partition paths (`col=value/…`, values escaped as
//! Hive does, nulls as [`NULL_PARTITION`]) and the file names below them. Names derive
//! from the chunk id and the data alone, so a chunk run twice writes the same keys.

use crate::ids::ChunkId;
use crate::location::Location;

/// Hive's name for a null (or empty) partition value.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The longest object key S3 accepts, in bytes of UTF-8.
pub const S3_MAX_KEY_BYTES: usize = 1024;

/// The longest file or folder name a local file system takes (Linux `NAME_MAX`).
pub const LOCAL_MAX_NAME_BYTES: usize = 255;

/// The longest path a local file system call takes (Linux `PATH_MAX`, 4,096 with the
/// terminating NUL).
pub const LOCAL_MAX_PATH_BYTES: usize = 4095;

/// Whether Hive escapes the ASCII character `c` in a path name: controls, DEL and
/// `"#%'*/:=?\{[]^` (Hive's and Spark's `escapePathName`). Everything else, non-ASCII
/// included, stays as it is: Spark and Hive decode `%XX` one byte to one character, so an
/// escaped UTF-8 sequence would read back garbled there, while pyarrow, DuckDB and polars
/// read raw UTF-8 and escapes alike.
fn hive_escapes(c: char) -> bool {
    c.is_ascii_control()
        || matches!(
            c,
            '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^'
        )
}

/// `s` escaped as Hive escapes a path name.
fn escape_path_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if hive_escapes(c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The Hive path segment for a partition value.
///
/// ```
/// assert_eq!(fanout::write::partition_segment("region", Some("EU/West")), "region=EU%2FWest");
/// assert_eq!(fanout::write::partition_segment("city", Some("Zürich 1%")), "city=Zürich 1%25");
/// assert_eq!(fanout::write::partition_segment("region", None), "region=__HIVE_DEFAULT_PARTITION__");
/// ```
pub fn partition_segment(column: &str, value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => {
            format!("{}={}", escape_path_name(column), escape_path_name(v))
        }
        _ => format!("{}={NULL_PARTITION}", escape_path_name(column)),
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

/// How long a partition path may be for its files' keys to be storable at the output
/// location: S3's key limit counts the location's prefix and the file name; a local folder
/// limits each name and the whole path from the root as given.
#[derive(Debug, Clone)]
pub(super) struct KeyLimit {
    /// Bytes the partition path may take.
    path_bytes: usize,
    /// Bytes one segment may take (`None`: no limit of its own).
    segment_bytes: Option<usize>,
}

impl KeyLimit {
    /// The limit for chunk `chunk_id`'s files below `location`. The file name is counted
    /// at its longest (the widest file number), so a partition's later files fit too;
    /// that also covers the local store's temporary names, which are shorter.
    pub(super) fn new(location: &Location, chunk_id: &ChunkId) -> Self {
        let file = 1 + part_file_name(chunk_id, usize::MAX).len();
        match location {
            Location::S3 { prefix, .. } => {
                let prefix = if prefix.is_empty() || prefix.ends_with('/') {
                    prefix.len()
                } else {
                    prefix.len() + 1
                };
                KeyLimit {
                    path_bytes: S3_MAX_KEY_BYTES.saturating_sub(prefix + file),
                    segment_bytes: None,
                }
            }
            Location::Local(root) => KeyLimit {
                path_bytes: LOCAL_MAX_PATH_BYTES.saturating_sub(root.as_os_str().len() + 1 + file),
                segment_bytes: Some(LOCAL_MAX_NAME_BYTES),
            },
        }
    }

    /// Why `segment` (one `col=value`) cannot be a name here, if it cannot.
    pub(super) fn segment_problem(&self, segment: &str) -> Option<String> {
        match self.segment_bytes {
            Some(max) if segment.len() > max => Some(format!(
                "its folder name `col=value` would take {} bytes, over the {max} a local file name may take",
                segment.len()
            )),
            _ => None,
        }
    }

    /// Why the partition path `path` cannot hold files here, if it cannot.
    pub(super) fn path_problem(&self, path: &str) -> Option<String> {
        (path.len() > self.path_bytes).then(|| {
            format!(
                "its partition path would take {} bytes, over the {} left for it by the output \
                 location and the file name",
                path.len(),
                self.path_bytes
            )
        })
    }

    /// Bytes the partition path may take.
    pub(super) fn path_bytes(&self) -> usize {
        self.path_bytes
    }
}
