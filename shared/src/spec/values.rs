//! Values written in a spec: types, sizes, literals, and the small predicates the checks share.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Schema, TimeUnit};

/// Letters, digits and `_`, not starting with a digit: a name SQL takes unquoted.
pub(super) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// The schema's column names, for a message about an unknown one.
pub(super) fn columns_hint(schema: &Schema) -> String {
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    format!("the columns are {}", names.join(", "))
}

/// A spec value as written: strings without their JSON quotes.
pub(super) fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `min`/`max` apply to a type.
pub(crate) fn is_ordered(t: &DataType) -> bool {
    is_numeric(t)
        || matches!(
            t,
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
        )
}

/// Whether `sum`/`avg` apply to a type.
pub(crate) fn is_numeric(t: &DataType) -> bool {
    t.is_integer()
        || t.is_floating()
        || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..))
}

/// A spec value as a one-element array of `data_type`, or `None` if it is not one.
pub(super) fn literal(v: &serde_json::Value, data_type: &DataType) -> Option<ArrayRef> {
    let text = plain(v);
    let a: ArrayRef = Arc::new(StringArray::from(vec![text]));
    let opts = CastOptions {
        safe: true,
        ..Default::default()
    };
    let out = cast_with_options(&a, data_type, &opts).ok()?;
    out.is_valid(0).then_some(out)
}

/// The canonical text of values, as used by `one_of`.
pub(crate) fn canonical_text(a: &ArrayRef) -> Result<StringArray, arrow::error::ArrowError> {
    let t = arrow::compute::cast(a, &DataType::Utf8)?;
    Ok(t.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::from(Vec::<Option<String>>::new())))
}

/// Parses a column type: `int8`…`int64`, `uint8`…`uint64`, `float32`, `float64`, `bool`,
/// `utf8`, `date32`, `decimal(p,s)`, `timestamp(unit[, zone])`.
///
/// ```
/// use arrow::datatypes::{DataType, TimeUnit};
/// assert_eq!(fanout::spec::parse_type("decimal(12,2)").unwrap(), DataType::Decimal128(12, 2));
/// assert_eq!(
///     fanout::spec::parse_type("timestamp(ms, UTC)").unwrap(),
///     DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
/// );
/// assert!(fanout::spec::parse_type("decimal(40,2)").is_err());
/// ```
pub fn parse_type(text: &str) -> Result<DataType, String> {
    let t = text.trim().to_ascii_lowercase();
    let simple = match t.as_str() {
        "int8" | "tinyint" => Some(DataType::Int8),
        "int16" | "smallint" => Some(DataType::Int16),
        "int32" | "int" | "integer" => Some(DataType::Int32),
        "int64" | "bigint" | "long" => Some(DataType::Int64),
        "uint8" => Some(DataType::UInt8),
        "uint16" => Some(DataType::UInt16),
        "uint32" => Some(DataType::UInt32),
        "uint64" => Some(DataType::UInt64),
        "float32" | "float" | "real" => Some(DataType::Float32),
        "float64" | "double" => Some(DataType::Float64),
        "bool" | "boolean" => Some(DataType::Boolean),
        "utf8" | "string" | "text" | "varchar" => Some(DataType::Utf8),
        "date32" | "date" => Some(DataType::Date32),
        "timestamp" => Some(DataType::Timestamp(TimeUnit::Microsecond, None)),
        _ => None,
    };
    if let Some(s) = simple {
        return Ok(s);
    }
    let expected = "expected int8…int64, uint8…uint64, float32, float64, bool, utf8, date32, decimal(p,s) or timestamp(unit[, zone])";
    let (head, args) = t
        .split_once('(')
        .and_then(|(h, rest)| rest.strip_suffix(')').map(|a| (h.trim(), a)))
        .ok_or_else(|| format!("unknown type `{text}`: {expected}"))?;
    match head {
        "decimal" | "numeric" => {
            let (p, s) = args
                .split_once(',')
                .ok_or_else(|| format!("`{text}`: decimal needs (precision, scale)"))?;
            let p: u8 = p
                .trim()
                .parse()
                .map_err(|_| format!("`{text}`: bad precision"))?;
            let s: i8 = s
                .trim()
                .parse()
                .map_err(|_| format!("`{text}`: bad scale"))?;
            if !(1..=38).contains(&p) || s < 0 || s as u8 > p {
                return Err(format!(
                    "`{text}`: precision must be 1–38 and scale 0–precision"
                ));
            }
            Ok(DataType::Decimal128(p, s))
        }
        "timestamp" => {
            let original_args = text
                .trim()
                .split_once('(')
                .and_then(|(_, r)| r.strip_suffix(')'))
                .unwrap_or(args);
            let mut parts = original_args.splitn(2, ',');
            let unit = match parts
                .next()
                .map(|u| u.trim().to_ascii_lowercase())
                .as_deref()
            {
                Some("s" | "second") => TimeUnit::Second,
                Some("ms" | "millisecond") => TimeUnit::Millisecond,
                Some("us" | "microsecond") => TimeUnit::Microsecond,
                Some("ns" | "nanosecond") => TimeUnit::Nanosecond,
                _ => return Err(format!("`{text}`: the unit must be s, ms, us or ns")),
            };
            let zone = parts
                .next()
                .map(|z| z.trim().to_string())
                .filter(|z| !z.is_empty());
            if let Some(z) = &zone
                && z.parse::<arrow::array::timezone::Tz>().is_err()
            {
                return Err(format!(
                    "`{text}`: unknown time zone `{z}` (use UTC, +02:00 or an IANA name)"
                ));
            }
            Ok(DataType::Timestamp(unit, zone.map(Into::into)))
        }
        _ => Err(format!("unknown type `{text}`: {expected}")),
    }
}

/// Parses a size: a byte count or a number with a unit (`64MiB`, `1 GiB`, `500KB`).
///
/// ```
/// assert_eq!(fanout::spec::parse_size("64MiB").unwrap(), 64 << 20);
/// assert_eq!(fanout::spec::parse_size("1.5 KiB").unwrap(), 1536);
/// assert!(fanout::spec::parse_size("12 parsecs").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 64MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        u => {
            return Err(format!(
                "`{text}`: unknown unit `{u}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes.round() as u64)
}
