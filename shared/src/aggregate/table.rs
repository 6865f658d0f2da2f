//! The final aggregate table: merged groups to Arrow columns in the measures' own types,
//! and to JSON rows.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{Group, Partial, Scalar, State, sum_type};
use crate::spec::{AggFn, AggregateSpec};
use crate::{Error, Result};

/// Per measure, whether its integer sums need the wide column (some value outside `i64`,
/// see [`finish`]): tracked over the merged groups as they stream by.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WideSums(Vec<bool>);

impl WideSums {
    /// No group seen yet.
    pub fn new(spec: &AggregateSpec) -> WideSums {
        WideSums(vec![false; spec.measures.len()])
    }

    /// Takes one merged group into account.
    pub fn see(&mut self, g: &Group) {
        for (wide, s) in self.0.iter_mut().zip(&g.states) {
            if let State::Value(v) = s
                && v.as_i128().is_some_and(|x| i64::try_from(x).is_err())
            {
                *wide = true;
            }
        }
    }

    /// Over every group of `groups`.
    pub fn of(spec: &AggregateSpec, groups: &[Group]) -> WideSums {
        let mut w = WideSums::new(spec);
        groups.iter().for_each(|g| w.see(g));
        w
    }

    /// Known before merging when it can be: every measure's magnitudes of exact integer
    /// states (see [`magnitudes`]) summed over the partials fit `i64`, so no merged sum can
    /// be wide. `None` when some bound does not fit: only the merged groups tell.
    pub fn from_bounds<'a>(
        spec: &AggregateSpec,
        partials: impl IntoIterator<Item = &'a [u128]>,
    ) -> Option<WideSums> {
        let mut total = vec![0u128; spec.measures.len()];
        for m in partials {
            for (t, x) in total.iter_mut().zip(m) {
                *t = t.saturating_add(*x);
            }
        }
        total
            .iter()
            .all(|t| *t <= i64::MAX as u128)
            .then(|| WideSums::new(spec))
    }

    fn get(&self, measure: usize) -> bool {
        self.0.get(measure).copied().unwrap_or(false)
    }
}

/// Raises `into` (one entry per measure) to the magnitude of `g`'s exact integer states.
pub fn magnitudes(into: &mut Vec<u128>, g: &Group) {
    if into.len() < g.states.len() {
        into.resize(g.states.len(), 0);
    }
    for (m, s) in into.iter_mut().zip(&g.states) {
        if let State::Value(v) = s
            && let Some(x) = v.as_i128()
        {
            *m = (*m).max(x.unsigned_abs());
        }
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
/// An integer sum is an `int64` column when every group's sum fits, else `decimal(38,0)`.
///
/// `schema` is the schema of the transformed rows the aggregate ran over.
pub fn finish(spec: &AggregateSpec, schema: &Schema, merged: &Partial) -> Result<RecordBatch> {
    finish_groups(
        spec,
        schema,
        &merged.groups,
        &WideSums::of(spec, &merged.groups),
    )
}

/// [`finish`] for a slice of the merged groups, with the integer sums' width decided over
/// all of them (`wide`), so every slice of one aggregate has the same columns.
pub fn finish_groups(
    spec: &AggregateSpec,
    schema: &Schema,
    groups: &[Group],
    wide: &WideSums,
) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, g) in spec.group_by.iter().enumerate() {
        let t = column_type(schema, g)?;
        let values: Vec<Scalar> = groups.iter().map(|x| x.key[i].clone()).collect();
        columns.push(scalars_to_array(&values, &t)?);
        fields.push(Field::new(g, t, true));
    }
    for (i, m) in spec.measures.iter().enumerate() {
        let states = groups.iter().map(|g| &g.states[i]);
        let measured = || column_type(schema, m.column.as_deref().unwrap_or_default());
        let (t, a) = match m.function {
            AggFn::Count => count_column(states),
            AggFn::Sum | AggFn::Min | AggFn::Max => {
                value_column(m.function, measured()?, wide.get(i), states)?
            }
            AggFn::Avg => avg_column(measured()?, states)?,
        };
        fields.push(Field::new(&m.name, t, true));
        columns.push(a);
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    Ok(RecordBatch::try_new_with_options(
        schema,
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(groups.len())),
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

/// A sum, min or max measure's column, over a column of type `col_t`; `wide`: some
/// integer sum of the aggregate does not fit `i64`.
fn value_column<'a>(
    function: AggFn,
    col_t: DataType,
    wide: bool,
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
        if col_t.is_integer() && !wide {
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
