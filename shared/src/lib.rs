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
//! - [`spec`]: the job spec, validated in two stages, errors naming field and line.
//! - [`location`]: local paths, `file://`, `s3://`.
//! - Ports, each a trait plus adapters: [`store`] (objects), [`queue`] (SQS semantics),
//!   [`metrics`].
//! - [`plan`]: pure chunk planning. [`read`]: pieces → Arrow, with record ownership for
//!   byte ranges ([`read::lines`]). [`transform`]: typed conversion, rules, rejects, SQL.
//!   [`write`]: partitioned deterministic Parquet. [`aggregate`]: exact partials and merge.
//! - [`records`]: persisted records and the key layout. [`gc`]: files outside a manifest.
//! - Use cases: [`planner::plan_job`], [`worker::Worker::process_chunk`],
//!   [`reducer::finalize_job`] / [`reducer::job_status`], and [`runner::run_local`] for
//!   the whole pipeline in one process. [`env::Env`] carries the ports they run with.
#![warn(missing_docs)]

pub mod aggregate;
pub mod alloc;
#[cfg(all(feature = "cli", feature = "sql"))]
pub mod bench;
pub mod clock;
pub mod config;
pub mod cost;
pub mod env;
pub mod error;
#[cfg(all(feature = "cli", feature = "sql"))]
pub mod fleet;
pub mod gc;
pub mod ids;
pub mod job;
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
