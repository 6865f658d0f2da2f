//! The aggregate's exactness across chunking: the same rows aggregated as one chunk, or cut
//! into any number of chunks whose partials are merged in any order, finish to the same
//! table. Both sides run the worker's path (`aggregate::start`, one partial per chunk,
//! stored as JSON in the chunk record) and the reducer's: sorted runs on disk merged two at
//! a time (`aggregate::runs`, several passes), then `finish_groups`; the in-memory `merge`
//! gives the same table.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Decimal128Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use fanout::aggregate::{self, Partial};
use fanout::spec::{AggFn, AggregateSpec, Measure};
use proptest::prelude::*;

/// One input row; `None` is null.
#[derive(Debug, Clone)]
struct Row {
    region: Option<&'static str>,
    shard: Option<i32>,
    /// decimal(12,2), unscaled.
    amount: Option<i64>,
    qty: Option<i64>,
    /// Multiples of 1/4 below 2^20 in magnitude: every sum of a few hundred of them is
    /// exact in f64 whatever the order of the additions, so float sums and averages can
    /// be compared exactly too. Arbitrary floats would differ in the last bits between
    /// cuts (float addition is not associative), which is expected, not a defect.
    /// No -0.0 either: a chunk's min or max keeps whichever zero it met first (-0.0 and
    /// 0.0 compare equal there) while the merge orders -0.0 below 0.0, so the sign of a
    /// zero min or max can depend on the cut.
    score: Option<f64>,
    at_ms: Option<i64>,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("region", DataType::Utf8, true),
        Field::new("shard", DataType::Int32, true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
        Field::new("qty", DataType::Int64, true),
        Field::new("score", DataType::Float64, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
    ]))
}

fn batch(rows: &[Row]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.region).collect::<Vec<_>>(),
        )),
        Arc::new(Int32Array::from(
            rows.iter().map(|r| r.shard).collect::<Vec<_>>(),
        )),
        Arc::new(
            Decimal128Array::from(
                rows.iter()
                    .map(|r| r.amount.map(i128::from))
                    .collect::<Vec<_>>(),
            )
            .with_precision_and_scale(12, 2)
            .unwrap(),
        ),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.qty).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.score).collect::<Vec<_>>(),
        )),
        Arc::new(
            TimestampMillisecondArray::from(rows.iter().map(|r| r.at_ms).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(schema(), cols).unwrap()
}

fn measure(name: &str, function: AggFn, column: Option<&str>) -> Measure {
    Measure {
        name: name.into(),
        function,
        column: column.map(String::from),
    }
}

fn spec(group_by: &[&str]) -> AggregateSpec {
    use AggFn::*;
    AggregateSpec {
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
        measures: vec![
            measure("rows", Count, None),
            measure("amounts", Count, Some("amount")),
            measure("amount_sum", Sum, Some("amount")),
            measure("amount_min", Min, Some("amount")),
            measure("amount_max", Max, Some("amount")),
            measure("amount_avg", Avg, Some("amount")),
            measure("qty_sum", Sum, Some("qty")),
            measure("qty_avg", Avg, Some("qty")),
            measure("qty_min", Min, Some("qty")),
            measure("score_sum", Sum, Some("score")),
            measure("score_min", Min, Some("score")),
            measure("score_max", Max, Some("score")),
            measure("score_avg", Avg, Some("score")),
            measure("first", Min, Some("at")),
            measure("last", Max, Some("at")),
        ],
    }
}

/// A chunk's partial as the worker computes it (rows streamed in batches) and as the
/// reducer reads it back from the chunk record's JSON.
async fn chunk_partial(spec: &AggregateSpec, rows: &[Row], batch_rows: usize) -> Partial {
    let (tx, task) = aggregate::start(spec, schema()).unwrap();
    for piece in rows.chunks(batch_rows) {
        tx.send(batch(piece)).await.unwrap();
    }
    drop(tx);
    let partial = task.await.unwrap().unwrap();
    serde_json::from_str(&serde_json::to_string(&partial).unwrap()).unwrap()
}

fn finished(spec: &AggregateSpec, partials: Vec<Partial>) -> RecordBatch {
    let merged = aggregate::merge(spec, partials).unwrap();
    aggregate::finish(spec, &schema(), &merged).unwrap()
}

/// The reducer's path: each partial a run file, merged `fan_in` at a time, then finished.
fn finished_by_runs(spec: &AggregateSpec, partials: Vec<Partial>, fan_in: usize) -> RecordBatch {
    use fanout::aggregate::runs;
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<runs::Run> = partials
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            runs::write_run(spec, &dir.path().join(format!("{i}.run")), p.groups).unwrap()
        })
        .collect();
    let mut groups = Vec::new();
    runs::merge_runs(spec, runs, dir.path(), fan_in, &mut |g| {
        groups.push(g);
        Ok(())
    })
    .unwrap();
    let wide = aggregate::WideSums::of(spec, &groups);
    aggregate::finish_groups(spec, &schema(), &groups, &wide).unwrap()
}

fn row() -> impl Strategy<Value = Row> {
    (
        prop::option::weighted(0.85, prop::sample::select(vec!["EU", "NA", "APAC"])),
        prop::option::weighted(0.85, 0i32..3),
        prop::option::weighted(0.85, -1_000_000_000i64..1_000_000_000),
        prop::option::weighted(
            0.85,
            prop_oneof![Just(i64::MAX), Just(i64::MIN), -1_000_000i64..1_000_000],
        ),
        prop::option::weighted(
            0.85,
            (-(1i32 << 22)..(1 << 22)).prop_map(|n| n as f64 / 4.0),
        ),
        prop::option::weighted(0.85, 1_600_000_000_000i64..1_800_000_000_000),
    )
        .prop_map(|(region, shard, amount, qty, score, at_ms)| Row {
            region,
            shard,
            amount,
            qty,
            score,
            at_ms,
        })
}

/// Rows, cut points (sorted, repeats allowed: empty chunks happen), merge order keys,
/// rows per streamed batch, group-by columns.
type Case = (Vec<Row>, Vec<usize>, Vec<u32>, usize, Vec<&'static str>);

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(row(), 0..120).prop_flat_map(|rows| {
        let n = rows.len();
        (
            Just(rows),
            prop::collection::vec(0..=n, 0..6),
            prop::collection::vec(any::<u32>(), 7),
            1usize..40,
            prop::sample::select(vec![vec![], vec!["region"], vec!["region", "shard"]]),
        )
    })
}

/// The expected row count and exact sum of `qty` of every group, computed directly
/// (sorted: the groups' keys are compared by the merge-invariance check).
fn oracle(rows: &[Row], group_by: &[&str]) -> Vec<(u64, i128)> {
    type Key<'a> = (Option<&'a str>, Option<i32>);
    let mut groups: BTreeMap<Key, (u64, i128)> = BTreeMap::new();
    for r in rows {
        let key = (
            r.region.filter(|_| group_by.contains(&"region")),
            r.shard.filter(|_| group_by.contains(&"shard")),
        );
        let e = groups.entry(key).or_default();
        e.0 += 1;
        e.1 += r.qty.map_or(0, i128::from);
    }
    if groups.is_empty() && group_by.is_empty() {
        // An aggregate without group-by has one row even over no rows.
        groups.insert((None, None), (0, 0));
    }
    let mut v: Vec<(u64, i128)> = groups.into_values().collect();
    v.sort_unstable();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn merged_partials_finish_to_the_same_table_however_the_rows_are_cut(
        (rows, mut cuts, order, batch_rows, group_by) in case()
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let spec = spec(&group_by);
        cuts.sort_unstable();
        let bounds: Vec<usize> = std::iter::once(0).chain(cuts).chain([rows.len()]).collect();
        let (whole, cut) = rt.block_on(async {
            let whole = chunk_partial(&spec, &rows, rows.len().max(1)).await;
            let mut cut = Vec::new();
            for w in bounds.windows(2) {
                cut.push(chunk_partial(&spec, &rows[w[0]..w[1]], batch_rows).await);
            }
            (whole, cut)
        });
        // The reducer receives partials in whatever order the chunk records list.
        let mut keyed: Vec<(u32, Partial)> = order.iter().copied().zip(cut).collect();
        keyed.sort_by_key(|(k, _)| *k);
        let shuffled: Vec<Partial> = keyed.into_iter().map(|(_, p)| p).collect();

        let one = finished(&spec, vec![whole]);
        let by_runs = finished_by_runs(&spec, shuffled.clone(), 2);
        let many = finished(&spec, shuffled);
        prop_assert_eq!(&one, &many);
        prop_assert_eq!(&by_runs, &many);
        prop_assert_eq!(aggregate::to_json_rows(&one), aggregate::to_json_rows(&many));

        // Not only the same on both sides, but right: row counts and exact integer sums.
        let mut got: Vec<(u64, i128)> = aggregate::to_json_rows(&many)
            .iter()
            .map(|r| {
                let sum = match &r["qty_sum"] {
                    serde_json::Value::Null => 0,
                    serde_json::Value::Number(n) => i128::from(n.as_i64().unwrap()),
                    // Past i64 the sum is a decimal(38, 0), written as text to stay exact.
                    serde_json::Value::String(s) => s.parse().unwrap(),
                    other => panic!("qty_sum {other}"),
                };
                (r["rows"].as_u64().unwrap(), sum)
            })
            .collect();
        got.sort_unstable();
        prop_assert_eq!(got, oracle(&rows, &group_by));
    }
}
