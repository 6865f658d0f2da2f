//! The job's output registered as a table (`output.catalog`), before its manifest says
//! it succeeded: a reader of the catalog sees a job's partitions once it finalizes.
//!
//! The table is derived from the manifest: its columns (partition columns left out, as
//! the files leave them out) with Hive types, its partition keys, the output location.
//! The first job creates the table; a later job may add nullable columns (appended, as
//! Athena and Spark resolve Parquet columns by name); any other difference is refused
//! before anything is changed. Partitions are added (an existing one is left alone), or,
//! with `partition_projection`, the table's projection properties list their values. Every
//! step is idempotent, so a re-run of finalize changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use arrow::datatypes::{DataType, Field, Schema};

use crate::catalog::{Catalog, CatalogFailure, Column, Partition, Table};
use crate::job::{CatalogResult, PartitionSummary};
use crate::spec::{CatalogSpec, JobSpec};
use crate::write::NULL_PARTITION;
use crate::{Error, Result};

/// How often a create or update that lost a race with another writer is tried again.
const RACE_ATTEMPTS: usize = 5;

/// Refuses, before anything is published or changed, a job whose output does not fit
/// the spec's catalog table (or whose database is missing): the same checks
/// [`register`] makes, read-only.
pub(super) async fn check(
    catalog: Option<&dyn Catalog>,
    spec: &JobSpec,
    schema: &Schema,
    partitions: &[PartitionSummary],
) -> Result<()> {
    let Some(cat) = &spec.output.catalog else {
        return Ok(());
    };
    let catalog = catalog_for(catalog, cat)?;
    let wanted = table_of(spec, cat, schema)?;
    let by = &spec.output.partition_by;
    let parts = partitions_of(&wanted, by, partitions)?;
    if !catalog.database_exists(&cat.database).await? {
        return Err(no_database(cat));
    }
    let mut table = match catalog.get_table(&cat.database, &cat.table).await? {
        Some(existing) => merge(&existing, &wanted)?,
        None => wanted,
    };
    if cat.partition_projection {
        project(&mut table, by, &parts)?;
    }
    Ok(())
}

fn catalog_for<'a>(catalog: Option<&'a dyn Catalog>, cat: &CatalogSpec) -> Result<&'a dyn Catalog> {
    catalog.ok_or_else(|| {
        Error::Config(format!(
            "output.catalog names the Glue table {}.{}, and this process has no Glue client (it runs the embedded default)",
            cat.database, cat.table
        ))
    })
}

fn no_database(cat: &CatalogSpec) -> Error {
    Error::TableIncompatible {
        table: format!("{}.{}", cat.database, cat.table),
        message: format!(
            "the Glue database `{}` does not exist: create it first (`aws glue create-database --database-input Name={}`)",
            cat.database, cat.database
        ),
    }
}

/// Registers the job's output (its `schema` and `partitions`) in the spec's catalog
/// table; `None` when the spec names no catalog.
pub(super) async fn register(
    catalog: Option<&dyn Catalog>,
    spec: &JobSpec,
    schema: &Schema,
    partitions: &[PartitionSummary],
) -> Result<Option<CatalogResult>> {
    let Some(cat) = &spec.output.catalog else {
        return Ok(None);
    };
    let catalog = catalog_for(catalog, cat)?;
    let wanted = table_of(spec, cat, schema)?;
    let parts = partitions_of(&wanted, &spec.output.partition_by, partitions)?;
    let mut table = None;
    for _ in 0..RACE_ATTEMPTS {
        match settle_table(catalog, &wanted, cat, &spec.output.partition_by, &parts).await {
            Ok(t) => {
                table = Some(t);
                break;
            }
            Err(Error::Catalog(e))
                if matches!(
                    e.reason,
                    CatalogFailure::AlreadyExists | CatalogFailure::Conflict
                ) =>
            {
                tracing::info!(table = %e.target, "catalog table changed meanwhile; reading it again");
            }
            Err(e) => return Err(e),
        }
    }
    let table = table.ok_or_else(|| Error::TableIncompatible {
        table: format!("{}.{}", cat.database, cat.table),
        message: format!("the table kept changing under {RACE_ATTEMPTS} attempts to update it"),
    })?;
    let added = if cat.partition_projection {
        0
    } else {
        catalog.add_partitions(&table, &parts).await?
    };
    tracing::info!(table = %format!("{}.{}", cat.database, cat.table), partitions = parts.len(), added, "output registered in the catalog");
    Ok(Some(CatalogResult {
        kind: "glue".into(),
        database: cat.database.clone(),
        table: cat.table.clone(),
        partitions: parts.len() as u64,
        partition_projection: cat.partition_projection,
    }))
}

/// Creates the table, or updates it to what the job needs; returns it as stored.
async fn settle_table(
    catalog: &dyn Catalog,
    wanted: &Table,
    cat: &CatalogSpec,
    by: &[String],
    parts: &[Partition],
) -> Result<Table> {
    let Some(existing) = catalog.get_table(&wanted.database, &wanted.name).await? else {
        let mut new = wanted.clone();
        if cat.partition_projection {
            project(&mut new, by, parts)?;
        }
        if let Err(e) = catalog.create_table(&new).await {
            if e.reason == CatalogFailure::NoDatabase {
                return Err(no_database(cat));
            }
            return Err(e.into());
        }
        return Ok(new);
    };
    let mut merged = merge(&existing, wanted)?;
    if cat.partition_projection {
        project(&mut merged, by, parts)?;
    }
    if merged.columns != existing.columns || merged.parameters != existing.parameters {
        catalog.update_table(&merged).await?;
    }
    Ok(merged)
}

/// The table the job's output is: data columns, partition keys, location, Parquet.
fn table_of(spec: &JobSpec, cat: &CatalogSpec, schema: &Schema) -> Result<Table> {
    let name = format!("{}.{}", cat.database, cat.table);
    let refuse = |message: String| Error::TableIncompatible {
        table: name.clone(),
        message,
    };
    let column = |f: &Field| -> Result<Column> {
        Ok(Column {
            name: f.name().to_lowercase(),
            hive_type: hive_type(f.data_type())
                .map_err(|m| refuse(format!("column `{}`: {m}", f.name())))?,
        })
    };
    let by = &spec.output.partition_by;
    let mut seen = BTreeSet::new();
    for f in schema.fields() {
        if !seen.insert(f.name().to_lowercase()) {
            return Err(refuse(format!(
                "two columns are `{}` to a catalog, which ignores case: rename one in the SQL",
                f.name().to_lowercase()
            )));
        }
    }
    let columns = schema
        .fields()
        .iter()
        .filter(|f| !by.contains(f.name()))
        .map(|f| column(f))
        .collect::<Result<Vec<_>>>()?;
    let partition_keys = by
        .iter()
        .map(|c| {
            let f = schema.field_with_name(c).map_err(|_| {
                refuse(format!(
                    "partition column `{c}` is not in the output schema"
                ))
            })?;
            column(f)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut location = spec.output.location.to_string();
    if !location.ends_with('/') {
        location.push('/');
    }
    Ok(Table {
        database: cat.database.clone(),
        name: cat.table.clone(),
        location,
        columns,
        partition_keys,
        parameters: BTreeMap::from([
            ("classification".into(), "parquet".into()),
            ("EXTERNAL".into(), "TRUE".into()),
            ("created_by".into(), "fanout".into()),
        ]),
        version: None,
    })
}

/// The Hive type Athena and Spark read an Arrow column of Parquet as.
pub(crate) fn hive_type(t: &DataType) -> std::result::Result<String, String> {
    Ok(match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "int".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "binary".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if *p <= 38 && *s >= 0 => {
            format!("decimal({p},{s})")
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("array<{}>", hive_type(f.data_type())?)
        }
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| Ok(format!(
                    "{}:{}",
                    f.name().to_lowercase(),
                    hive_type(f.data_type())?
                )))
                .collect::<std::result::Result<Vec<_>, String>>()?
                .join(",")
        ),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "map<{},{}>",
                hive_type(kv[0].data_type())?,
                hive_type(kv[1].data_type())?
            ),
            other => return Err(format!("a map of {other} has no Hive type")),
        },
        DataType::Dictionary(_, v) => hive_type(v)?,
        other => {
            return Err(format!(
                "{other} has no Hive type (unsigned 64-bit, intervals, durations, times of day and wider decimals do not): cast it in the SQL"
            ));
        }
    })
}

/// The existing table with the job's new columns appended, or why the job's output does
/// not fit it.
fn merge(existing: &Table, wanted: &Table) -> Result<Table> {
    let refuse = |message: String| Error::TableIncompatible {
        table: format!("{}.{}", wanted.database, wanted.name),
        message,
    };
    if existing.location.trim_end_matches('/') != wanted.location.trim_end_matches('/') {
        return Err(refuse(format!(
            "the table reads `{}`, and this job writes `{}`",
            existing.location, wanted.location
        )));
    }
    let keys = |t: &Table| {
        t.partition_keys
            .iter()
            .map(|c| format!("{} {}", c.name.to_lowercase(), normal(&c.hive_type)))
            .collect::<Vec<_>>()
    };
    if keys(existing) != keys(wanted) {
        return Err(refuse(format!(
            "the table is partitioned by ({}), and this job by ({})",
            keys(existing).join(", "),
            keys(wanted).join(", ")
        )));
    }
    let mut merged = existing.clone();
    for c in &wanted.columns {
        match existing
            .columns
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(&c.name))
        {
            Some(e) if normal(&e.hive_type) == normal(&c.hive_type) => {}
            Some(e) => {
                return Err(refuse(format!(
                    "column `{}` is {} in the table and {} in this job's output: a reader of older files would fail; write a new table or cast in the SQL",
                    c.name, e.hive_type, c.hive_type
                )));
            }
            // Files written before lack the column: readers resolve Parquet columns by
            // name and read it as null there.
            None => merged.columns.push(c.clone()),
        }
    }
    Ok(merged)
}

fn normal(hive_type: &str) -> String {
    hive_type
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase()
}

/// The job's partitions: values unescaped from the Hive paths, each at its location.
fn partitions_of(
    table: &Table,
    partition_by: &[String],
    partitions: &[PartitionSummary],
) -> Result<Vec<Partition>> {
    if partition_by.is_empty() {
        return Ok(Vec::new());
    }
    partitions
        .iter()
        .map(|p| {
            let values = p
                .path
                .split('/')
                .map(|seg| {
                    seg.split_once('=')
                        .map(|(_, v)| unescape(v))
                        .ok_or_else(|| Error::TableIncompatible {
                            table: format!("{}.{}", table.database, table.name),
                            message: format!("`{}` is not a Hive partition path", p.path),
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Partition {
                values,
                location: format!("{}{}/", table.location, p.path),
            })
        })
        .collect()
}

/// A Hive path value decoded (`%2F` → `/`), as Hive's `unescapePathName` does.
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(byte) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Athena partition projection properties listing every partition value of the table
/// (the values already projected and the job's): Athena then plans queries without
/// reading partitions from the catalog.
fn project(table: &mut Table, by: &[String], parts: &[Partition]) -> Result<()> {
    let name = format!("{}.{}", table.database, table.name);
    let mut template = table.location.clone();
    for (i, column) in by.iter().enumerate() {
        // The catalog's column names are lowercase; the paths keep the output's case.
        let k = &column.to_lowercase();
        let mut values: BTreeSet<String> = table
            .parameters
            .get(&format!("projection.{k}.values"))
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        for p in parts {
            let v = &p.values[i];
            // The template puts the value into the path as it is: a value Hive escapes,
            // or one holding the list's separator, would name another folder.
            let in_path = crate::write::partition_segment(column, Some(v));
            if v.contains(',') || (in_path != format!("{column}={v}") && v != NULL_PARTITION) {
                return Err(Error::TableIncompatible {
                    table: name,
                    message: format!(
                        "partition value `{v}` of `{k}` cannot be projected (it is escaped in the path or holds a comma): turn partition_projection off for this table"
                    ),
                });
            }
            values.insert(v.clone());
        }
        table
            .parameters
            .insert(format!("projection.{k}.type"), "enum".into());
        table.parameters.insert(
            format!("projection.{k}.values"),
            values.into_iter().collect::<Vec<_>>().join(","),
        );
        template.push_str(&format!("{column}=${{{k}}}/"));
    }
    table
        .parameters
        .insert("projection.enabled".into(), "true".into());
    table
        .parameters
        .insert("storage.location.template".into(), template);
    Ok(())
}

#[cfg(test)]
mod tests;
