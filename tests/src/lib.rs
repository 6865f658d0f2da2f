//! Shared conformance suites for fanout's ports, run against every adapter by the
//! integration tests in `tests/tests/`.
#![allow(clippy::unwrap_used)]

pub mod chaos;
pub mod conformance;
