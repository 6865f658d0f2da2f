use super::*;
use proptest::prelude::*;

/// Room for every piece list these tests plan: the default message limit.
const ROOMY: usize = 256 * 1024;

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
            max_pieces_json_bytes: ROOMY,
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
            max_pieces_json_bytes: ROOMY,
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
            max_pieces_json_bytes: ROOMY,
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
            max_pieces_json_bytes: ROOMY,
        },
    );
    let b = plan_chunks(
        &JobId::parse("j").expect("id"),
        vec![lines("y", 500), lines("x", 50)],
        Sizing {
            target_bytes: 100,
            max_objects_per_chunk: 5,
            max_pieces_json_bytes: ROOMY,
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
        let chunks = plan_chunks(&JobId::parse("j").expect("id"), objects, Sizing { target_bytes: target, max_objects_per_chunk: 7, max_pieces_json_bytes: ROOMY });
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

/// Keys and tags of any characters JSON escapes or not: quotes, backslashes, control
/// characters, multi-byte UTF-8.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('"'),
            Just('\\'),
            Just('\n'),
            Just('\u{1}'),
            Just('\u{7f}'),
            Just('é'),
            Just('\u{2028}'),
            Just('😀'),
            proptest::char::any(),
        ],
        0..40,
    )
    .prop_map(|c| c.into_iter().collect())
}

fn piece() -> impl Strategy<Value = Piece> {
    let n = prop_oneof![Just(0u64), Just(9), Just(10), Just(u64::MAX), any::<u64>()];
    prop_oneof![
        (text(), text(), n.clone()).prop_map(|(key, etag, size)| Piece::Object { key, etag, size }),
        (text(), text(), n.clone(), n.clone(), n.clone()).prop_map(
            |(key, etag, size, start, end)| Piece::Range {
                key,
                etag,
                size,
                start,
                end
            }
        ),
        (
            text(),
            text(),
            n.clone(),
            proptest::collection::vec(any::<usize>(), 0..20),
            n
        )
            .prop_map(
                |(key, etag, size, row_groups, first_row)| Piece::RowGroups {
                    key,
                    etag,
                    size,
                    row_groups,
                    first_row
                }
            ),
    ]
}

proptest! {
    #[test]
    fn a_pieces_json_size_bounds_what_serde_json_writes(pieces in proptest::collection::vec(piece(), 0..8)) {
        for p in &pieces {
            let real = serde_json::to_string(p).expect("json").len();
            prop_assert!(p.json_bytes() >= real, "{} < {real} for {p:?}", p.json_bytes());
        }
        let real = serde_json::to_string(&pieces).expect("json").len();
        prop_assert!(pieces_json_bytes(&pieces) >= real);
    }

    #[test]
    fn packed_chunks_fit_the_message_room_and_keep_every_object_once(
        key_lengths in proptest::collection::vec(1usize..300, 1..200),
        room in 300usize..20_000,
    ) {
        let objects: Vec<PlanObject> = key_lengths.iter().enumerate().map(|(i, n)| lines(&format!("{i:04}{}", "k".repeat(*n)), 10)).collect();
        let sizing = Sizing { target_bytes: 1 << 30, max_objects_per_chunk: 1000, max_pieces_json_bytes: room };
        let chunks = plan_chunks(&JobId::parse("j").expect("id"), objects.clone(), sizing);
        let mut keys: Vec<&str> = chunks.iter().flat_map(|c| c.pieces.iter().map(Piece::key)).collect();
        for c in &chunks {
            // Only a chunk of one piece may overflow: there is nothing left to cut.
            prop_assert!(c.pieces.len() == 1 || pieces_json_bytes(&c.pieces) <= room);
            prop_assert!(serde_json::to_string(&c.pieces).expect("json").len() <= pieces_json_bytes(&c.pieces));
        }
        keys.sort();
        let mut want: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        want.sort();
        prop_assert_eq!(keys, want);
    }
}

#[test]
fn a_plain_pieces_json_size_is_exact() {
    // Tight, so the limit costs no more chunks than it must.
    let pieces = vec![
        Piece::Object {
            key: "dt=2026-11-01/part-00000001.csv".into(),
            etag: "\"0123abcd\"".into(),
            size: 1_000,
        },
        Piece::RowGroups {
            key: "p.parquet".into(),
            etag: "e".into(),
            size: 12,
            row_groups: vec![0, 10, 200],
            first_row: 7,
        },
    ];
    for p in &pieces {
        assert_eq!(
            p.json_bytes(),
            serde_json::to_string(p).expect("json").len()
        );
    }
}

#[test]
fn a_thousand_long_keys_are_packed_into_chunks_that_fit_256_kib() {
    // 200-character keys and S3's quoted MD5 tags: about 290 bytes a piece.
    let object = |i: u64| PlanObject {
        etag: format!("\"{i:032x}\""),
        ..lines(&format!("{i:04}-{}", "x".repeat(195)), 100)
    };
    let objects: Vec<PlanObject> = (0..1000).map(object).collect();
    let room = 256 * 1024 - 400;
    let sizing = Sizing {
        target_bytes: 1 << 30,
        max_objects_per_chunk: 1000,
        max_pieces_json_bytes: room,
    };
    let chunks = plan_chunks(&JobId::parse("j").expect("id"), objects, sizing);
    // A thousand do not fit one message, a few hundred do.
    assert!(chunks.len() > 1, "{} chunks", chunks.len());
    assert!(chunks.len() < 10, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| pieces_json_bytes(&c.pieces) <= room));
    assert_eq!(chunks.iter().map(|c| c.pieces.len()).sum::<usize>(), 1000);
    let again = plan_chunks(
        &JobId::parse("j").expect("id"),
        (0..1000).rev().map(object).collect(),
        sizing,
    );
    assert_eq!(chunks, again);
}

#[test]
fn row_group_runs_are_closed_before_their_list_outgrows_the_room() {
    let o = PlanObject {
        key: "p.parquet".into(),
        etag: "1".into(),
        size: 100_000,
        split: Split::RowGroups(vec![(1, 10); 10_000]),
    };
    let room = 2_000;
    let chunks = plan_chunks(
        &JobId::parse("j").expect("id"),
        vec![o],
        Sizing {
            target_bytes: 50_000,
            max_objects_per_chunk: 10,
            max_pieces_json_bytes: room,
        },
    );
    assert!(chunks.len() > 2, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| pieces_json_bytes(&c.pieces) <= room));
    let groups: Vec<usize> = chunks
        .iter()
        .flat_map(|c| match &c.pieces[0] {
            Piece::RowGroups { row_groups, .. } => row_groups.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(groups, (0..10_000).collect::<Vec<_>>());
}
