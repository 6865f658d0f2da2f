use std::io::Write as _;

use arrow::array::{Array, StringArray};
use proptest::prelude::*;

use super::*;
use crate::spec::JobSpec;
use crate::store::FsStore;

/// One record as a reader hands it out: a row's first column, or a reject's rule and raw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Row(String),
    Reject {
        rule: String,
        raw: String,
        line: Option<u64>,
        offset: u64,
    },
}

fn input(format: &str, extra: &str) -> InputSpec {
    let text = format!(
        "name: t\ninput:\n  location: /tmp/in/\n  format: {format}\n{extra}  schema:\n    - {{ name: a, type: utf8 }}\noutput: {{ location: /tmp/out/ }}\nrejects: {{ location: /tmp/rej/ }}\n"
    );
    JobSpec::parse("t.yaml", &text).unwrap().input
}

fn with_limits(mut i: InputSpec, max_record: u64) -> InputSpec {
    i.max_record_bytes = max_record;
    i
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new(files: &[(&str, &[u8])]) -> Dir {
        let d = tempfile::tempdir().unwrap();
        for (k, b) in files {
            std::fs::write(d.path().join(k), b).unwrap();
        }
        Dir(d)
    }
    fn store(&self) -> FsStore {
        FsStore::new(self.0.path())
    }
}

async fn piece_of(store: &FsStore, key: &str, range: Option<(u64, u64)>) -> Piece {
    let m = store.head(key).await.unwrap().unwrap();
    match range {
        None => Piece::Object {
            key: key.into(),
            etag: m.etag,
            size: m.size,
        },
        Some((start, end)) => Piece::Range {
            key: key.into(),
            etag: m.etag,
            size: m.size,
            start,
            end,
        },
    }
}

/// Reads a piece to the end: its records in order and the bytes it fetched.
async fn read_all(
    store: &FsStore,
    piece: &Piece,
    input: &InputSpec,
    segment: u64,
) -> Result<(Vec<Out>, u64)> {
    let headers = HeaderCache::default();
    let mut r = TextReader::open(store, piece, input, &headers, segment).await?;
    let mut out = Vec::new();
    while let Some(d) = r.next().await? {
        let mut items: Vec<(u64, Out)> = Vec::new();
        let col = d
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        for (i, o) in d.origins.iter().enumerate() {
            items.push((o.start, Out::Row(col.value(i).to_string())));
        }
        for rj in
            crate::transform::resolve_rejects(&d, d.rejects.iter().cloned().map(|r| (None, r)))
        {
            let offset = rj.byte_offset.or(rj.decompressed_offset).unwrap();
            items.push((
                offset - d.text_offset.unwrap(),
                Out::Reject {
                    rule: rj.rule,
                    raw: rj.raw,
                    line: rj.line,
                    offset,
                },
            ));
        }
        items.sort_by_key(|(s, _)| *s);
        out.extend(items.into_iter().map(|(_, o)| o));
    }
    Ok((out, r.bytes_fetched()))
}

/// What reading `text` (one-column CSV, no header) must give: every non-empty
/// line, a row when it fits `max` (its `\n` included) and a reject otherwise.
fn expected(text: &[u8], max: usize) -> Vec<Out> {
    let mut out = Vec::new();
    let mut at = 0usize;
    for (line, rec) in text.split_inclusive(|b| *b == b'\n').enumerate() {
        let body = rec.strip_suffix(b"\n").unwrap_or(rec);
        if rec.len() > max {
            out.push(Out::Reject {
                rule: "max_record_size".into(),
                raw: String::from_utf8_lossy(&body[..OVERSIZED_RAW_BYTES.min(max)]).into(),
                line: Some(line as u64 + 1),
                offset: at as u64,
            });
        } else if !body.is_empty() {
            out.push(Out::Row(String::from_utf8_lossy(body).into()));
        }
        at += rec.len();
    }
    out
}

/// Line numbers are only known to ranges that start at the object's start.
fn without_lines(v: Vec<Out>) -> Vec<Out> {
    v.into_iter()
        .map(|o| match o {
            Out::Reject {
                rule, raw, offset, ..
            } => Out::Reject {
                rule,
                raw,
                line: None,
                offset,
            },
            row => row,
        })
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn ranges_that_tile_an_object_read_every_record_exactly_once(
        lines in proptest::collection::vec("[a-z ]{0,40}", 0..60),
        trailing_newline in any::<bool>(),
        cuts in proptest::collection::vec(0usize..3000, 0..10),
        segment in 1u64..200,
        max in 4usize..60,
    ) {
        let mut text = lines.join("\n").into_bytes();
        if trailing_newline && !text.is_empty() { text.push(b'\n'); }
        let size = text.len() as u64;
        let dir = Dir::new(&[("a.csv", &text)]);
        let store = dir.store();
        let input = with_limits(input("csv", "  csv: { header: false }\n"), max as u64);
        let mut bounds: Vec<u64> = cuts.iter().map(|c| (*c as u64).min(size)).collect();
        bounds.extend([0, size]);
        bounds.sort();
        bounds.dedup();
        let rt = rt();
        let mut got = Vec::new();
        for w in bounds.windows(2) {
            let piece = rt.block_on(piece_of(&store, "a.csv", Some((w[0], w[1]))));
            let (records, fetched) = rt.block_on(read_all(&store, &piece, &input, segment)).unwrap();
            let records = if w[0] == 0 { records } else { without_lines(records) };
            got.extend(records);
            // A range fetches its bytes, one before, and at most a record (plus one
            // read-ahead step) past its end.
            prop_assert!(fetched <= (w[1] - w[0]) + 1 + max as u64 + 1, "fetched {} for {:?}", fetched, w);
        }
        let want = expected(&text, max);
        let want_lines_from_start: Vec<Out> = want.clone();
        // Records of later ranges carry no line number; compare offsets and contents.
        prop_assert_eq!(without_lines(got.clone()), without_lines(want_lines_from_start));
        // The whole object read as one piece knows every line.
        let whole = rt.block_on(piece_of(&store, "a.csv", None));
        let (all, _) = rt.block_on(read_all(&store, &whole, &input, segment)).unwrap();
        prop_assert_eq!(all, want);
    }

    #[test]
    fn multiline_csv_cut_anywhere_reads_as_the_whole_text_does(
        fields in proptest::collection::vec("[a-z,\n\"]{0,12}", 1..30),
        segment in 1u64..64,
    ) {
        // Each record one quoted field (quotes doubled inside), so newlines sit in quotes.
        let mut text = Vec::new();
        for f in &fields {
            text.push(b'"');
            text.extend_from_slice(f.replace('"', "\"\"").as_bytes());
            text.extend_from_slice(b"\"\n");
        }
        let dir = Dir::new(&[("m.csv", &text)]);
        let store = dir.store();
        let input = input("csv", "  csv: { header: false, multiline: true }\n");
        let rt = rt();
        let whole = rt.block_on(piece_of(&store, "m.csv", None));
        let (got, _) = rt.block_on(read_all(&store, &whole, &input, segment)).unwrap();
        let want: Vec<Out> = fields
            .iter()
            .map(|f| Out::Row(f.clone()))
            .collect();
        prop_assert_eq!(got, want);
    }
}

fn gzip(parts: &[&[u8]]) -> Vec<u8> {
    // Concatenated members, as `cat a.gz b.gz` and Firehose write them.
    let mut out = Vec::new();
    for p in parts {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(p).unwrap();
        out.extend(e.finish().unwrap());
    }
    out
}

fn lines_text(n: usize) -> Vec<u8> {
    let mut t = b"a\n".to_vec();
    for i in 0..n {
        t.extend_from_slice(format!("row-{i}\n").as_bytes());
    }
    t
}

#[test]
fn a_gzip_object_of_several_members_streams_in_segments_with_exact_coordinates() {
    let body = lines_text(50_000);
    let (first, second) = body.split_at(body.len() / 3);
    let mut broken = body.clone();
    broken.extend_from_slice(b"\xff\xfe\n");
    let dir = Dir::new(&[
        ("a.csv.gz", &gzip(&[first, second])),
        ("b.csv.gz", &gzip(&[&broken])),
    ]);
    let store = dir.store();
    let input = input("csv", "");
    let rt = rt();
    let piece = rt.block_on(piece_of(&store, "a.csv.gz", None));
    let headers = HeaderCache::default();
    let mut r = rt
        .block_on(TextReader::open(&store, &piece, &input, &headers, 1000))
        .unwrap();
    let mut rows = 0;
    let mut segments = 0;
    while let Some(d) = rt.block_on(r.next()).unwrap() {
        // A segment, plus what one compressed slice decompressed to.
        assert!(d.text.len() < 50_000, "a segment of {} bytes", d.text.len());
        assert!(d.decompressed);
        rows += d.batch.num_rows();
        segments += 1;
    }
    assert_eq!(rows, 50_000);
    assert!(segments > 20, "{segments} segments");
    // A reject deep in the stream keeps its line and its decompressed offset.
    let piece = rt.block_on(piece_of(&store, "b.csv.gz", None));
    let (out, _) = rt.block_on(read_all(&store, &piece, &input, 777)).unwrap();
    let rejects: Vec<&Out> = out
        .iter()
        .filter(|o| matches!(o, Out::Reject { .. }))
        .collect();
    assert_eq!(
        rejects,
        vec![&Out::Reject {
            rule: "encoding".into(),
            raw: "\u{fffd}\u{fffd}".into(),
            line: Some(50_002),
            offset: body.len() as u64,
        }]
    );
}

#[test]
fn a_zstd_object_of_two_frames_streams() {
    let body = lines_text(3_000);
    let (first, second) = body.split_at(body.len() / 2);
    let mut z = zstd::encode_all(first, 1).unwrap();
    z.extend(zstd::encode_all(second, 1).unwrap());
    let dir = Dir::new(&[("a.csv.zst", &z)]);
    let store = dir.store();
    let rt = rt();
    let piece = rt.block_on(piece_of(&store, "a.csv.zst", None));
    let (out, fetched) = rt
        .block_on(read_all(&store, &piece, &input("csv", ""), 500))
        .unwrap();
    assert_eq!(out.len(), 3_000);
    assert_eq!(out[2_999], Out::Row("row-2999".into()));
    assert_eq!(fetched, z.len() as u64);
}

#[test]
fn a_truncated_or_corrupt_compressed_object_is_an_error_naming_it() {
    let z = gzip(&[&lines_text(2_000)]);
    let mut corrupt = z.clone();
    corrupt[z.len() / 2] ^= 0xff;
    corrupt[z.len() / 2 + 1] ^= 0xff;
    let dir = Dir::new(&[("cut.csv.gz", &z[..z.len() / 2]), ("bad.csv.gz", &corrupt)]);
    let store = dir.store();
    let rt = rt();
    for key in ["cut.csv.gz", "bad.csv.gz"] {
        let piece = rt.block_on(piece_of(&store, key, None));
        let e = rt
            .block_on(read_all(&store, &piece, &input("csv", ""), 1 << 20))
            .unwrap_err();
        assert!(
            matches!(&e, Error::Input { object, .. } if object == key),
            "{key}: {e}"
        );
    }
}

#[test]
fn a_huge_record_is_rejected_with_its_first_kib_and_reading_resumes_after_it() {
    let mut text = b"a\nfirst\n".to_vec();
    text.extend(std::iter::repeat_n(b'x', 300_000));
    text.extend_from_slice(b"\nlast\n");
    let dir = Dir::new(&[("h.csv", &text), ("h.csv.gz", &gzip(&[&text]))]);
    let store = dir.store();
    let input = with_limits(input("csv", ""), 10_000);
    let rt = rt();
    for key in ["h.csv", "h.csv.gz"] {
        let piece = rt.block_on(piece_of(&store, key, None));
        let (out, _) = rt.block_on(read_all(&store, &piece, &input, 4096)).unwrap();
        assert_eq!(out.len(), 3, "{key}: {out:?}");
        assert_eq!(out[0], Out::Row("first".into()));
        assert_eq!(
            out[1],
            Out::Reject {
                rule: "max_record_size".into(),
                raw: "x".repeat(OVERSIZED_RAW_BYTES),
                line: Some(3),
                offset: 8,
            }
        );
        assert_eq!(out[2], Out::Row("last".into()));
    }
    // Ranges inside the huge record own nothing and read no further than their end.
    let piece = rt.block_on(piece_of(&store, "h.csv", Some((50_000, 100_000))));
    let (out, fetched) = rt.block_on(read_all(&store, &piece, &input, 4096)).unwrap();
    assert!(out.is_empty());
    assert!(fetched <= 50_001, "fetched {fetched}");
    // The range holding its start rejects it and stops after the limit, not at its end.
    let piece = rt.block_on(piece_of(&store, "h.csv", Some((0, 20_000))));
    let (out, fetched) = rt.block_on(read_all(&store, &piece, &input, 4096)).unwrap();
    assert_eq!(out.len(), 2);
    assert!(fetched <= 2 * 20_000, "fetched {fetched}");
}
