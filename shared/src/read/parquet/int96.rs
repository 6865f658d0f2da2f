//! INT96 timestamps (Impala, Hive, Spark) read exactly, or refused by the `type` rule.
//!
//! parquet-rs turns an INT96 (Julian day, nanosecond of the day) into an i64 count of the
//! column's arrow unit with wrapping arithmetic, so a date past 2262 in nanoseconds
//! (Spark writes `9999-12-31` for "no end") came out as an instant in 1816, silently. The
//! INT96 columns are decoded a second time as whole seconds, which cannot wrap (the day
//! is 32 bits), and the two decodes give the exact instant: the seconds, plus the
//! sub-second part the wrapped value still holds modulo 2^64. The instant is then given
//! in the coarser of the file's and the spec's unit (what the transform's cast would have
//! computed, had nothing wrapped); a value that unit cannot hold rejects its record.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{
    DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use parquet::basic::Type as PhysicalType;
use parquet::file::metadata::ParquetMetaData;

use super::super::{Origin, PendingReject};
use crate::Result;

/// The spec's columns stored as INT96 in the file: (name, root index in the file).
pub(super) fn columns(
    meta: &ParquetMetaData,
    schema: &Schema,
    file_schema: &Schema,
) -> Vec<(String, usize)> {
    let roots = meta
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields();
    schema
        .fields()
        .iter()
        .filter_map(|f| {
            let i = file_schema.index_of(f.name()).ok()?;
            let t = roots.get(i)?;
            (t.is_primitive() && t.get_physical_type() == PhysicalType::INT96)
                .then(|| (f.name().clone(), i))
        })
        .collect()
}

/// `file_schema` with the INT96 columns read as whole seconds.
pub(super) fn seconds_schema(file_schema: &Schema, int96: &[(String, usize)]) -> Schema {
    let fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if int96.iter().any(|(_, r)| *r == i) {
                f.as_ref()
                    .clone()
                    .with_data_type(DataType::Timestamp(TimeUnit::Second, None))
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Schema::new_with_metadata(fields, file_schema.metadata().clone())
}

fn per_second(unit: TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

/// The i64 values of a timestamp column of any unit.
fn raw(col: &ArrayRef) -> PrimitiveArray<Int64Type> {
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            col.as_primitive::<TimestampSecondType>().reinterpret_cast()
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => col
            .as_primitive::<TimestampMillisecondType>()
            .reinterpret_cast(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => col
            .as_primitive::<TimestampMicrosecondType>()
            .reinterpret_cast(),
        _ => col
            .as_primitive::<TimestampNanosecondType>()
            .reinterpret_cast(),
    }
}

/// The instant `seconds` + `sub` (in `unit`s), as text for a reject message.
fn describe(seconds: i64, sub: i128, unit: TimeUnit) -> String {
    let nanos = (sub * 1_000_000_000 / per_second(unit)) as u32;
    match chrono::DateTime::from_timestamp(seconds, nanos) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
        None => format!("{seconds} seconds from 1970"),
    }
}

/// One INT96 column made exact: the values in `out_unit` (null where the instant does
/// not fit), and the rows whose instant does not fit, with their text.
fn exact_column(
    decoded: &ArrayRef,
    seconds: &ArrayRef,
    out_unit: TimeUnit,
) -> (Vec<Option<i64>>, Vec<(usize, String)>) {
    let DataType::Timestamp(file_unit, _) = decoded.data_type() else {
        return ((0..decoded.len()).map(|_| None).collect(), Vec::new());
    };
    let file_per_s = per_second(*file_unit);
    let divisor = file_per_s / per_second(out_unit);
    let values = raw(decoded);
    let secs = raw(seconds);
    let mut out = Vec::with_capacity(values.len());
    let mut beyond = Vec::new();
    for r in 0..values.len() {
        if values.is_null(r) || secs.is_null(r) {
            out.push(None);
            continue;
        }
        let s = secs.value(r);
        // The sub-second part is small, so the wrapped difference is exact.
        let sub = values
            .value(r)
            .wrapping_sub(s.wrapping_mul(file_per_s as i64)) as i128;
        let exact = i128::from(s) * file_per_s + sub;
        // Truncated toward zero, as arrow's cast between units does.
        match i64::try_from(exact / divisor) {
            Ok(v) => out.push(Some(v)),
            Err(_) => {
                out.push(None);
                beyond.push((r, describe(s, sub, *file_unit)));
            }
        }
    }
    (out, beyond)
}

fn timestamp_array(values: Vec<Option<i64>>, unit: TimeUnit, tz: Option<Arc<str>>) -> ArrayRef {
    match unit {
        TimeUnit::Second => {
            Arc::new(PrimitiveArray::<TimestampSecondType>::from(values).with_timezone_opt(tz))
        }
        TimeUnit::Millisecond => {
            Arc::new(PrimitiveArray::<TimestampMillisecondType>::from(values).with_timezone_opt(tz))
        }
        TimeUnit::Microsecond => {
            Arc::new(PrimitiveArray::<TimestampMicrosecondType>::from(values).with_timezone_opt(tz))
        }
        TimeUnit::Nanosecond => {
            Arc::new(PrimitiveArray::<TimestampNanosecondType>::from(values).with_timezone_opt(tz))
        }
    }
}

/// `batch` (in the spec's columns) with its INT96 columns exact; records whose instant
/// the column's unit cannot hold are taken out, with their `type` rejects.
pub(super) fn make_exact(
    batch: RecordBatch,
    seconds: &RecordBatch,
    schema: &Schema,
    origins: Vec<Origin>,
) -> Result<(RecordBatch, Vec<Origin>, Vec<PendingReject>)> {
    let mut columns = batch.columns().to_vec();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut refused: Vec<Option<PendingReject>> = vec![None; batch.num_rows()];
    for (i, spec_field) in schema.fields().iter().enumerate() {
        let Ok(s) = seconds.schema().index_of(spec_field.name()) else {
            continue;
        };
        let DataType::Timestamp(file_unit, tz) = columns[i].data_type().clone() else {
            continue;
        };
        // The coarser unit: a finer spec unit is reached by the transform's checked cast.
        let out_unit = match spec_field.data_type() {
            DataType::Timestamp(u, _) if per_second(*u) < per_second(file_unit) => *u,
            _ => file_unit,
        };
        let (values, beyond) = exact_column(&columns[i], seconds.column(s), out_unit);
        let out_type = DataType::Timestamp(out_unit, tz.clone());
        for (r, text) in beyond {
            refused[r].get_or_insert_with(|| PendingReject {
                origin: origins[r],
                rule: "type".into(),
                column: Some(spec_field.name().clone()),
                message: format!("`{text}` (INT96) is beyond the range of {out_type}"),
            });
        }
        columns[i] = timestamp_array(values, out_unit, tz);
        fields[i] = fields[i]
            .clone()
            .with_data_type(columns[i].data_type().clone());
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    if refused.iter().all(Option::is_none) {
        return Ok((batch, origins, Vec::new()));
    }
    let keep = BooleanArray::from(refused.iter().map(Option::is_none).collect::<Vec<_>>());
    let origins = origins
        .into_iter()
        .zip(&refused)
        .filter(|(_, r)| r.is_none())
        .map(|(o, _)| o)
        .collect();
    let batch = filter_record_batch(&batch, &keep)?;
    Ok((batch, origins, refused.into_iter().flatten().collect()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, TimestampNanosecondArray, TimestampSecondArray};
    use arrow::compute::cast;
    use arrow::datatypes::{DataType, TimeUnit};

    use super::exact_column;

    #[test]
    fn an_instant_past_2262_is_refused_in_nanoseconds_and_exact_in_milliseconds() {
        // 9999-12-31T00:00:00.5 as parquet-rs decodes it: nanoseconds wrapped modulo 2^64.
        let s: i64 = 253_402_214_400;
        let wrapped = s.wrapping_mul(1_000_000_000).wrapping_add(500_000_000);
        let decoded: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![Some(wrapped), None]));
        let seconds: ArrayRef = Arc::new(TimestampSecondArray::from(vec![Some(s), None]));
        let (values, beyond) = exact_column(&decoded, &seconds, TimeUnit::Nanosecond);
        assert_eq!(values, vec![None, None]);
        assert_eq!(beyond, vec![(0, "9999-12-31T00:00:00.500".to_string())]);
        let (values, beyond) = exact_column(&decoded, &seconds, TimeUnit::Millisecond);
        assert_eq!(values, vec![Some(s * 1000 + 500), None]);
        assert!(beyond.is_empty());
    }

    #[test]
    fn an_instant_in_range_is_what_the_cast_between_units_gives() {
        // Before 1970 with a fraction: the cast truncates toward zero, and so must this.
        let ns = [-1_500_000_001_i64, 1_700_000_000_123_456_789, 0];
        let decoded: ArrayRef = Arc::new(TimestampNanosecondArray::from(ns.to_vec()));
        let seconds: ArrayRef = Arc::new(TimestampSecondArray::from(
            ns.iter()
                .map(|v| v.div_euclid(1_000_000_000))
                .collect::<Vec<_>>(),
        ));
        let cast_ms = cast(&decoded, &DataType::Timestamp(TimeUnit::Millisecond, None)).unwrap();
        let cast_ms = super::raw(&cast_ms);
        let (values, beyond) = exact_column(&decoded, &seconds, TimeUnit::Millisecond);
        assert!(beyond.is_empty());
        let want: Vec<Option<i64>> = cast_ms.iter().collect();
        assert_eq!(values, want);
        let (values, _) = exact_column(&decoded, &seconds, TimeUnit::Nanosecond);
        assert_eq!(values, ns.iter().copied().map(Some).collect::<Vec<_>>());
    }
}
