//! Typed columns the text readers' fast paths build straight from value text.
//!
//! The fast paths of [`super::csv_fast`] and [`super::jsonl`] parse each value into its
//! column's type in place instead of keeping it as text for [`crate::transform::conform`]
//! to cast. They accept only a strict subset of what the cast accepts (plain integers,
//! plain decimals within precision and scale, plain floats, `YYYY-MM-DD` dates,
//! `true`/`false`, text), for which both give the same value; a value outside it is
//! refused ([`Column::push`] returns `false`) and the reader takes its general way.
//! Columns can be cut back to a row count ([`Column::truncate`]), so a record refused
//! halfway through its fields leaves nothing behind.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, NullBufferBuilder,
    PrimitiveArray, RecordBatch, RecordBatchOptions, StringArray,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{
    ArrowNativeType, ArrowPrimitiveType, DataType, Date32Type, Decimal128Type, Field, Float32Type,
    Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, Schema, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};

/// Whether the fast paths parse a column of this type themselves (others are kept as
/// text and cast by [`crate::transform::conform`], as on the general paths).
pub(crate) fn parses(t: &DataType) -> bool {
    match t {
        DataType::Decimal128(p, s) => *s >= 0 && (*s as u8) <= *p,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Date32
        | DataType::Boolean
        | DataType::Utf8 => true,
        _ => false,
    }
}

/// The type a fast path builds a column of `t` in: `t` itself, or text.
pub(crate) fn built_type(t: &DataType) -> DataType {
    if parses(t) { t.clone() } else { DataType::Utf8 }
}

pub(crate) fn digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// `-?d+` within `T`'s range (no sign on unsigned types, as `str::parse` reads it).
pub(crate) fn int<T: TryFrom<i128>>(s: &[u8]) -> Option<T> {
    let (neg, body) = match s.strip_prefix(b"-") {
        Some(_) if T::try_from(-1).is_err() => return None,
        Some(b) => (true, b),
        None => (false, s),
    };
    if body.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in body {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    let v = i128::from(v);
    T::try_from(if neg { -v } else { v }).ok()
}

pub(crate) fn float<T: std::str::FromStr>(s: &[u8]) -> Option<T> {
    // `-?d+(.d+)?([eE][+-]?d+)?`: read the same by every correctly rounding parser.
    let body = s.strip_prefix(b"-").unwrap_or(s);
    let (mantissa, exp) = match body.iter().position(|b| *b == b'e' || *b == b'E') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let ok_mantissa = match mantissa.iter().position(|b| *b == b'.') {
        Some(i) => digits(&mantissa[..i]) && digits(&mantissa[i + 1..]),
        None => digits(mantissa),
    };
    let ok_exp =
        exp.is_none_or(|e| digits(e.strip_prefix(b"-").or(e.strip_prefix(b"+")).unwrap_or(e)));
    if !(ok_mantissa && ok_exp) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

pub(crate) fn decimal(s: &[u8], precision: u8, scale: i8) -> Option<i128> {
    let (neg, body) = match s.strip_prefix(b"-") {
        Some(b) => (true, b),
        None => (false, s),
    };
    let scale = scale as usize;
    if precision > 18 {
        return wide_decimal(body, neg, precision as usize, scale);
    }
    // One pass: at most `precision` (<= 18) digits, so an i64 holds the value.
    let max_whole = precision as usize - scale;
    let mut v: i64 = 0;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if i == max_whole {
            return None;
        }
        v = v * 10 + i64::from(d);
        i += 1;
    }
    if i == 0 {
        return None;
    }
    let mut frac = 0;
    if let Some(&b) = body.get(i) {
        if b != b'.' || i + 1 == body.len() {
            return None;
        }
        for &b in &body[i + 1..] {
            let d = b.wrapping_sub(b'0');
            if d > 9 || frac == scale {
                return None;
            }
            v = v * 10 + i64::from(d);
            frac += 1;
        }
    }
    let v = v * 10i64.pow((scale - frac) as u32);
    Some(i128::from(if neg { -v } else { v }))
}

/// [`decimal`] of a precision over 18, accumulated in an i128.
fn wide_decimal(body: &[u8], neg: bool, precision: usize, scale: usize) -> Option<i128> {
    let (whole, frac) = match memchr::memchr(b'.', body) {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &body[..0]),
    };
    if !digits(whole)
        || (body.len() > whole.len() && !digits(frac))
        || frac.len() > scale
        || whole.len() > precision - scale
    {
        return None;
    }
    let mut v: i128 = 0;
    for d in whole.iter().chain(frac) {
        v = v * 10 + i128::from(d - b'0');
    }
    let v = v * 10i128.pow((scale - frac.len()) as u32);
    Some(if neg { -v } else { v })
}

/// `YYYY-MM-DD`, a valid proleptic Gregorian date, as days since 1970-01-01.
pub(crate) fn date(s: &[u8]) -> Option<i32> {
    if s.len() != 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = &s[r];
        digits(d).then(|| d.iter().fold(0u32, |a, b| a * 10 + u32::from(b - b'0')))
    };
    let (y, m, d) = (n(0..4)? as i32, n(5..7)?, n(8..10)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if d == 0 || d > month_days {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Days since 1970-01-01 of a valid date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = (y - era * 400) as u32;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i32 - 719_468
}

/// Values of one primitive type and their validity, cut back by [`Prim::truncate`].
pub(crate) struct Prim<T> {
    values: Vec<T>,
    nulls: NullBufferBuilder,
}

impl<T: ArrowNativeType> Prim<T> {
    fn with_capacity(capacity: usize) -> Self {
        Prim {
            values: Vec::with_capacity(capacity),
            nulls: NullBufferBuilder::new(capacity),
        }
    }

    #[inline]
    fn push(&mut self, v: Option<T>) {
        match v {
            Some(x) => {
                self.values.push(x);
                self.nulls.append_non_null();
            }
            None => {
                self.values.push(T::default());
                self.nulls.append_null();
            }
        }
    }

    fn truncate(&mut self, rows: usize) {
        self.values.truncate(rows);
        self.nulls.truncate(rows);
    }

    fn finish<P: ArrowPrimitiveType<Native = T>>(&mut self) -> PrimitiveArray<P> {
        let values = ScalarBuffer::from(std::mem::take(&mut self.values));
        PrimitiveArray::new(values, self.nulls.finish())
    }
}

/// Text values: their bytes, checked as UTF-8 once for the whole column when finished
/// (one check of a column is much cheaper than one per value).
pub(crate) struct Texts {
    offsets: Vec<i32>,
    data: Vec<u8>,
    nulls: NullBufferBuilder,
}

impl Texts {
    /// `false` when the column would pass 2 GiB, which its i32 offsets cannot address.
    #[inline]
    fn push(&mut self, v: Option<&[u8]>) -> bool {
        if let Some(s) = v {
            self.data.extend_from_slice(s);
        }
        let Ok(end) = i32::try_from(self.data.len()) else {
            self.data
                .truncate(self.offsets.last().map_or(0, |&o| o as usize));
            return false;
        };
        self.offsets.push(end);
        if v.is_some() {
            self.nulls.append_non_null();
        } else {
            self.nulls.append_null();
        }
        true
    }

    fn truncate(&mut self, rows: usize) {
        self.offsets.truncate(rows + 1);
        self.data
            .truncate(self.offsets.last().map_or(0, |&o| o as usize));
        self.nulls.truncate(rows);
    }

    fn finish(&mut self) -> Option<StringArray> {
        let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(
            &mut self.offsets,
            vec![0],
        )));
        let data = Buffer::from_vec(std::mem::take(&mut self.data));
        StringArray::try_new(offsets, data, self.nulls.finish()).ok()
    }
}

/// One column of a fast path's batch, in its built type ([`built_type`]).
pub(crate) enum Column {
    I8(Prim<i8>),
    I16(Prim<i16>),
    I32(Prim<i32>),
    I64(Prim<i64>),
    U8(Prim<u8>),
    U16(Prim<u16>),
    U32(Prim<u32>),
    U64(Prim<u64>),
    F32(Prim<f32>),
    F64(Prim<f64>),
    Dec(Prim<i128>, u8, i8),
    Date(Prim<i32>),
    Bool(BooleanBufferBuilder, NullBufferBuilder),
    Text(Texts),
}

impl Column {
    /// An empty column for values of type `t`; `text_bytes` is a text column's first
    /// allocation.
    pub(crate) fn new(t: &DataType, capacity: usize, text_bytes: usize) -> Column {
        match t {
            DataType::Int8 => Column::I8(Prim::with_capacity(capacity)),
            DataType::Int16 => Column::I16(Prim::with_capacity(capacity)),
            DataType::Int32 => Column::I32(Prim::with_capacity(capacity)),
            DataType::Int64 => Column::I64(Prim::with_capacity(capacity)),
            DataType::UInt8 => Column::U8(Prim::with_capacity(capacity)),
            DataType::UInt16 => Column::U16(Prim::with_capacity(capacity)),
            DataType::UInt32 => Column::U32(Prim::with_capacity(capacity)),
            DataType::UInt64 => Column::U64(Prim::with_capacity(capacity)),
            DataType::Float32 => Column::F32(Prim::with_capacity(capacity)),
            DataType::Float64 => Column::F64(Prim::with_capacity(capacity)),
            DataType::Decimal128(p, s) if parses(t) => {
                Column::Dec(Prim::with_capacity(capacity), *p, *s)
            }
            DataType::Date32 => Column::Date(Prim::with_capacity(capacity)),
            DataType::Boolean => Column::Bool(
                BooleanBufferBuilder::new(capacity),
                NullBufferBuilder::new(capacity),
            ),
            _ => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                Column::Text(Texts {
                    offsets,
                    data: Vec::with_capacity(text_bytes),
                    nulls: NullBufferBuilder::new(capacity),
                })
            }
        }
    }

    /// Appends a value (`None`: null); `false` when it is outside the fast paths' subset,
    /// and then nothing is appended.
    #[inline]
    pub(crate) fn push(&mut self, v: Option<&[u8]>) -> bool {
        macro_rules! put {
            ($b:expr, $parse:expr) => {
                match v {
                    None => {
                        $b.push(None);
                        true
                    }
                    Some(s) => match $parse(s) {
                        Some(x) => {
                            $b.push(Some(x));
                            true
                        }
                        None => false,
                    },
                }
            };
        }
        match self {
            Column::I8(b) => put!(b, int::<i8>),
            Column::I16(b) => put!(b, int::<i16>),
            Column::I32(b) => put!(b, int::<i32>),
            Column::I64(b) => put!(b, int::<i64>),
            Column::U8(b) => put!(b, int::<u8>),
            Column::U16(b) => put!(b, int::<u16>),
            Column::U32(b) => put!(b, int::<u32>),
            Column::U64(b) => put!(b, int::<u64>),
            Column::F32(b) => put!(b, float::<f32>),
            Column::F64(b) => put!(b, float::<f64>),
            Column::Dec(b, p, s) => {
                let (p, s) = (*p, *s);
                put!(b, |v| decimal(v, p, s))
            }
            Column::Date(b) => put!(b, date),
            Column::Bool(values, nulls) => {
                let x = match v {
                    None => None,
                    Some(b"true") => Some(true),
                    Some(b"false") => Some(false),
                    Some(_) => return false,
                };
                values.append(x.unwrap_or(false));
                nulls.append(x.is_some());
                true
            }
            Column::Text(t) => t.push(v),
        }
    }

    /// Appends the value of a one-value array of the column's built type (a value
    /// [`cast_text`] converted); `false` when its type is another.
    pub(crate) fn push_array(&mut self, a: &dyn Array) -> bool {
        macro_rules! put {
            ($b:expr, $t:ty) => {
                match a.as_primitive_opt::<$t>() {
                    Some(p) if a.len() == 1 => {
                        $b.push(p.is_valid(0).then(|| p.value(0)));
                        true
                    }
                    _ => false,
                }
            };
        }
        match self {
            Column::I8(b) => put!(b, Int8Type),
            Column::I16(b) => put!(b, Int16Type),
            Column::I32(b) => put!(b, Int32Type),
            Column::I64(b) => put!(b, Int64Type),
            Column::U8(b) => put!(b, UInt8Type),
            Column::U16(b) => put!(b, UInt16Type),
            Column::U32(b) => put!(b, UInt32Type),
            Column::U64(b) => put!(b, UInt64Type),
            Column::F32(b) => put!(b, Float32Type),
            Column::F64(b) => put!(b, Float64Type),
            Column::Dec(b, _, _) => put!(b, Decimal128Type),
            Column::Date(b) => put!(b, Date32Type),
            Column::Bool(values, nulls) => match a.as_boolean_opt() {
                Some(x) if a.len() == 1 => {
                    values.append(x.is_valid(0) && x.value(0));
                    nulls.append(x.is_valid(0));
                    true
                }
                _ => false,
            },
            Column::Text(t) => match a.as_string_opt::<i32>() {
                Some(x) if a.len() == 1 => t.push(x.is_valid(0).then(|| x.value(0).as_bytes())),
                _ => false,
            },
        }
    }

    /// Cuts the column back to its first `rows` values.
    pub(crate) fn truncate(&mut self, rows: usize) {
        match self {
            Column::I8(b) => b.truncate(rows),
            Column::I16(b) => b.truncate(rows),
            Column::I32(b) => b.truncate(rows),
            Column::I64(b) => b.truncate(rows),
            Column::U8(b) => b.truncate(rows),
            Column::U16(b) => b.truncate(rows),
            Column::U32(b) => b.truncate(rows),
            Column::U64(b) => b.truncate(rows),
            Column::F32(b) => b.truncate(rows),
            Column::F64(b) => b.truncate(rows),
            Column::Dec(b, _, _) => b.truncate(rows),
            Column::Date(b) => b.truncate(rows),
            Column::Bool(values, nulls) => {
                values.truncate(rows);
                nulls.truncate(rows);
            }
            Column::Text(t) => t.truncate(rows),
        }
    }

    /// The column's array; `None` when a text column is not valid UTF-8 (the general
    /// paths reject those records one by one).
    pub(crate) fn finish(&mut self) -> Option<ArrayRef> {
        Some(match self {
            Column::I8(b) => Arc::new(b.finish::<Int8Type>()),
            Column::I16(b) => Arc::new(b.finish::<Int16Type>()),
            Column::I32(b) => Arc::new(b.finish::<Int32Type>()),
            Column::I64(b) => Arc::new(b.finish::<Int64Type>()),
            Column::U8(b) => Arc::new(b.finish::<UInt8Type>()),
            Column::U16(b) => Arc::new(b.finish::<UInt16Type>()),
            Column::U32(b) => Arc::new(b.finish::<UInt32Type>()),
            Column::U64(b) => Arc::new(b.finish::<UInt64Type>()),
            Column::F32(b) => Arc::new(b.finish::<Float32Type>()),
            Column::F64(b) => Arc::new(b.finish::<Float64Type>()),
            Column::Dec(b, p, s) => Arc::new(
                b.finish::<Decimal128Type>()
                    .with_precision_and_scale(*p, *s)
                    .ok()?,
            ),
            Column::Date(b) => Arc::new(b.finish::<Date32Type>()),
            Column::Bool(values, nulls) => {
                Arc::new(BooleanArray::new(values.finish(), nulls.finish()))
            }
            Column::Text(t) => Arc::new(t.finish()?),
        })
    }
}

/// Empty columns for `schema`: each in its built type ([`built_type`]).
pub(crate) fn new_columns(schema: &Schema, capacity: usize, text_bytes: usize) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .map(|f| Column::new(&built_type(f.data_type()), capacity, text_bytes))
        .collect()
}

/// The batch of finished `columns` built for `schema`, `rows` long; `None` when a text
/// column is not valid UTF-8.
pub(crate) fn finish_batch(
    columns: &mut [Column],
    schema: &Schema,
    rows: usize,
) -> Option<RecordBatch> {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), built_type(f.data_type()), true))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .iter_mut()
        .map(Column::finish)
        .collect::<Option<_>>()?;
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .ok()
}

/// `text` in the type `to` exactly as [`crate::transform::conform`] converts a text
/// column's value (trimmed, then cast): a one-value array, its value null when the text
/// does not convert.
pub(crate) fn cast_text(text: &str, to: &DataType) -> Result<ArrayRef, arrow::error::ArrowError> {
    let text = if matches!(to, DataType::Utf8 | DataType::LargeUtf8) {
        text
    } else {
        text.trim()
    };
    let one: ArrayRef = Arc::new(StringArray::from(vec![text]));
    let opts = CastOptions {
        safe: true,
        ..Default::default()
    };
    cast_with_options(&one, to, &opts)
}

/// A value's text cut to 80 characters for a message.
pub(crate) fn short(s: &str) -> String {
    if s.len() <= 80 {
        s.to_string()
    } else {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// The message of a text value that does not convert to `to`.
pub(crate) fn unconverted(text: &str, to: &DataType) -> String {
    format!("`{}` is not a valid {to}", short(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn one_pass_decimals_read_as_the_digit_loop(
            s in "-?[0-9]{0,21}(\\.[0-9]{0,21})?[.e5]?",
            p in 1u8..=18,
            scale in 0i8..=18,
        ) {
            prop_assume!(scale as u8 <= p);
            let (neg, body) = match s.strip_prefix('-') {
                Some(b) => (true, b),
                None => (false, s.as_str()),
            };
            let want = wide_decimal(body.as_bytes(), neg, p as usize, scale as usize);
            prop_assert_eq!(decimal(s.as_bytes(), p, scale), want);
        }
    }
}
