//! The `input` section, and the format, CSV dialect and schema that lookups declare too.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};

use super::Checker;
use crate::location::Location;
use crate::spec::raw;
use crate::spec::{
    CsvOptions, DEFAULT_MAX_RECORD_BYTES, DEFAULT_MAX_ROW_GROUP_BYTES, Format, InputCompression,
    InputSpec, MAX_MAX_RECORD_BYTES, parse_type,
};

/// The checked input, each part on its own: later sections need the location and the
/// schema even when another part is wrong.
pub(super) struct InputParts {
    pub(super) location: Option<Location>,
    pub(super) format: Option<Format>,
    pub(super) compression: InputCompression,
    pub(super) csv: CsvOptions,
    pub(super) schema: Option<SchemaRef>,
    pub(super) max_record_bytes: u64,
    pub(super) max_row_group_bytes: u64,
}

impl InputParts {
    /// The input spec, when every part has a value.
    pub(super) fn into_spec(self, raw: raw::RawInput) -> Option<InputSpec> {
        Some(InputSpec {
            location: self.location?,
            include: raw.include,
            exclude: raw.exclude,
            format: self.format?,
            compression: self.compression,
            csv: self.csv,
            schema: self.schema?,
            max_record_bytes: self.max_record_bytes,
            max_row_group_bytes: self.max_row_group_bytes,
        })
    }
}

impl Checker<'_> {
    pub(super) fn resolve_input(&mut self, raw: &raw::RawInput) -> InputParts {
        let location = self.location("input.location", &raw.location);
        let format = self.format("input.format", &raw.format);
        let compression = match raw.compression.as_deref().unwrap_or("auto") {
            "auto" => InputCompression::Auto,
            "none" => InputCompression::None,
            "gzip" | "gz" => InputCompression::Gzip,
            "zstd" => InputCompression::Zstd,
            other => {
                self.problem(
                    "input.compression",
                    format!("unknown compression `{other}`: expected auto, none, gzip or zstd"),
                );
                InputCompression::Auto
            }
        };
        if raw.csv.is_some() && format.is_some_and(|f| f != Format::Csv) {
            self.problem("input.csv", "CSV options given but the format is not csv");
        }
        let csv = self.csv("input.csv", raw.csv.as_ref());
        for (field, patterns) in [
            ("input.include", &raw.include),
            ("input.exclude", &raw.exclude),
        ] {
            for (i, p) in patterns.iter().enumerate() {
                if let Err(e) = globset::Glob::new(p) {
                    self.problem(format!("{field}[{i}]"), format!("bad glob `{p}`: {e}"));
                }
            }
        }
        let schema = self.schema("input.schema", &raw.schema, true);
        let max_record_bytes = match &raw.max_record_size {
            None => DEFAULT_MAX_RECORD_BYTES,
            Some(v) => match self.size("input.max_record_size", v, 1) {
                Some(n) if n > MAX_MAX_RECORD_BYTES => {
                    self.problem(
                        "input.max_record_size",
                        format!("{n} bytes is too large: at most {MAX_MAX_RECORD_BYTES} (1GiB)"),
                    );
                    DEFAULT_MAX_RECORD_BYTES
                }
                Some(n) => n,
                None => DEFAULT_MAX_RECORD_BYTES,
            },
        };
        let max_row_group_bytes = match &raw.max_row_group_size {
            None => DEFAULT_MAX_ROW_GROUP_BYTES,
            Some(v) => self
                .size("input.max_row_group_size", v, 1)
                .unwrap_or(DEFAULT_MAX_ROW_GROUP_BYTES),
        };
        if raw.max_record_size.is_some() && format == Some(Format::Parquet) {
            self.problem(
                "input.max_record_size",
                "a record size limit given but the format is parquet (it bounds CSV and JSON records)",
            );
        }
        if raw.max_row_group_size.is_some() && format.is_some_and(|f| f != Format::Parquet) {
            self.problem(
                "input.max_row_group_size",
                "a row group limit given but the format is not parquet",
            );
        }
        InputParts {
            location,
            format,
            compression,
            csv,
            schema,
            max_record_bytes,
            max_row_group_bytes,
        }
    }

    pub(super) fn format(&mut self, field: &str, text: &str) -> Option<Format> {
        match text {
            "csv" => Some(Format::Csv),
            "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
            "parquet" => Some(Format::Parquet),
            other => {
                self.problem(
                    field,
                    format!("unknown format `{other}`: expected csv, jsonl or parquet"),
                );
                None
            }
        }
    }

    pub(super) fn csv(&mut self, field: &str, raw: Option<&raw::RawCsv>) -> CsvOptions {
        let mut o = CsvOptions::default();
        let Some(raw) = raw else { return o };
        let one_byte = |this: &mut Self, name: &str, v: &Option<String>| -> Option<u8> {
            let v = v.as_ref()?;
            let v = if v == "\\t" { "\t" } else { v.as_str() };
            if v.len() == 1 && v.is_ascii() {
                Some(v.as_bytes()[0])
            } else {
                this.problem(
                    format!("{field}.{name}"),
                    format!("`{v}` must be a single ASCII character"),
                );
                None
            }
        };
        if let Some(b) = one_byte(self, "delimiter", &raw.delimiter) {
            o.delimiter = b;
        }
        if let Some(b) = one_byte(self, "quote", &raw.quote) {
            o.quote = b;
        }
        o.escape = one_byte(self, "escape", &raw.escape);
        if o.delimiter == o.quote || (o.delimiter == b'\n' || o.delimiter == b'\r') {
            self.problem(
                format!("{field}.delimiter"),
                "the delimiter must differ from the quote and from line ends",
            );
        }
        if let Some(h) = raw.header {
            o.header = h;
        }
        if let Some(n) = &raw.null_values {
            o.null_values = n.clone();
        }
        if let Some(m) = raw.multiline {
            o.multiline = m;
        }
        o
    }

    pub(super) fn schema(
        &mut self,
        field: &str,
        columns: &[raw::RawColumn],
        required: bool,
    ) -> Option<SchemaRef> {
        if columns.is_empty() {
            if required {
                self.problem(field, "the schema lists no columns");
            }
            return None;
        }
        let mut names = HashSet::new();
        let mut fields = Vec::new();
        let mut ok = true;
        for (i, c) in columns.iter().enumerate() {
            if c.name.is_empty() || !names.insert(c.name.clone()) {
                self.problem(
                    format!("{field}[{i}].name"),
                    format!("column name `{}` is empty or repeated", c.name),
                );
                ok = false;
            }
            match parse_type(&c.data_type) {
                Ok(t) => fields.push(Field::new(&c.name, t, c.nullable)),
                Err(m) => {
                    self.problem(format!("{field}[{i}].type"), m);
                    ok = false;
                }
            }
        }
        ok.then(|| Arc::new(Schema::new(fields)))
    }
}
