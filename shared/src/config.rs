//! Reading configuration from the environment, with errors that name the variable,
//! the value and what was expected (a cold start that fails should say why).

use crate::location::Location;
use crate::{Error, Result};

/// A required variable.
pub fn required(name: &str) -> Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        Ok(_) => Err(Error::Config(format!(
            "environment variable {name} is empty"
        ))),
        Err(_) => Err(Error::Config(format!(
            "environment variable {name} is not set"
        ))),
    }
}

/// An optional variable (unset or empty is `None`).
pub fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// An optional variable parsed as `T`, `expected` describing valid values.
pub fn parsed<T: std::str::FromStr>(name: &str, default: T, expected: &str) -> Result<T> {
    match optional(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| {
            Error::Config(format!(
                "environment variable {name}={v:?}: expected {expected}"
            ))
        }),
    }
}

/// An optional location variable.
pub fn location(name: &str) -> Result<Option<Location>> {
    optional(name)
        .map(|v| {
            Location::parse(&v)
                .map_err(|m| Error::Config(format!("environment variable {name}={v:?}: {m}")))
        })
        .transpose()
}

/// The worker function's memory in MB (`FANOUT_WORKER_MEMORY_MB`, set by the template):
/// what a job's measured Lambda cost assumes. Unset: the cost model's default.
pub fn worker_memory_mb() -> Result<u32> {
    parsed(
        "FANOUT_WORKER_MEMORY_MB",
        crate::cost::Model::default().memory_mb,
        "the worker function's memory in MB, a whole number",
    )
}
