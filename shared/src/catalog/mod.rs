//! The table catalog port: where a job's output is registered as a table, so Athena,
//! Spark or Trino can query it right after the job without a crawler.
//!
//! The port speaks Hive's model (a table with columns, partition keys, a location and
//! parameters; partitions as value lists with their locations), which is what the Glue
//! Data Catalog stores. It names nothing of fanout's domain: the reducer derives the table
//! from the job's manifest (`reducer::catalog`). Adapter: `catalog::glue`
//! ([`GlueCatalog`], feature `aws`).

#[cfg(feature = "aws")]
mod glue;

use std::collections::BTreeMap;

use async_trait::async_trait;

#[cfg(feature = "aws")]
pub use glue::GlueCatalog;

/// A boxed error source kept for `Error::source()` chains.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong in a catalog call.
#[derive(Debug, thiserror::Error)]
#[error("catalog {op} `{target}`: {message}")]
pub struct CatalogError {
    /// The catalog operation (`get_table`, `create_table`, …).
    pub op: &'static str,
    /// The database or table involved (`database.table`).
    pub target: String,
    /// What failed.
    pub message: String,
    /// Whether trying again may succeed (throttling, a 5xx, a concurrent update).
    pub retryable: bool,
    /// What the failure was, when the caller may act on it.
    pub reason: CatalogFailure,
    /// The underlying error.
    #[source]
    pub source: Option<BoxError>,
}

/// The failures a caller acts on; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogFailure {
    /// The database does not exist.
    NoDatabase,
    /// The table was created by someone else first.
    AlreadyExists,
    /// The table changed since it was read (optimistic concurrency of an update).
    Conflict,
    /// Anything else.
    Other,
}

/// A column: its name and Hive type (`bigint`, `decimal(12,2)`, `array<string>`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Hive type name.
    pub hive_type: String,
}

/// A table stored as Parquet files below `location`, Hive-partitioned by `partition_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Database.
    pub database: String,
    /// Table name.
    pub name: String,
    /// Where the files are (`s3://bucket/prefix/`).
    pub location: String,
    /// Data columns, in file order.
    pub columns: Vec<Column>,
    /// Partition keys, in path order.
    pub partition_keys: Vec<Column>,
    /// Table parameters (classification, partition projection settings, …).
    pub parameters: BTreeMap<String, String>,
    /// The catalog's version of the table as read, for an optimistic update; `None` for a
    /// table not read from the catalog.
    pub version: Option<String>,
}

/// One partition: its values in partition-key order and where its files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Values, as Hive stores them (unescaped; a null as `__HIVE_DEFAULT_PARTITION__`).
    pub values: Vec<String>,
    /// Where the partition's files are.
    pub location: String,
}

/// A table catalog (Hive metastore model).
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// Whether the database exists.
    async fn database_exists(&self, database: &str) -> Result<bool, CatalogError>;

    /// The table, or `None` when the database has no such table.
    async fn get_table(&self, database: &str, name: &str) -> Result<Option<Table>, CatalogError>;

    /// Creates the table; `AlreadyExists` when it is there.
    async fn create_table(&self, table: &Table) -> Result<(), CatalogError>;

    /// Replaces the table's definition; `Conflict` when it changed since `table.version`.
    async fn update_table(&self, table: &Table) -> Result<(), CatalogError>;

    /// Adds partitions to `table` (stored as its columns and formats); one that exists
    /// already is left as it is. Returns how many were created.
    async fn add_partitions(
        &self,
        table: &Table,
        partitions: &[Partition],
    ) -> Result<u64, CatalogError>;
}
