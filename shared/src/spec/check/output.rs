//! The `output` and `rejects` sections: where the job writes.

use std::collections::HashSet;

use arrow::datatypes::SchemaRef;

use super::Checker;
use crate::location::Location;
use crate::spec::raw;
use crate::spec::values::columns_hint;
use crate::spec::{
    CatalogSpec, DEFAULT_MAX_FILE_BYTES, DEFAULT_ROW_GROUP_ROWS, DEFAULT_TARGET_FILE_BYTES,
    OutputCompression, OutputSpec, RejectsSpec,
};

impl Checker<'_> {
    /// `passthrough` is the schema of the rows written when it is known (no SQL).
    pub(super) fn resolve_output(
        &mut self,
        raw: &raw::RawOutput,
        input: Option<&Location>,
        passthrough: Option<&SchemaRef>,
    ) -> Option<OutputSpec> {
        let location = self.location("output.location", &raw.location);
        self.check_partition_by(&raw.partition_by, passthrough);
        let compression = self.output_compression(raw.compression.as_deref().unwrap_or("zstd(3)"));
        let row_group_rows = match raw.row_group_rows {
            None => DEFAULT_ROW_GROUP_ROWS,
            Some(n) if (1..=100_000_000).contains(&n) => n as usize,
            Some(n) => {
                self.problem(
                    "output.row_group_rows",
                    format!("{n} is out of range: expected 1 to 100000000"),
                );
                DEFAULT_ROW_GROUP_ROWS
            }
        };
        let max_file_bytes = match &raw.max_file_size {
            None => DEFAULT_MAX_FILE_BYTES,
            Some(v) => self
                .size("output.max_file_size", v, 1024)
                .unwrap_or(DEFAULT_MAX_FILE_BYTES),
        };
        let target_file_bytes =
            self.target_file_size(raw.target_file_size.as_ref(), max_file_bytes);
        if let (Some(i), Some(o)) = (input, &location)
            && (o.is_within(i) || i.is_within(o))
        {
            self.problem(
                "output.location",
                format!("`{o}` overlaps the input `{i}`: a later run would read its own output"),
            );
        }
        let catalog = raw
            .catalog
            .as_ref()
            .and_then(|c| self.catalog(c, location.as_ref(), &raw.partition_by));
        Some(OutputSpec {
            location: location?,
            partition_by: raw.partition_by.clone(),
            compression: compression?,
            row_group_rows,
            max_file_bytes,
            target_file_bytes,
            catalog,
        })
    }

    /// `output.target_file_size`: a size (at least 1 KiB, at most `max_file_size`), or
    /// `off` (also `none`, `false`, `0`) for no compaction stage.
    fn target_file_size(
        &mut self,
        v: Option<&serde_json::Value>,
        max_file_bytes: u64,
    ) -> Option<u64> {
        const FIELD: &str = "output.target_file_size";
        let off = |v: &serde_json::Value| match v {
            serde_json::Value::Bool(false) | serde_json::Value::Null => true,
            serde_json::Value::Number(n) => n.as_u64() == Some(0),
            serde_json::Value::String(s) => {
                matches!(
                    s.trim().to_ascii_lowercase().as_str(),
                    "off" | "none" | "false" | "0"
                )
            }
            _ => false,
        };
        let bytes = match v {
            None => DEFAULT_TARGET_FILE_BYTES.min(max_file_bytes),
            Some(v) if off(v) => return None,
            Some(v) => self.size(FIELD, v, 1024)?,
        };
        if bytes > max_file_bytes {
            self.problem(
                FIELD,
                format!(
                    "{bytes} bytes is above output.max_file_size ({max_file_bytes} bytes): a compacted file would have to be split again"
                ),
            );
            return None;
        }
        Some(bytes)
    }

    /// `output.catalog`: Glue names as Athena takes them, an S3 output location (Glue
    /// tables point at S3), projection only over partitions.
    fn catalog(
        &mut self,
        raw: &raw::RawCatalog,
        location: Option<&Location>,
        partition_by: &[String],
    ) -> Option<CatalogSpec> {
        let mut ok = true;
        if raw.kind != "glue" {
            self.problem(
                "output.catalog.type",
                format!("unknown catalog `{}`: expected glue", raw.kind),
            );
            ok = false;
        }
        for (field, name) in [
            ("output.catalog.database", &raw.database),
            ("output.catalog.table", &raw.table),
        ] {
            // Athena reads only lowercase names; Glue would lowercase them silently.
            let valid = !name.is_empty()
                && name.len() <= 255
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                self.problem(
                    field,
                    format!(
                        "`{name}` is not a Glue name: use 1–255 lowercase letters, digits or `_`"
                    ),
                );
                ok = false;
            }
        }
        if let Some(l @ Location::Local(_)) = location {
            self.problem(
                "output.catalog",
                format!("a Glue table reads from S3, and the output `{l}` is a local directory"),
            );
            ok = false;
        }
        let partition_projection = raw.partition_projection.unwrap_or(false);
        if partition_projection && partition_by.is_empty() {
            self.problem(
                "output.catalog.partition_projection",
                "partition projection needs partitions: set output.partition_by",
            );
            ok = false;
        }
        ok.then(|| CatalogSpec {
            database: raw.database.clone(),
            table: raw.table.clone(),
            partition_projection,
        })
    }

    fn check_partition_by(&mut self, partition_by: &[String], passthrough: Option<&SchemaRef>) {
        let mut seen = HashSet::new();
        for (i, c) in partition_by.iter().enumerate() {
            if c.is_empty() || !seen.insert(c) {
                self.problem(
                    format!("output.partition_by[{i}]"),
                    format!("partition column `{c}` is empty or repeated"),
                );
            }
        }
        if let Some(schema) = passthrough {
            for (i, c) in partition_by.iter().enumerate() {
                if schema.index_of(c).is_err() {
                    self.problem(
                        format!("output.partition_by[{i}]"),
                        format!("unknown column `{c}`: {}", columns_hint(schema)),
                    );
                }
            }
        }
        if !partition_by.is_empty() && partition_by.len() > 8 {
            self.problem("output.partition_by", "more than 8 partition columns");
        }
    }

    fn output_compression(&mut self, text: &str) -> Option<OutputCompression> {
        let field = "output.compression";
        let (name, level) = match text.split_once('(') {
            Some((n, rest)) => match rest
                .strip_suffix(')')
                .and_then(|l| l.trim().parse::<i64>().ok())
            {
                Some(l) => (n.trim(), Some(l)),
                None => {
                    self.problem(field, format!("`{text}` is not `codec(level)`"));
                    return None;
                }
            },
            None => (text.trim(), None),
        };
        let c = match (name, level) {
            ("zstd", None) => OutputCompression::Zstd(3),
            ("zstd", Some(l)) if (1..=22).contains(&l) => OutputCompression::Zstd(l as i32),
            ("gzip", None) => OutputCompression::Gzip(6),
            ("gzip", Some(l)) if (0..=9).contains(&l) => OutputCompression::Gzip(l as u32),
            ("snappy", None) => OutputCompression::Snappy,
            ("lz4", None) => OutputCompression::Lz4,
            ("none" | "uncompressed", None) => OutputCompression::None,
            ("zstd" | "gzip", Some(l)) => {
                self.problem(
                    field,
                    format!("level {l} is out of range for {name}: zstd takes 1–22, gzip 0–9"),
                );
                return None;
            }
            _ => {
                self.problem(field, format!("unknown codec `{text}`: expected zstd(level), snappy, gzip(level), lz4 or none"));
                return None;
            }
        };
        // A codec left out of the build would panic in the writer of every chunk.
        match c.codec() {
            Ok(codec) if crate::codec::is_built(codec) => Some(c),
            Ok(codec) => {
                self.problem(
                    field,
                    format!("`{text}` ({codec}) is not built into this fanout"),
                );
                None
            }
            Err(e) => {
                self.problem(field, format!("`{text}`: {e}"));
                None
            }
        }
    }

    pub(super) fn resolve_rejects(
        &mut self,
        raw: &raw::RawRejects,
        input: Option<&Location>,
    ) -> Option<RejectsSpec> {
        let location = self.location("rejects.location", &raw.location);
        let max_ratio = raw.max_ratio.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&max_ratio) {
            self.problem(
                "rejects.max_ratio",
                format!("{max_ratio} is not a ratio: expected 0 to 1 (0.01 = 1%)"),
            );
        }
        if let (Some(i), Some(r)) = (input, &location)
            && r.is_within(i)
        {
            self.problem(
                "rejects.location",
                format!("`{r}` lies inside the input `{i}`"),
            );
        }
        Some(RejectsSpec {
            location: location?,
            max_ratio,
        })
    }
}
