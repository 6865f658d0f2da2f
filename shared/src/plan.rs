//! Pure chunk planning: object sizes in, chunks out, no I/O.
//!
//! The rules (DESIGN.md, "Chunking rules"):
//! - an uncompressed line-oriented object (CSV without multiline fields, JSON lines)
//!   larger than the target is cut into byte ranges of about the target size; a range
//!   owns the records that start inside it ([`crate::read::lines`]);
//! - a Parquet object larger than the target is cut between row groups;
//! - compressed objects, multiline CSV and anything smaller than the target are whole;
//!   small whole objects are packed together up to the target size, the object cap and
//!   the room a queue message leaves for the chunk's pieces ([`Sizing`]).
//!
//! Objects are visited in key order, so the same listing always gives the same chunks,
//! and a chunk's id is a hash of the job id and what the chunk reads.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{ChunkId, JobId};

/// Chunks per plan shard: a plan of 100k+ chunks is written as many small objects, so no
/// reader holds one huge JSON document.
pub const SHARD_CHUNKS: u64 = 1000;

/// How an object may be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// By byte ranges at line starts.
    Lines,
    /// Not at all.
    Whole,
    /// Between row groups; each entry is one row group's (rows, compressed bytes).
    RowGroups(Vec<(u64, u64)>),
}

/// An input object as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanObject {
    /// Key below the input location.
    pub key: String,
    /// Version tag.
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
    /// How it may be split.
    pub split: Split,
}

/// What one chunk reads from one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Piece {
    /// The whole object.
    Object {
        /// Key below the input location.
        key: String,
        /// Version tag at planning time.
        etag: String,
        /// Size at planning time.
        size: u64,
    },
    /// The records that start in `[start, end)`.
    Range {
        /// Key.
        key: String,
        /// Version tag.
        etag: String,
        /// Object size.
        size: u64,
        /// First byte owned.
        start: u64,
        /// One past the last byte owned.
        end: u64,
    },
    /// Some row groups of a Parquet object.
    RowGroups {
        /// Key.
        key: String,
        /// Version tag.
        etag: String,
        /// Object size.
        size: u64,
        /// Row group indexes, ascending.
        row_groups: Vec<usize>,
        /// Index of the first row of the first group in the file.
        first_row: u64,
    },
}

impl Piece {
    /// The object key.
    pub fn key(&self) -> &str {
        match self {
            Piece::Object { key, .. } | Piece::Range { key, .. } | Piece::RowGroups { key, .. } => {
                key
            }
        }
    }

    /// The object's version tag.
    pub fn etag(&self) -> &str {
        match self {
            Piece::Object { etag, .. }
            | Piece::Range { etag, .. }
            | Piece::RowGroups { etag, .. } => etag,
        }
    }

    /// The object's size at planning.
    pub fn object_size(&self) -> u64 {
        match self {
            Piece::Object { size, .. }
            | Piece::Range { size, .. }
            | Piece::RowGroups { size, .. } => *size,
        }
    }

    /// An upper bound of the size of this piece's JSON in a chunk message (what
    /// `serde_json` writes for it): the fixed text of its variant, its strings as JSON
    /// escapes them and its numbers in decimal. Computed, not serialized, so planning a
    /// million objects costs no million serializations.
    ///
    /// ```
    /// use fanout::plan::Piece;
    /// let p = Piece::Object { key: "a \"b\".csv".into(), etag: "\"e1\"".into(), size: 42 };
    /// assert!(p.json_bytes() >= serde_json::to_string(&p).unwrap().len());
    /// ```
    pub fn json_bytes(&self) -> usize {
        match self {
            Piece::Object { key, etag, size } => {
                r#"{"kind":"object","key":,"etag":,"size":}"#.len()
                    + json_string_bytes(key)
                    + json_string_bytes(etag)
                    + decimal_digits(*size)
            }
            Piece::Range {
                key,
                etag,
                size,
                start,
                end,
            } => {
                r#"{"kind":"range","key":,"etag":,"size":,"start":,"end":}"#.len()
                    + json_string_bytes(key)
                    + json_string_bytes(etag)
                    + decimal_digits(*size)
                    + decimal_digits(*start)
                    + decimal_digits(*end)
            }
            Piece::RowGroups {
                key,
                etag,
                size,
                row_groups,
                first_row,
            } => {
                // One separator fewer than indexes.
                row_groups_json_base(key, etag, *size, *first_row)
                    + row_groups
                        .iter()
                        .map(|g| decimal_digits(*g as u64) + 1)
                        .sum::<usize>()
                    - usize::from(!row_groups.is_empty())
            }
        }
    }

    /// Bytes this piece covers (approximate for row groups).
    pub fn bytes(&self) -> u64 {
        match self {
            Piece::Object { size, .. } => *size,
            Piece::Range { start, end, .. } => end - start,
            Piece::RowGroups { size, .. } => *size,
        }
    }

    /// Feeds what identifies the piece to `h`: its kind, key, version and what it reads,
    /// NUL-separated, numbers in decimal (the bytes every chunk id has been made of).
    fn hash_identity(&self, h: &mut Sha256) {
        use std::io::Write;
        let mut n = Vec::with_capacity(24);
        let mut number = |h: &mut Sha256, before: &[u8], v: u64| {
            n.clear();
            let _ = write!(n, "{v}");
            h.update(before);
            h.update(&n);
        };
        match self {
            Piece::Object { key, etag, .. } => {
                h.update(b"object\0");
                h.update(key.as_bytes());
                h.update(b"\0");
                h.update(etag.as_bytes());
            }
            Piece::Range {
                key,
                etag,
                start,
                end,
                ..
            } => {
                h.update(b"range\0");
                h.update(key.as_bytes());
                h.update(b"\0");
                h.update(etag.as_bytes());
                number(h, b"\0", *start);
                number(h, b"\0", *end);
            }
            Piece::RowGroups {
                key,
                etag,
                row_groups,
                ..
            } => {
                h.update(b"row_groups\0");
                h.update(key.as_bytes());
                h.update(b"\0");
                h.update(etag.as_bytes());
                for (i, g) in row_groups.iter().enumerate() {
                    number(h, if i == 0 { b"\0" } else { b"," }, *g as u64);
                }
                if row_groups.is_empty() {
                    h.update(b"\0");
                }
            }
        }
    }
}

/// Bytes of `s` as a JSON string: its quotes, and `"`, `\\` and control characters escaped
/// (two bytes, or six for a `\u00XX` escape); everything else, UTF-8 included, as is.
fn json_string_bytes(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

fn decimal_digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// A row-groups piece's JSON without its group indexes and their separators.
fn row_groups_json_base(key: &str, etag: &str, size: u64, first_row: u64) -> usize {
    r#"{"kind":"row_groups","key":,"etag":,"size":,"row_groups":[],"first_row":}"#.len()
        + json_string_bytes(key)
        + json_string_bytes(etag)
        + decimal_digits(size)
        + decimal_digits(first_row)
}

/// An upper bound of the size of the JSON array of `pieces` in a chunk message (one
/// separator per piece: one more than the array has).
///
/// ```
/// use fanout::plan::{pieces_json_bytes, Piece};
/// let p = vec![Piece::Object { key: "a.csv".into(), etag: "e".into(), size: 1 }; 3];
/// assert!(pieces_json_bytes(&p) >= serde_json::to_string(&p).unwrap().len());
/// ```
pub fn pieces_json_bytes(pieces: &[Piece]) -> usize {
    "[]".len() + pieces.iter().map(|p| p.json_bytes() + 1).sum::<usize>()
}

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Deterministic id: a hash of the job id and the pieces.
    pub id: ChunkId,
    /// Position in the plan.
    pub index: u64,
    /// What it reads.
    pub pieces: Vec<Piece>,
    /// Input bytes covered.
    pub bytes: u64,
}

/// Chunk sizing for [`plan_chunks`].
#[derive(Debug, Clone, Copy)]
pub struct Sizing {
    /// Target bytes per chunk.
    pub target_bytes: u64,
    /// Most whole objects packed into one chunk.
    pub max_objects_per_chunk: usize,
    /// Most bytes the JSON of one chunk's pieces ([`pieces_json_bytes`]) may take: the
    /// queue's message size limit less the rest of the chunk's message. Packed chunks and
    /// row-group runs are closed before they would exceed it.
    pub max_pieces_json_bytes: usize,
}

/// The id of a chunk reading `pieces` in job `job_id`.
///
/// ```
/// use fanout::ids::JobId;
/// use fanout::plan::{chunk_id, Piece};
/// let p = vec![Piece::Object { key: "a.csv".into(), etag: "e1".into(), size: 10 }];
/// let (job, other) = (JobId::parse("job").unwrap(), JobId::parse("other-job").unwrap());
/// assert_eq!(chunk_id(&job, &p), chunk_id(&job, &p));
/// assert_ne!(chunk_id(&job, &p), chunk_id(&other, &p));
/// ```
pub fn chunk_id(job_id: &JobId, pieces: &[Piece]) -> ChunkId {
    let mut h = Sha256::new();
    h.update(job_id.as_bytes());
    for p in pieces {
        h.update(b"\n");
        p.hash_identity(&mut h);
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = h.finalize();
    let mut id = String::with_capacity(20);
    for b in &d[..10] {
        id.push(HEX[usize::from(b >> 4)] as char);
        id.push(HEX[usize::from(b & 15)] as char);
    }
    ChunkId::from_trusted(id)
}

/// Cuts `objects` into chunks.
///
/// ```
/// use fanout::ids::JobId;
/// use fanout::plan::{plan_chunks, PlanObject, Sizing, Split};
/// let objects = vec![
///     PlanObject { key: "big.csv".into(), etag: "1".into(), size: 250, split: Split::Lines },
///     PlanObject { key: "s1.csv".into(), etag: "2".into(), size: 40, split: Split::Lines },
///     PlanObject { key: "s2.csv".into(), etag: "3".into(), size: 40, split: Split::Lines },
/// ];
/// let sizing = Sizing { target_bytes: 100, max_objects_per_chunk: 10, max_pieces_json_bytes: 256 * 1024 };
/// let chunks = plan_chunks(&JobId::parse("job").unwrap(), objects, sizing);
/// // big.csv in three ranges, the two small objects packed into one chunk.
/// assert_eq!(chunks.len(), 4);
/// assert_eq!(chunks.iter().map(|c| c.bytes).sum::<u64>(), 330);
/// ```
pub fn plan_chunks(job_id: &JobId, mut objects: Vec<PlanObject>, sizing: Sizing) -> Vec<Chunk> {
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let target = sizing.target_bytes.max(1);
    let mut out: Vec<Vec<Piece>> = Vec::new();
    // A chunk of one piece may still exceed `max_pieces_json_bytes` on its own; the
    // planner refuses it. It cannot happen with S3 input at the default limit: a key is at
    // most 1 KiB (6 KiB escaped), a message 256 KiB.
    let max_json = sizing.max_pieces_json_bytes;
    let mut pack: Vec<Piece> = Vec::new();
    let mut pack_bytes = 0u64;
    let mut pack_json = "[]".len();
    let flush = |pack: &mut Vec<Piece>,
                 pack_bytes: &mut u64,
                 pack_json: &mut usize,
                 out: &mut Vec<Vec<Piece>>| {
        if !pack.is_empty() {
            out.push(std::mem::take(pack));
            *pack_bytes = 0;
            *pack_json = "[]".len();
        }
    };
    for o in objects {
        let whole = |o: PlanObject| Piece::Object {
            key: o.key,
            etag: o.etag,
            size: o.size,
        };
        match &o.split {
            Split::Lines if o.size > target => {
                let n = o.size.div_ceil(target);
                for i in 0..n {
                    let start = i * o.size / n;
                    let end = (i + 1) * o.size / n;
                    out.push(vec![Piece::Range {
                        key: o.key.clone(),
                        etag: o.etag.clone(),
                        size: o.size,
                        start,
                        end,
                    }]);
                }
            }
            Split::RowGroups(groups) if o.size > target && groups.len() > 1 => {
                let mut current: Vec<usize> = Vec::new();
                let mut current_bytes = 0u64;
                let mut first_row = 0u64;
                let mut row = 0u64;
                // The piece's JSON with the first row and size at their widest, so the
                // bound holds whatever they end up being.
                let base =
                    "[]".len() + 1 + row_groups_json_base(&o.key, &o.etag, u64::MAX, u64::MAX);
                let mut current_json = base;
                for (i, (rows, bytes)) in groups.iter().enumerate() {
                    let index_json = decimal_digits(i as u64) + 1;
                    if !current.is_empty()
                        && (current_bytes + bytes > target || current_json + index_json > max_json)
                    {
                        out.push(vec![Piece::RowGroups {
                            key: o.key.clone(),
                            etag: o.etag.clone(),
                            size: current_bytes,
                            row_groups: std::mem::take(&mut current),
                            first_row,
                        }]);
                        current_bytes = 0;
                        current_json = base;
                    }
                    if current.is_empty() {
                        first_row = row;
                    }
                    current.push(i);
                    current_bytes += bytes;
                    current_json += index_json;
                    row += rows;
                }
                if !current.is_empty() {
                    out.push(vec![Piece::RowGroups {
                        key: o.key.clone(),
                        etag: o.etag.clone(),
                        size: current_bytes,
                        row_groups: current,
                        first_row,
                    }]);
                }
            }
            _ if o.size >= target => out.push(vec![whole(o)]),
            _ => {
                let piece = whole(o);
                let piece_json = piece.json_bytes() + 1;
                if pack_bytes + piece.bytes() > target
                    || pack.len() >= sizing.max_objects_per_chunk
                    || pack_json + piece_json > max_json
                {
                    flush(&mut pack, &mut pack_bytes, &mut pack_json, &mut out);
                }
                pack_bytes += piece.bytes();
                pack_json += piece_json;
                pack.push(piece);
            }
        }
    }
    flush(&mut pack, &mut pack_bytes, &mut pack_json, &mut out);
    out.into_iter()
        .enumerate()
        .map(|(i, pieces)| Chunk {
            id: chunk_id(job_id, &pieces),
            index: i as u64,
            bytes: pieces.iter().map(Piece::bytes).sum(),
            pieces,
        })
        .collect()
}

#[cfg(test)]
mod tests;
