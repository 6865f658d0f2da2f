//! fanout: a serverless-native fan-out ETL processor.
//!
//! A job turns a prefix of raw objects (CSV, JSON lines, Parquet; plain, gzip or zstd)
//! into validated, transformed, Hive-partitioned Parquet plus an aggregate, by cutting
//! the input into chunks that run in parallel — on AWS Lambda behind SQS, or with the
//! same code in one local process.
//!
//! ```text
//!  spec ──▶ planner ──▶ plan + one message per chunk ──▶ queue
//!                                                         │ at-least-once, any order
//!            worker ×N: read piece → conform + validate (rejects) → SQL → Parquet
//!                       → rejects file → partial aggregate → commit record (last)
//!                                                         │
//!            reducer: every planned chunk committed? → merge → manifest, _SUCCESS
//! ```
//!
//! # Layout
//!
//! Imports point one way: leaves ← ports ← domain steps ← records ([`job`]) ← use cases
//! (of which only [`runner`], and the CLI-only modules, call the others). There is no
//! module cycle at any level; `tests/tests/architecture.rs` checks that on the source,
//! with the size limits (no function over 120 lines, no file over 700, no file of the
//! CLI over 400).
//!
//! **Leaves**, importing no other module of the crate but [`ids`]:
//!
//! - [`clock`]: wall-clock milliseconds for records and metrics.
//! - [`codec`]: the Parquet codecs this build decodes and encodes, checked before use.
//! - [`ids`]: typed ids ([`ids::JobId`], [`ids::ChunkId`]), validated where they enter.
//! - [`location`]: local paths, `file://`, `s3://`, and the write encryption ([`location::Sse`]).
//! - [`plan`]: pure chunk planning, no I/O.
//! - [`alloc`]: the C allocator's arena cap, set first in `main`.
//! - `aws_error` (feature `aws`): one reading of AWS SDK errors (retryable or not, and a
//!   message) for the S3 and Glue adapters.
//!
//! **Ports**, each a trait, its own error naming nothing of the domain, and adapters
//! (private submodules, their types re-exported):
//!
//! - [`store`]: [`store::ObjectStore`], [`store::StoreError`]; `store::fs`
//!   ([`store::FsStore`]), `store::s3` ([`store::S3Store`], feature `aws`).
//! - [`queue`]: [`queue::Queue`] with SQS semantics, [`queue::QueueError`]; `queue::local`
//!   ([`queue::LocalQueue`]), `queue::sqs` ([`queue::SqsQueue`], feature `aws`).
//! - [`metrics`]: [`metrics::Metrics`], [`metrics::MetricsError`]; `metrics::memory`
//!   ([`metrics::MemoryMetrics`]), `metrics::emf` ([`metrics::EmfMetrics`]),
//!   `metrics::cloudwatch` ([`metrics::CloudWatchMetrics`], feature `aws`).
//! - [`catalog`]: [`catalog::Catalog`] (Hive's table model), [`catalog::CatalogError`];
//!   `catalog::glue` ([`catalog::GlueCatalog`], feature `aws`). No embedded adapter: a
//!   Glue table points at S3, so a local run has no table to register.
//!
//! **The error and the wiring**:
//!
//! - [`error`]: the crate's [`Error`], wrapping each port's error, [`ids::IdError`] and
//!   [`spec::SpecError`] (so it sits above the ports and [`spec`], below every step that
//!   returns it); its `# The error model` section is the one statement of what is
//!   retryable and what each part does with an error.
//! - [`mod@env`]: the ports a use case runs with ([`env::Env`]; [`env::open_local_store`] is
//!   the local adapter's opener) and the worker function's memory.
//! - [`config`]: environment variables, read with errors that name them
//!   ([`config::worker_memory_mb`]). Both take their default memory from [`cost`].
//!
//! **Domain steps**:
//!
//! - [`spec`]: the job spec, validated in two stages, errors naming field and line:
//!   `spec::raw` (serde shapes), [`spec::yaml`] (line of every path), `spec::check` (one
//!   step per section), `spec::model` (the resolved parts), `spec::values` (types, sizes,
//!   literals).
//! - [`read`]: pieces → Arrow, one bounded batch at a time ([`read::PieceReader`]):
//!   `read::csv`, `read::csv_fast` (clean CSV straight into typed columns), `read::jsonl`
//!   (JSON lines by a one-pass flat-object scanner, `read::jsonl::scan`, into typed
//!   columns), `read::typed` (the typed columns both fast paths build),
//!   [`read::parquet`] (streamed by row group, `read::parquet::stream`; exact INT96
//!   timestamps, `read::parquet::int96`), and record ownership for byte ranges
//!   ([`read::lines`]).
//! - [`transform`]: typed conversion, rules, rejects, SQL (`transform::determinism`: only
//!   immutable functions, so a retried chunk writes the same rows).
//! - [`mod@write`]: partitioned deterministic Parquet: `write::hive` (partition paths and
//!   file names), `write::spill` (finished pages waiting for their row group).
//! - [`aggregate`]: exact partials and their merge.
//! - [`cost`]: a job's estimated and measured AWS cost.
//! - [`lookup`]: lookup tables and the SQL pre-flight (loaded through [`mod@env`]).
//!
//! **Records**: [`job`], where every use case meets the others: [`job::layout`] (keys below
//! the work location), [`job::records`] (plan, chunk task, commit, failure and attempt
//! records, manifest), [`job::compaction`] (the compaction stage's bins and records),
//! [`job::sizes`] (files per partition, file sizes), [`job::io`] (JSON with a retried read, and the loaders).
//! [`ledger`], beside them: the ingestion ledger of each job name (what every job ingested,
//! an append-only log under `ledger/<name>/`, outside `jobs/`) and [`ledger::lease`], the
//! run lease of incremental runs.
//!
//! **Use cases**: [`planner::plan_job`] and [`planner::enqueue`],
//! [`worker::Worker::process_chunk`] (`worker::output`: the writer task and the rejects
//! file; `worker::attempt`: the attempt record and its heartbeat), [`reducer::finalize_job`]
//! / [`reducer::job_status`] (`reducer::status`: records and queue depths; `reducer::verify`:
//! every listed file there as recorded; `reducer::catalog`: the output registered as a
//! table), [`compact::start`] (the compaction stage: bins planned and queued; a worker
//! merges one with [`compact::merge_files`], `worker::bin`), [`arrivals::drain_arrivals`] (S3 events on the
//! arrivals queue → one job of exactly the new objects; [`arrivals::pending`]: its drain
//! records), [`gc::collect_garbage`] (files outside a manifest), [`runner::run_local`] for
//! the whole pipeline in one process, and [`incremental`] (jobs of what the ledger does
//! not hold: `--since-last` under the lease, the `_READY` marker's folder).
//!
//! **CLI only**, behind the `cli` feature (the Lambda crates leave it off): `bench`
//! (synthetic planner and reducer benchmarks), `fleet` (a long-polling worker), `report`
//! (a job's HTML page), `sample` (the sample data). The `fanout` binary itself is
//! `src/bin/fanout/`.
#![warn(missing_docs)]

pub mod aggregate;
pub mod alloc;
pub mod arrivals;
#[cfg(feature = "aws")]
pub mod aws_error;
#[cfg(all(feature = "cli", feature = "sql"))]
pub mod bench;
pub mod catalog;
pub mod clock;
pub mod codec;
pub mod compact;
pub mod config;
pub mod cost;
pub mod env;
pub mod error;
#[cfg(all(feature = "cli", feature = "sql"))]
pub mod fleet;
pub mod gc;
pub mod ids;
pub mod incremental;
pub mod job;
pub mod ledger;
pub mod location;
#[cfg(feature = "sql")]
pub mod lookup;
pub mod metrics;
pub mod plan;
pub mod planner;
pub mod queue;
pub mod read;
pub mod reducer;
#[cfg(feature = "cli")]
pub mod report;
#[cfg(feature = "sql")]
pub mod runner;
#[cfg(feature = "cli")]
pub mod sample;
pub mod spec;
pub mod store;
pub mod transform;
#[cfg(feature = "sql")]
pub mod worker;
pub mod write;

pub use error::{Error, Result};
