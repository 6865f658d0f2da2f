//! Wall-clock time for records and metrics, in one place.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
///
/// ```
/// assert!(fanout::clock::now_ms() > 1_600_000_000_000);
/// ```
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
