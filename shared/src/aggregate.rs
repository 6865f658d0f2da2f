//! Partial aggregates per chunk and their exact merge.
//!
//! A worker computes, per group, a state for each measure ([`Partial`]); the reducer adds
//! states up. Integer and decimal sums are kept as exact 128-bit integers (the decimal's
//! unscaled value), so the job's totals do not depend on how the input was cut.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
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
            if g.states.len() != spec.measures.len() {
                return Err(Error::Transform {
                    message: format!(
                        "a partial has {} measures, the spec {}",
                        g.states.len(),
                        spec.measures.len()
                    ),
                });
            }
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
    groups.sort_by(|a, b| {
        a.key
            .iter()
            .zip(&b.key)
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    });
    Ok(Partial { groups })
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

fn scalars_to_array(values: &[Scalar], t: &DataType) -> Result<ArrayRef> {
    let ints = || values.iter().map(Scalar::as_i128).collect::<Vec<_>>();
    Ok(match t {
        DataType::Decimal128(p, s) => {
            Arc::new(Decimal128Array::from(ints()).with_precision_and_scale(*p, *s)?)
        }
        DataType::Date32 | DataType::Time32(_) => {
            let a: ArrayRef = Arc::new(Int32Array::from(
                ints()
                    .into_iter()
                    .map(|v| v.map(|v| v as i32))
                    .collect::<Vec<_>>(),
            ));
            cast(&a, t)?
        }
        _ if t.is_integer()
            || matches!(
                t,
                DataType::Date64
                    | DataType::Timestamp(..)
                    | DataType::Time64(_)
                    | DataType::Duration(_)
            ) =>
        {
            let a: ArrayRef =
                Arc::new(Decimal128Array::from(ints()).with_precision_and_scale(38, 0)?);
            let a = cast(&a, &DataType::Int64)?;
            cast(&a, t)?
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let a: ArrayRef = Arc::new(Float64Array::from(
                values
                    .iter()
                    .map(|v| {
                        if let Scalar::Float(f) = v {
                            Some(*f)
                        } else {
                            None
                        }
                    })
                    .collect::<Vec<_>>(),
            ));
            cast(&a, t)?
        }
        DataType::Boolean => Arc::new(BooleanArray::from(
            values
                .iter()
                .map(|v| {
                    if let Scalar::Bool(b) = v {
                        Some(*b)
                    } else {
                        None
                    }
                })
                .collect::<Vec<_>>(),
        )),
        _ => {
            let a: ArrayRef = Arc::new(StringArray::from(
                values
                    .iter()
                    .map(|v| {
                        if let Scalar::Str(s) = v {
                            Some(s.clone())
                        } else {
                            None
                        }
                    })
                    .collect::<Vec<_>>(),
            ));
            cast(&a, t)?
        }
    })
}

/// Rounds `num / den` half away from zero.
fn div_round(num: i128, den: i128) -> i128 {
    let q = num / den;
    let r = num % den;
    if 2 * r.abs() >= den.abs() {
        q + num.signum() * den.signum()
    } else {
        q
    }
}

/// The final aggregate table: key columns in their own types, then one column per measure.
///
/// `schema` is the schema of the transformed rows the aggregate ran over.
pub fn finish(spec: &AggregateSpec, schema: &Schema, merged: &Partial) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, g) in spec.group_by.iter().enumerate() {
        let t = column_type(schema, g)?;
        let values: Vec<Scalar> = merged.groups.iter().map(|x| x.key[i].clone()).collect();
        columns.push(scalars_to_array(&values, &t)?);
        fields.push(Field::new(g, t, true));
    }
    for (i, m) in spec.measures.iter().enumerate() {
        let states = merged.groups.iter().map(|g| &g.states[i]);
        let measured = || column_type(schema, m.column.as_deref().unwrap_or_default());
        let (t, a) = match m.function {
            AggFn::Count => count_column(states),
            AggFn::Sum | AggFn::Min | AggFn::Max => value_column(m.function, measured()?, states)?,
            AggFn::Avg => avg_column(measured()?, states)?,
        };
        fields.push(Field::new(&m.name, t, true));
        columns.push(a);
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    Ok(RecordBatch::try_new_with_options(
        schema,
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(merged.groups.len())),
    )?)
}

/// The type of the transformed rows' column `name`.
fn column_type(schema: &Schema, name: &str) -> Result<DataType> {
    schema
        .field_with_name(name)
        .map(|f| f.data_type().clone())
        .map_err(|_| Error::Transform {
            message: format!("aggregate column `{name}` is not in the transformed rows"),
        })
}

/// A count measure's column.
fn count_column<'a>(states: impl Iterator<Item = &'a State>) -> (DataType, ArrayRef) {
    (
        DataType::Int64,
        Arc::new(Int64Array::from(
            states
                .map(|s| {
                    if let State::Count(n) = s {
                        *n as i64
                    } else {
                        0
                    }
                })
                .collect::<Vec<_>>(),
        )),
    )
}

/// A sum, min or max measure's column, over a column of type `col_t`.
fn value_column<'a>(
    function: AggFn,
    col_t: DataType,
    states: impl Iterator<Item = &'a State>,
) -> Result<(DataType, ArrayRef)> {
    let values: Vec<Scalar> = states
        .map(|s| {
            if let State::Value(v) = s {
                v.clone()
            } else {
                Scalar::Null
            }
        })
        .collect();
    let t = if function == AggFn::Sum {
        let st = sum_type(&col_t);
        // An integer sum that fits stays an integer column.
        if col_t.is_integer()
            && values
                .iter()
                .all(|v| v.as_i128().is_none_or(|x| i64::try_from(x).is_ok()))
        {
            DataType::Int64
        } else {
            st
        }
    } else {
        col_t
    };
    Ok((t.clone(), scalars_to_array(&values, &t)?))
}

/// An avg measure's column, over a column of type `col_t`.
fn avg_column<'a>(
    col_t: DataType,
    states: impl Iterator<Item = &'a State>,
) -> Result<(DataType, ArrayRef)> {
    let pairs: Vec<(Scalar, u64)> = states
        .map(|s| {
            if let State::Avg { sum, count } = s {
                (sum.clone(), *count)
            } else {
                (Scalar::Null, 0)
            }
        })
        .collect();
    Ok(match col_t {
        DataType::Decimal128(_, s) | DataType::Decimal256(_, s) => {
            // Spark's rule: the average of decimal(p, s) has scale s + 4.
            let out_scale = (s + 4).min(38);
            let factor = 10i128.pow((out_scale - s) as u32);
            let v: Vec<Option<i128>> = pairs
                .iter()
                .map(|(sum, n)| match (sum.as_i128(), n) {
                    (Some(x), n) if *n > 0 => {
                        x.checked_mul(factor).map(|x| div_round(x, *n as i128))
                    }
                    _ => None,
                })
                .collect();
            let t = DataType::Decimal128(38, out_scale);
            (
                t,
                Arc::new(Decimal128Array::from(v).with_precision_and_scale(38, out_scale)?),
            )
        }
        _ => {
            let v: Vec<Option<f64>> = pairs
                .iter()
                .map(|(sum, n)| {
                    if *n == 0 {
                        return None;
                    }
                    match sum {
                        Scalar::Int(_) => sum.as_i128().map(|x| x as f64 / *n as f64),
                        Scalar::Float(f) => Some(f / *n as f64),
                        _ => None,
                    }
                })
                .collect();
            (DataType::Float64, Arc::new(Float64Array::from(v)))
        }
    })
}

/// The aggregate table as JSON rows: integers and floats as numbers, other values
/// (decimals included, to stay exact) as their text.
pub fn to_json_rows(batch: &RecordBatch) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let opts = arrow::util::display::FormatOptions::default();
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &opts).ok())
        .collect();
    (0..batch.num_rows())
        .map(|r| {
            let mut m = serde_json::Map::new();
            for (i, f) in batch.schema().fields().iter().enumerate() {
                let c = batch.column(i);
                let v = if c.is_null(r) {
                    serde_json::Value::Null
                } else if let Some(a) = c.as_any().downcast_ref::<Int64Array>() {
                    serde_json::Value::from(a.value(r))
                } else if let Some(a) = c.as_any().downcast_ref::<Float64Array>() {
                    serde_json::Number::from_f64(a.value(r))
                        .map_or(serde_json::Value::Null, serde_json::Value::Number)
                } else if let Some(a) = c.as_any().downcast_ref::<BooleanArray>() {
                    serde_json::Value::Bool(a.value(r))
                } else {
                    formatters[i].as_ref().map_or(serde_json::Value::Null, |f| {
                        serde_json::Value::String(f.value(r).to_string())
                    })
                };
                m.insert(f.name().clone(), v);
            }
            m
        })
        .collect()
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
