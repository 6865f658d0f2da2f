//! How an AWS SDK error reads to fanout: whether trying again may help, and a message
//! naming the service's code and HTTP status. One classification for every adapter on
//! the AWS SDKs (S3, Glue); each adds the codes its service retries.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Codes every AWS service uses for throttling and transient failures.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
];

/// `(retryable, message)` of an SDK error: timeouts, connection failures, unreadable
/// responses, HTTP 5xx and 429, and the transient codes (those above and `extra`) are
/// retryable.
pub fn classify<E>(e: &SdkError<E>, extra: &[&str]) -> (bool, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code();
    let retryable = match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => {
            status.is_some_and(|s| s >= 500 || s == 429)
                || code.is_some_and(|c| TRANSIENT_CODES.contains(&c) || extra.contains(&c))
        }
    };
    let message = match (code, status) {
        (Some(c), Some(s)) => format!("{c} (HTTP {s}): {}", e.message().unwrap_or("")),
        (None, Some(s)) => format!("HTTP {s}"),
        _ => DisplayErrorContext(e).to_string(),
    };
    (retryable, message)
}
