//! Partial aggregates per chunk and their exact merge.
//!
//! A worker computes, per group, a state for each measure ([`Partial`]); the reducer adds
//! states up. Integer and decimal sums are kept as exact 128-bit integers (the decimal's
//! unscaled value), so the job's totals do not depend on how the input was cut.
//!
//! A worker's partial is small enough to hold (one chunk's groups); the job's merge is
//! not: [`runs`] merges the partials as sorted run files on local disk, in memory bounded
//! whatever the number of groups.

pub mod runs;
mod table;

pub use table::{WideSums, finish, finish_groups, magnitudes, to_json_rows};

use std::cmp::Ordering;
use std::collections::BTreeMap;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::spec::{AggFn, AggregateSpec};
use crate::{Error, Result};

/// One value of a group key or measure state, in a type-independent form: integers,
/// dates, timestamps and decimals (unscaled) as exact integers, floats as f64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    /// Absent.
    #[serde(rename = "n")]
    Null,
    /// Boolean.
    #[serde(rename = "b")]
    Bool(bool),
    /// Exact integer (decimal: unscaled), as text to survive any JSON reader.
    #[serde(rename = "i")]
    Int(String),
    /// Float.
    #[serde(rename = "f")]
    Float(f64),
    /// Text.
    #[serde(rename = "s")]
    Str(String),
}

impl Scalar {
    fn int(v: i128) -> Scalar {
        Scalar::Int(v.to_string())
    }

    fn as_i128(&self) -> Option<i128> {
        match self {
            Scalar::Int(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// Total order: nulls first, then by value within a kind.
    pub fn total_cmp(&self, other: &Scalar) -> Ordering {
        match (self, other) {
            (Scalar::Null, Scalar::Null) => Ordering::Equal,
            (Scalar::Null, _) => Ordering::Less,
            (_, Scalar::Null) => Ordering::Greater,
            (Scalar::Bool(a), Scalar::Bool(b)) => a.cmp(b),
            (Scalar::Int(_), Scalar::Int(_)) => self.as_i128().cmp(&other.as_i128()),
            (Scalar::Float(a), Scalar::Float(b)) => a.total_cmp(b),
            (Scalar::Str(a), Scalar::Str(b)) => a.cmp(b),
            (a, b) => format!("{a:?}").cmp(&format!("{b:?}")),
        }
    }
}

/// The state of one measure in one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum State {
    /// count.
    Count(u64),
    /// sum, min, max: one value (null when every input was null).
    Value(Scalar),
    /// avg: exact sum and non-null count.
    Avg {
        /// Sum.
        sum: Scalar,
        /// Count of non-null values.
        count: u64,
    },
}

/// One group's key and states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Key values, in `group_by` order.
    pub key: Vec<Scalar>,
    /// One state per measure.
    pub states: Vec<State>,
}

/// A chunk's (or a merged job's) aggregate state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Partial {
    /// Groups (sorted by key after a merge).
    pub groups: Vec<Group>,
}

/// Converts a column to the canonical kind its values are kept in.
fn canonical(a: &ArrayRef) -> Result<ArrayRef> {
    let t = a.data_type();
    Ok(match t {
        DataType::Decimal128(..) => a.clone(),
        _ if t.is_integer() => cast(a, &DataType::Decimal128(38, 0))?,
        DataType::Date32 => cast(a, &DataType::Int32)?,
        DataType::Date64
        | DataType::Timestamp(..)
        | DataType::Time64(_)
        | DataType::Duration(_) => cast(a, &DataType::Int64)?,
        DataType::Time32(_) => cast(a, &DataType::Int32)?,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => cast(a, &DataType::Float64)?,
        DataType::Boolean => a.clone(),
        _ => cast(a, &DataType::Utf8)?,
    })
}

fn scalar_at(a: &ArrayRef, row: usize) -> Scalar {
    if a.is_null(row) {
        return Scalar::Null;
    }
    let any = a.as_any();
    if let Some(x) = any.downcast_ref::<Decimal128Array>() {
        Scalar::int(x.value(row))
    } else if let Some(x) = any.downcast_ref::<Int64Array>() {
        Scalar::int(x.value(row) as i128)
    } else if let Some(x) = any.downcast_ref::<Int32Array>() {
        Scalar::int(x.value(row) as i128)
    } else if let Some(x) = any.downcast_ref::<Float64Array>() {
        Scalar::Float(x.value(row))
    } else if let Some(x) = any.downcast_ref::<BooleanArray>() {
        Scalar::Bool(x.value(row))
    } else if let Some(x) = any.downcast_ref::<StringArray>() {
        Scalar::Str(x.value(row).to_string())
    } else {
        Scalar::Null
    }
}

fn add(a: &Scalar, b: &Scalar) -> Result<Scalar> {
    Ok(match (a, b) {
        (Scalar::Null, x) | (x, Scalar::Null) => x.clone(),
        (Scalar::Int(_), Scalar::Int(_)) => {
            let (x, y) = (a.as_i128().unwrap_or(0), b.as_i128().unwrap_or(0));
            Scalar::int(x.checked_add(y).ok_or_else(|| Error::Transform {
                message: "an aggregate sum overflowed 128 bits".into(),
            })?)
        }
        (Scalar::Float(x), Scalar::Float(y)) => Scalar::Float(x + y),
        (x, y) => {
            return Err(Error::Transform {
                message: format!("cannot add aggregate states {x:?} and {y:?}"),
            });
        }
    })
}

fn pick(a: &Scalar, b: &Scalar, want: Ordering) -> Scalar {
    match (a, b) {
        (Scalar::Null, x) | (x, Scalar::Null) => x.clone(),
        _ if b.total_cmp(a) == want => b.clone(),
        _ => a.clone(),
    }
}

fn merge_state(f: AggFn, a: &State, b: &State) -> Result<State> {
    Ok(match (a, b) {
        (State::Count(x), State::Count(y)) => State::Count(x + y),
        (State::Value(x), State::Value(y)) => State::Value(match f {
            AggFn::Min => pick(x, y, Ordering::Less),
            AggFn::Max => pick(x, y, Ordering::Greater),
            _ => add(x, y)?,
        }),
        (State::Avg { sum: s1, count: c1 }, State::Avg { sum: s2, count: c2 }) => State::Avg {
            sum: add(s1, s2)?,
            count: c1 + c2,
        },
        _ => {
            return Err(Error::Transform {
                message: format!("aggregate states of different kinds: {a:?} and {b:?}"),
            });
        }
    })
}

/// Merges partials exactly; groups come out sorted by key.
///
/// ```
/// use fanout::aggregate::{merge, Group, Partial, Scalar, State};
/// use fanout::spec::{AggFn, AggregateSpec, Measure};
/// let spec = AggregateSpec { group_by: vec!["k".into()], measures: vec![
///     Measure { name: "n".into(), function: AggFn::Count, column: None },
///     Measure { name: "s".into(), function: AggFn::Sum, column: Some("v".into()) },
/// ]};
/// let p = |n, s: &str| Partial { groups: vec![Group {
///     key: vec![Scalar::Str("a".into())],
///     states: vec![State::Count(n), State::Value(Scalar::Int(s.into()))],
/// }]};
/// let m = merge(&spec, [p(2, "150"), p(3, "-50")]).unwrap();
/// assert_eq!(m.groups[0].states, vec![State::Count(5), State::Value(Scalar::Int("100".into()))]);
/// ```
pub fn merge(spec: &AggregateSpec, partials: impl IntoIterator<Item = Partial>) -> Result<Partial> {
    let mut acc: BTreeMap<String, Group> = BTreeMap::new();
    for p in partials {
        for g in p.groups {
            check_measures(spec, &g)?;
            let k = serde_json::to_string(&g.key).map_err(|source| Error::Serialize {
                what: "aggregate group key",
                source,
            })?;
            match acc.get_mut(&k) {
                None => {
                    acc.insert(k, g);
                }
                Some(e) => {
                    for (i, m) in spec.measures.iter().enumerate() {
                        e.states[i] = merge_state(m.function, &e.states[i], &g.states[i])?;
                    }
                }
            }
        }
    }
    let mut groups: Vec<Group> = acc.into_values().collect();
    groups.sort_by(|a, b| key_cmp(&a.key, &b.key));
    Ok(Partial { groups })
}

/// The order of group keys: value by value, [`Scalar::total_cmp`]. Partials and the merged
/// aggregate are sorted by it.
pub fn key_cmp(a: &[Scalar], b: &[Scalar]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| *o != Ordering::Equal)
        .unwrap_or_else(|| a.len().cmp(&b.len()))
}

/// Merges `other`'s states into `into`'s (groups of the same key), measure by measure.
pub fn merge_group(spec: &AggregateSpec, into: &mut Group, other: &Group) -> Result<()> {
    check_measures(spec, other)?;
    for (i, m) in spec.measures.iter().enumerate() {
        into.states[i] = merge_state(m.function, &into.states[i], &other.states[i])?;
    }
    Ok(())
}

/// A group from a partial must have one state per measure of the spec.
pub(crate) fn check_measures(spec: &AggregateSpec, g: &Group) -> Result<()> {
    if g.states.len() == spec.measures.len() {
        return Ok(());
    }
    Err(Error::Transform {
        message: format!(
            "a partial has {} measures, the spec {}",
            g.states.len(),
            spec.measures.len()
        ),
    })
}

/// Builds a partial from one grouped result batch: key columns then, per measure, its
/// state columns (count: 1; sum/min/max: 1; avg: sum then count).
pub fn partial_from_batch(spec: &AggregateSpec, batch: &RecordBatch) -> Result<Partial> {
    let cols: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(canonical)
        .collect::<Result<_>>()?;
    let nk = spec.group_by.len();
    let mut groups = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let key = (0..nk).map(|i| scalar_at(&cols[i], r)).collect();
        let mut states = Vec::with_capacity(spec.measures.len());
        let mut c = nk;
        for m in &spec.measures {
            let count_at = |c: usize| match scalar_at(&cols[c], r) {
                Scalar::Int(s) => s.parse::<u64>().unwrap_or(0),
                _ => 0,
            };
            match m.function {
                AggFn::Count => {
                    states.push(State::Count(count_at(c)));
                    c += 1;
                }
                AggFn::Avg => {
                    states.push(State::Avg {
                        sum: scalar_at(&cols[c], r),
                        count: count_at(c + 1),
                    });
                    c += 2;
                }
                _ => {
                    states.push(State::Value(scalar_at(&cols[c], r)));
                    c += 1;
                }
            }
        }
        groups.push(Group { key, states });
    }
    Ok(Partial { groups })
}

/// The type a sum is kept in, for a column type.
pub fn sum_type(t: &DataType) -> DataType {
    match t {
        DataType::Decimal128(_, s) | DataType::Decimal256(_, s) => DataType::Decimal128(38, *s),
        _ if t.is_integer() => DataType::Decimal128(38, 0),
        _ => DataType::Float64,
    }
}

#[cfg(feature = "sql")]
pub use sql::{partial, start};

#[cfg(feature = "sql")]
mod sql {
    use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
    use datafusion::prelude::*;

    use super::*;

    /// Computes a chunk's partial aggregate over its transformed rows.
    pub async fn partial(
        spec: &AggregateSpec,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<Partial> {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let df = ctx.read_batches(batches)?;
        let df = if df.schema().fields().is_empty() && !schema.fields().is_empty() {
            ctx.read_batch(RecordBatch::new_empty(schema.clone()))?
        } else {
            df
        };
        over(spec, &schema, df).await
    }

    /// Starts a chunk's partial aggregate over rows sent as they are transformed: drop the
    /// sender after the last batch, then await the handle.
    pub fn start(
        spec: &AggregateSpec,
        schema: SchemaRef,
    ) -> Result<(
        tokio::sync::mpsc::Sender<RecordBatch>,
        tokio::task::JoinHandle<Result<Partial>>,
    )> {
        let (tx, rx) = tokio::sync::mpsc::channel(crate::transform::PIPELINE_DEPTH);
        let (_, table) = crate::transform::channel_table(schema.clone(), rx)?;
        let spec = spec.clone();
        let task = tokio::spawn(async move {
            let ctx =
                SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
            let df = ctx.read_table(table)?;
            over(&spec, &schema, df).await
        });
        Ok((tx, task))
    }

    async fn over(spec: &AggregateSpec, schema: &SchemaRef, df: DataFrame) -> Result<Partial> {
        let group: Vec<Expr> = spec.group_by.iter().map(ident).collect();
        let mut aggs = Vec::new();
        for (i, m) in spec.measures.iter().enumerate() {
            let name = |part: &str| format!("__m{i}_{part}");
            let column = m.column.as_deref().map(ident);
            let col_t = match &m.column {
                Some(c) => Some(schema.field_with_name(c).map(|f| f.data_type().clone()).map_err(|_| Error::Transform {
                    message: format!("aggregate measure `{}`: column `{c}` is not in the transformed rows", m.name),
                })?),
                None => None,
            };
            let summed = |e: Expr, t: &DataType| sum(cast_expr(e, sum_type(t)));
            match (m.function, column, col_t) {
                (AggFn::Count, None, _) => aggs.push(count(lit(1)).alias(name("n"))),
                (AggFn::Count, Some(c), _) => aggs.push(count(c).alias(name("n"))),
                (AggFn::Sum, Some(c), Some(t)) => aggs.push(summed(c, &t).alias(name("s"))),
                (AggFn::Avg, Some(c), Some(t)) => {
                    aggs.push(summed(c.clone(), &t).alias(name("s")));
                    aggs.push(count(c).alias(name("n")));
                }
                (AggFn::Min, Some(c), _) => aggs.push(min(c).alias(name("v"))),
                (AggFn::Max, Some(c), _) => aggs.push(max(c).alias(name("v"))),
                _ => {
                    return Err(Error::Transform {
                        message: format!("aggregate measure `{}` needs a column", m.name),
                    });
                }
            }
        }
        let out = df.aggregate(group, aggs)?.collect().await?;
        let mut partial = Partial::default();
        for b in &out {
            partial.groups.extend(partial_from_batch(spec, b)?.groups);
        }
        // One chunk's groups, merged and sorted like the reducer's, for a stable record.
        merge(spec, [partial])
    }

    fn cast_expr(e: Expr, t: DataType) -> Expr {
        datafusion::logical_expr::cast(e, t)
    }
}
