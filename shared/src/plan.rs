//! Pure chunk planning: object sizes in, chunks out, no I/O.
//!
//! The rules (DESIGN.md, "Chunking rules"):
//! - an uncompressed line-oriented object (CSV without multiline fields, JSON lines)
//!   larger than the target is cut into byte ranges of about the target size; a range
//!   owns the records that start inside it ([`crate::read::lines`]);
//! - a Parquet object larger than the target is cut between row groups;
//! - compressed objects, multiline CSV and anything smaller than the target are whole;
//!   small whole objects are packed together up to the target size.
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
/// let chunks = plan_chunks(&JobId::parse("job").unwrap(), objects, Sizing { target_bytes: 100, max_objects_per_chunk: 10 });
/// // big.csv in three ranges, the two small objects packed into one chunk.
/// assert_eq!(chunks.len(), 4);
/// assert_eq!(chunks.iter().map(|c| c.bytes).sum::<u64>(), 330);
/// ```
pub fn plan_chunks(job_id: &JobId, mut objects: Vec<PlanObject>, sizing: Sizing) -> Vec<Chunk> {
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let target = sizing.target_bytes.max(1);
    let mut out: Vec<Vec<Piece>> = Vec::new();
    let mut pack: Vec<Piece> = Vec::new();
    let mut pack_bytes = 0u64;
    let flush = |pack: &mut Vec<Piece>, pack_bytes: &mut u64, out: &mut Vec<Vec<Piece>>| {
        if !pack.is_empty() {
            out.push(std::mem::take(pack));
            *pack_bytes = 0;
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
                for (i, (rows, bytes)) in groups.iter().enumerate() {
                    if !current.is_empty() && current_bytes + bytes > target {
                        out.push(vec![Piece::RowGroups {
                            key: o.key.clone(),
                            etag: o.etag.clone(),
                            size: current_bytes,
                            row_groups: std::mem::take(&mut current),
                            first_row,
                        }]);
                        current_bytes = 0;
                    }
                    if current.is_empty() {
                        first_row = row;
                    }
                    current.push(i);
                    current_bytes += bytes;
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
                if pack_bytes + o.size > target || pack.len() >= sizing.max_objects_per_chunk {
                    flush(&mut pack, &mut pack_bytes, &mut out);
                }
                pack_bytes += o.size;
                pack.push(whole(o));
            }
        }
    }
    flush(&mut pack, &mut pack_bytes, &mut out);
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(key: &str, size: u64) -> PlanObject {
        PlanObject {
            key: key.into(),
            etag: "e".into(),
            size,
            split: Split::Lines,
        }
    }

    #[test]
    fn chunk_ids_hash_the_pieces_as_they_always_have() {
        // Computed independently: Python's hashlib.sha256 of
        // b'job\nobject\x00a.csv\x00"e1"\nrange\x00b.csv\x00e2\x00100\x00250\n'
        // b'row_groups\x00c.parquet\x00e3\x000,2,11', the first 10 bytes in hex.
        // Output keys derive from chunk ids, so they must not move.
        let pieces = vec![
            Piece::Object {
                key: "a.csv".into(),
                etag: "\"e1\"".into(),
                size: 7,
            },
            Piece::Range {
                key: "b.csv".into(),
                etag: "e2".into(),
                size: 999,
                start: 100,
                end: 250,
            },
            Piece::RowGroups {
                key: "c.parquet".into(),
                etag: "e3".into(),
                size: 5,
                row_groups: vec![0, 2, 11],
                first_row: 0,
            },
        ];
        assert_eq!(
            chunk_id(&JobId::parse("job").expect("id"), &pieces),
            "99ef8d5bc54e32f0a146"
        );
    }

    #[test]
    fn large_objects_are_cut_into_ranges_that_tile_them() {
        let chunks = plan_chunks(
            &JobId::parse("j").expect("id"),
            vec![lines("a", 1000)],
            Sizing {
                target_bytes: 300,
                max_objects_per_chunk: 10,
            },
        );
        let ranges: Vec<(u64, u64)> = chunks
            .iter()
            .map(|c| match &c.pieces[0] {
                Piece::Range { start, end, .. } => (*start, *end),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(ranges, vec![(0, 250), (250, 500), (500, 750), (750, 1000)]);
    }

    #[test]
    fn whole_objects_are_never_split_and_small_ones_are_packed() {
        let objects = vec![
            PlanObject {
                key: "a.gz".into(),
                etag: "1".into(),
                size: 5000,
                split: Split::Whole,
            },
            lines("b", 10),
            lines("c", 10),
            lines("d", 10),
        ];
        let chunks = plan_chunks(
            &JobId::parse("j").expect("id"),
            objects,
            Sizing {
                target_bytes: 100,
                max_objects_per_chunk: 2,
            },
        );
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].pieces.len(), 1);
        assert_eq!(chunks[1].pieces.len(), 2);
        assert_eq!(chunks[2].pieces.len(), 1);
    }

    #[test]
    fn parquet_is_cut_between_row_groups() {
        let o = PlanObject {
            key: "p.parquet".into(),
            etag: "1".into(),
            size: 1000,
            split: Split::RowGroups(vec![(10, 300), (10, 300), (10, 300), (5, 100)]),
        };
        let chunks = plan_chunks(
            &JobId::parse("j").expect("id"),
            vec![o],
            Sizing {
                target_bytes: 600,
                max_objects_per_chunk: 10,
            },
        );
        let groups: Vec<(Vec<usize>, u64)> = chunks
            .iter()
            .map(|c| match &c.pieces[0] {
                Piece::RowGroups {
                    row_groups,
                    first_row,
                    ..
                } => (row_groups.clone(), *first_row),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(groups, vec![(vec![0, 1], 0), (vec![2, 3], 20)]);
    }

    #[test]
    fn the_same_listing_in_any_order_gives_the_same_chunk_ids() {
        let a = plan_chunks(
            &JobId::parse("j").expect("id"),
            vec![lines("x", 50), lines("y", 500)],
            Sizing {
                target_bytes: 100,
                max_objects_per_chunk: 5,
            },
        );
        let b = plan_chunks(
            &JobId::parse("j").expect("id"),
            vec![lines("y", 500), lines("x", 50)],
            Sizing {
                target_bytes: 100,
                max_objects_per_chunk: 5,
            },
        );
        assert_eq!(a, b);
    }

    proptest! {
        #[test]
        fn every_byte_of_every_object_is_planned_exactly_once(
            sizes in proptest::collection::vec(0u64..5_000, 1..20),
            target in 1u64..2_000,
        ) {
            let objects: Vec<PlanObject> = sizes.iter().enumerate().map(|(i, s)| lines(&format!("k{i:03}"), *s)).collect();
            let chunks = plan_chunks(&JobId::parse("j").expect("id"), objects, Sizing { target_bytes: target, max_objects_per_chunk: 7 });
            for (i, size) in sizes.iter().enumerate() {
                let key = format!("k{i:03}");
                let mut spans: Vec<(u64, u64)> = chunks.iter().flat_map(|c| c.pieces.iter()).filter(|p| p.key() == key).map(|p| match p {
                    Piece::Object { size, .. } => (0, *size),
                    Piece::Range { start, end, .. } => (*start, *end),
                    Piece::RowGroups { .. } => unreachable!(),
                }).collect();
                spans.sort();
                let mut at = 0;
                for (s, e) in spans { prop_assert_eq!(s, at); at = e; }
                prop_assert_eq!(at, *size);
            }
            let mut ids: Vec<&str> = chunks.iter().map(|c| c.id.as_str()).collect();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), chunks.len());
        }
    }
}
