//! Lookup tables (loaded once per process and job) and the SQL pre-flight.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::env::Env;
use crate::plan::Piece;
use crate::read::{HeaderCache, read_piece};
use crate::spec::{Format, InputCompression, InputSpec, JobSpec, LookupSpec, Problem, SpecError};
use crate::transform::{Transformer, conform};
use crate::{Error, Result};

/// A lookup whose object is not the version the job was planned with: permanent, since
/// joining other rows than the chunks already committed joined would break the rule that
/// a retried chunk writes the same bytes.
fn lookup_changed(l: &LookupSpec, expected: &str, found: Option<String>) -> Error {
    let source = crate::store::StoreError::Changed {
        key: l.location.to_string(),
        expected: expected.to_string(),
        found,
    };
    Error::Input {
        object: l.location.to_string(),
        message: format!(
            "lookup `{}` changed since the job was planned ({source}); restore that version, or run the spec again as a new job",
            l.name
        ),
        source: Some(Box::new(source)),
    }
}

/// Loads one lookup table: (schema, rows). With a pinned version ([`LookupSpec::etag`],
/// recorded at planning) every read is of exactly that version, or fails naming the lookup.
pub async fn load_lookup(
    env: &Env,
    l: &LookupSpec,
) -> Result<(SchemaRef, Vec<arrow::array::RecordBatch>)> {
    load_lookup_unchecked(env, l).await.map_err(|e| match e {
        Error::Store(crate::store::StoreError::Changed {
            expected, found, ..
        }) => lookup_changed(l, &expected, found),
        e => e,
    })
}

async fn load_lookup_unchecked(
    env: &Env,
    l: &LookupSpec,
) -> Result<(SchemaRef, Vec<arrow::array::RecordBatch>)> {
    let (dir, key) = l.location.split_object();
    let store = env.store(&dir)?;
    let meta = store.head(&key).await?.ok_or_else(|| Error::Input {
        object: l.location.to_string(),
        message: format!("lookup `{}` not found", l.name),
        source: None,
    })?;
    if let Some(pinned) = &l.etag
        && *pinned != meta.etag
    {
        return Err(lookup_changed(l, pinned, Some(meta.etag)));
    }
    let schema: SchemaRef = match (&l.schema, l.format) {
        (Some(s), _) => s.clone(),
        (None, Format::Parquet) => {
            let (m, _) =
                crate::read::parquet::read_metadata(store.as_ref(), &key, &meta.etag, meta.size)
                    .await?;
            let s =
                parquet::arrow::parquet_to_arrow_schema(m.file_metadata().schema_descr(), None)?;
            Arc::new(s)
        }
        (None, fmt) => {
            let bytes = store.get_range_if(&key, 0..meta.size, &meta.etag).await?;
            let text = match InputCompression::Auto.of_key(&key) {
                InputCompression::None => bytes,
                _ => {
                    return Err(Error::Input {
                        object: l.location.to_string(),
                        message: "a compressed lookup needs a declared schema".into(),
                        source: None,
                    });
                }
            };
            let names = text_columns(l, fmt, &text)?;
            Arc::new(Schema::new(
                names
                    .iter()
                    .map(|n| Field::new(n, DataType::Utf8, true))
                    .collect::<Vec<_>>(),
            ))
        }
    };
    let input = InputSpec {
        location: dir.clone(),
        include: Vec::new(),
        exclude: Vec::new(),
        format: l.format,
        compression: InputCompression::Auto,
        csv: l.csv.clone(),
        schema: schema.clone(),
        max_record_bytes: crate::spec::DEFAULT_MAX_RECORD_BYTES,
        // Lookups are not planned, and are held whole anyway.
        max_row_group_bytes: u64::MAX,
    };
    let piece = Piece::Object {
        key: key.clone(),
        etag: meta.etag,
        size: meta.size,
    };
    let decoded = read_piece(store.as_ref(), &piece, &input, &HeaderCache::default()).await?;
    let conformed = conform(&decoded, &schema, &[])?;
    let first = decoded
        .rejects
        .first()
        .cloned()
        .or_else(|| conformed.rejects.first().map(|(_, r)| r.clone()));
    if let Some(r) = first {
        let n = decoded.rejects.len() + conformed.rejects.len();
        return Err(Error::Input {
            object: l.location.to_string(),
            message: format!(
                "lookup `{}`: {n} record(s) do not match its schema; the first, line {}: {} ({})",
                l.name,
                r.origin.line + 1,
                r.message,
                r.rule
            ),
            source: None,
        });
    }
    Ok((schema, vec![conformed.batch]))
}

/// The column names of a CSV (its header) or JSON lines (every key seen) lookup read
/// without a declared schema.
fn text_columns(l: &LookupSpec, fmt: Format, text: &[u8]) -> Result<Vec<String>> {
    Ok(if fmt == Format::Csv {
        if !l.csv.header {
            return Err(Error::Input {
                object: l.location.to_string(),
                message: "a CSV lookup without a header needs a declared schema".into(),
                source: None,
            });
        }
        let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
        let mut rdr = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(l.csv.delimiter)
            .quote(l.csv.quote)
            .from_reader(line);
        let mut rec = ::csv::StringRecord::new();
        rdr.read_record(&mut rec).map_err(|e| Error::Input {
            object: l.location.to_string(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        })?;
        rec.iter()
            .map(|s| s.trim_start_matches('\u{feff}').trim().to_string())
            .collect()
    } else {
        let mut names: Vec<String> = Vec::new();
        for line in text.split(|b| *b == b'\n') {
            if let Ok(serde_json::Value::Object(o)) =
                serde_json::from_slice::<serde_json::Value>(line)
            {
                for k in o.keys() {
                    if !names.contains(k) {
                        names.push(k.clone());
                    }
                }
            }
        }
        names
    })
}

/// Loads every lookup and builds the job's transformer.
pub async fn load_transformer(env: &Env, spec: &JobSpec) -> Result<Transformer> {
    let mut tables = Vec::new();
    for l in &spec.transform.lookups {
        let (schema, batches) = load_lookup(env, l).await?;
        tables.push((l.name.clone(), schema, batches));
    }
    Transformer::new(spec.transform.sql.clone(), tables)
}

/// Plans the SQL against the input schema and checks that partition and aggregate columns
/// exist in its output, before any work starts. Returns the output schema.
pub async fn preflight(env: &Env, spec: &JobSpec, source_name: &str) -> Result<SchemaRef> {
    let problem = |field: &str, message: String| {
        Error::Spec(SpecError {
            source_name: source_name.to_string(),
            problems: vec![Problem {
                field: field.to_string(),
                line: spec.line_of(field),
                message,
            }],
        })
    };
    let transformer = match load_transformer(env, spec).await {
        Ok(t) => t,
        Err(
            e @ (Error::Input { .. } | Error::Store(crate::store::StoreError::NotFound { .. })),
        ) => {
            return Err(problem("transform.lookups", e.to_string()));
        }
        Err(e) => return Err(e),
    };
    let out = match transformer.output_schema(spec.input.schema.clone()).await {
        Ok(s) => s,
        Err(e) => return Err(problem("transform.sql", e.to_string())),
    };
    let names = || {
        out.fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut problems = Vec::new();
    for (i, c) in spec.output.partition_by.iter().enumerate() {
        if out.index_of(c).is_err() {
            problems.push(Problem {
                line: spec.line_of(&format!("output.partition_by[{i}]")),
                field: format!("output.partition_by[{i}]"),
                message: format!(
                    "`{c}` is not a column of the transformed rows ({})",
                    names()
                ),
            });
        }
    }
    if let Some(a) = &spec.aggregate {
        for (i, g) in a.group_by.iter().enumerate() {
            if out.index_of(g).is_err() {
                problems.push(Problem {
                    line: spec.line_of(&format!("aggregate.group_by[{i}]")),
                    field: format!("aggregate.group_by[{i}]"),
                    message: format!(
                        "`{g}` is not a column of the transformed rows ({})",
                        names()
                    ),
                });
            }
        }
        for (i, m) in a.measures.iter().enumerate() {
            if let Some(c) = &m.column {
                match out.field_with_name(c) {
                    Err(_) => problems.push(Problem {
                        line: spec.line_of(&format!("aggregate.measures[{i}].column")),
                        field: format!("aggregate.measures[{i}].column"),
                        message: format!(
                            "`{c}` is not a column of the transformed rows ({})",
                            names()
                        ),
                    }),
                    Ok(f)
                        if matches!(
                            m.function,
                            crate::spec::AggFn::Sum | crate::spec::AggFn::Avg
                        ) && !crate::spec::is_numeric(f.data_type()) =>
                    {
                        problems.push(Problem {
                            line: spec.line_of(&format!("aggregate.measures[{i}].column")),
                            field: format!("aggregate.measures[{i}].column"),
                            message: format!("`{c}` is {}, not numeric", f.data_type()),
                        })
                    }
                    Ok(_) => {}
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Spec(SpecError {
            source_name: source_name.to_string(),
            problems,
        }));
    }
    Ok(out)
}
