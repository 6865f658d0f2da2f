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

/// A time in milliseconds since the epoch as UTC ISO 8601, for messages.
///
/// ```
/// assert_eq!(fanout::clock::format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
/// ```
pub fn format_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("{ms} ms since the epoch"),
            |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        )
}
