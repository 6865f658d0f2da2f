//! The Glue Data Catalog adapter (aws-sdk-glue): external Parquet tables as Athena,
//! Glue ETL and EMR read them.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_glue::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_glue::types as glue;

use super::{Catalog, CatalogError, CatalogFailure, Column, Partition, Table};

/// `BatchCreatePartition` takes at most this many partitions per call.
const PARTITIONS_PER_CALL: usize = 100;

/// Hive's Parquet input and output formats and SerDe: what Athena and Spark expect of a
/// Parquet table.
const INPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
const OUTPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";
const SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";

/// The Glue Data Catalog of the client's account and region.
#[derive(Debug, Clone)]
pub struct GlueCatalog {
    client: aws_sdk_glue::Client,
}

impl GlueCatalog {
    /// A catalog over a Glue client.
    pub fn new(client: aws_sdk_glue::Client) -> GlueCatalog {
        GlueCatalog { client }
    }
}

/// Maps an SDK error: throttling, 5xx, timeouts and connection failures are retryable.
fn sdk_error<E>(
    op: &'static str,
    target: &str,
    e: SdkError<E>,
    reason: CatalogFailure,
) -> CatalogError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (transient, message) = crate::aws_error::classify(
        &e,
        &[
            "InternalServiceException",
            "OperationTimeoutException",
            "ConcurrentModificationException",
        ],
    );
    let retryable = transient || reason == CatalogFailure::Conflict;
    CatalogError {
        op,
        target: target.to_string(),
        message,
        retryable,
        reason,
        source: Some(Box::new(e)),
    }
}

fn build_error(op: &'static str, target: &str, e: impl std::fmt::Display) -> CatalogError {
    CatalogError {
        op,
        target: target.to_string(),
        message: format!("building the request: {e}"),
        retryable: false,
        reason: CatalogFailure::Other,
        source: None,
    }
}

fn glue_columns(
    op: &'static str,
    target: &str,
    cols: &[Column],
) -> Result<Vec<glue::Column>, CatalogError> {
    cols.iter()
        .map(|c| {
            glue::Column::builder()
                .name(&c.name)
                .r#type(&c.hive_type)
                .build()
                .map_err(|e| build_error(op, target, e))
        })
        .collect()
}

fn storage(columns: Vec<glue::Column>, location: &str) -> glue::StorageDescriptor {
    glue::StorageDescriptor::builder()
        .set_columns(Some(columns))
        .location(location)
        .input_format(INPUT_FORMAT)
        .output_format(OUTPUT_FORMAT)
        .serde_info(
            glue::SerDeInfo::builder()
                .serialization_library(SERDE)
                .parameters("serialization.format", "1")
                .build(),
        )
        .build()
}

fn table_input(op: &'static str, table: &Table) -> Result<glue::TableInput, CatalogError> {
    let target = format!("{}.{}", table.database, table.name);
    let columns = glue_columns(op, &target, &table.columns)?;
    glue::TableInput::builder()
        .name(&table.name)
        .table_type("EXTERNAL_TABLE")
        .storage_descriptor(storage(columns, &table.location))
        .set_partition_keys(Some(glue_columns(op, &target, &table.partition_keys)?))
        .set_parameters(Some(
            table
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        ))
        .build()
        .map_err(|e| build_error(op, &target, e))
}

fn from_glue_columns(cols: &[glue::Column]) -> Vec<Column> {
    cols.iter()
        .map(|c| Column {
            name: c.name().to_string(),
            hive_type: c.r#type().unwrap_or_default().to_string(),
        })
        .collect()
}

#[async_trait]
impl Catalog for GlueCatalog {
    async fn database_exists(&self, database: &str) -> Result<bool, CatalogError> {
        match self.client.get_database().name(database).send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error(
                "get_database",
                database,
                e,
                CatalogFailure::Other,
            )),
        }
    }

    async fn get_table(&self, database: &str, name: &str) -> Result<Option<Table>, CatalogError> {
        let target = format!("{database}.{name}");
        let out = match self
            .client
            .get_table()
            .database_name(database)
            .name(name)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                // Glue answers EntityNotFound both for a missing table and a missing
                // database; the message says which, and create_table tells them apart.
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_not_found_exception())
                {
                    return Ok(None);
                }
                return Err(sdk_error("get_table", &target, e, CatalogFailure::Other));
            }
        };
        let Some(t) = out.table() else {
            return Ok(None);
        };
        let sd = t.storage_descriptor();
        Ok(Some(Table {
            database: database.to_string(),
            name: t.name().to_string(),
            location: sd
                .and_then(|s| s.location())
                .unwrap_or_default()
                .to_string(),
            columns: sd
                .map(|s| from_glue_columns(s.columns()))
                .unwrap_or_default(),
            partition_keys: from_glue_columns(t.partition_keys()),
            parameters: t
                .parameters()
                .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_else(BTreeMap::new),
            version: t.version_id().map(str::to_string),
        }))
    }

    async fn create_table(&self, table: &Table) -> Result<(), CatalogError> {
        let target = format!("{}.{}", table.database, table.name);
        let input = table_input("create_table", table)?;
        self.client
            .create_table()
            .database_name(&table.database)
            .table_input(input)
            .send()
            .await
            .map_err(|e| {
                let reason = match e.as_service_error() {
                    Some(s) if s.is_already_exists_exception() => CatalogFailure::AlreadyExists,
                    Some(s) if s.is_entity_not_found_exception() => CatalogFailure::NoDatabase,
                    _ => CatalogFailure::Other,
                };
                sdk_error("create_table", &target, e, reason)
            })?;
        Ok(())
    }

    async fn update_table(&self, table: &Table) -> Result<(), CatalogError> {
        let target = format!("{}.{}", table.database, table.name);
        let input = table_input("update_table", table)?;
        let mut req = self
            .client
            .update_table()
            .database_name(&table.database)
            .table_input(input);
        if let Some(v) = &table.version {
            req = req.version_id(v);
        }
        req.send().await.map_err(|e| {
            let reason = match e.as_service_error() {
                Some(s) if s.is_concurrent_modification_exception() => CatalogFailure::Conflict,
                _ => CatalogFailure::Other,
            };
            sdk_error("update_table", &target, e, reason)
        })?;
        Ok(())
    }

    async fn add_partitions(
        &self,
        table: &Table,
        partitions: &[Partition],
    ) -> Result<u64, CatalogError> {
        let target = format!("{}.{}", table.database, table.name);
        // Each partition carries the table's formats and columns, as a crawler writes
        // them: engines read a partition by its own storage descriptor.
        let columns = glue_columns("batch_create_partition", &target, &table.columns)?;
        let mut created = 0u64;
        for batch in partitions.chunks(PARTITIONS_PER_CALL) {
            let inputs: Vec<glue::PartitionInput> = batch
                .iter()
                .map(|p| {
                    glue::PartitionInput::builder()
                        .set_values(Some(p.values.clone()))
                        .storage_descriptor(storage(columns.clone(), &p.location))
                        .build()
                })
                .collect();
            let out = self
                .client
                .batch_create_partition()
                .database_name(&table.database)
                .table_name(&table.name)
                .set_partition_input_list(Some(inputs))
                .send()
                .await
                .map_err(|e| {
                    sdk_error("batch_create_partition", &target, e, CatalogFailure::Other)
                })?;
            let mut failed = 0u64;
            for err in out.errors() {
                let code = err
                    .error_detail()
                    .and_then(|d| d.error_code())
                    .unwrap_or("");
                if code == "AlreadyExistsException" {
                    failed += 1;
                    continue;
                }
                return Err(CatalogError {
                    op: "batch_create_partition",
                    target,
                    message: format!(
                        "partition {:?}: {code}: {}",
                        err.partition_values(),
                        err.error_detail()
                            .and_then(|d| d.error_message())
                            .unwrap_or("")
                    ),
                    retryable: matches!(
                        code,
                        "InternalServiceException"
                            | "OperationTimeoutException"
                            | "ThrottlingException"
                    ),
                    reason: CatalogFailure::Other,
                    source: None,
                });
            }
            created += batch.len() as u64 - failed;
        }
        Ok(created)
    }
}
