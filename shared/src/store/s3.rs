//! [`S3Store`]: a bucket and key prefix on Amazon S3 (or an S3-compatible endpoint).

use std::ops::Range;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use bytes::Bytes;

use super::{ObjectMeta, ObjectStore, PutOutcome, SwapOutcome};
use super::{Result, StoreError};
use crate::location::{Location, Sse};

/// What a CopySource key escapes: everything but unreserved characters and '/'.
const COPY_SOURCE_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Objects above this size are uploaded in parts.
pub const DEFAULT_MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// Part size of multipart uploads (S3 requires at least 5 MiB but for the last part).
pub const DEFAULT_PART_BYTES: usize = 8 * 1024 * 1024;

/// A bucket and prefix on S3.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    sse: Sse,
    multipart_threshold: usize,
    part_bytes: usize,
}

impl S3Store {
    /// A store for `s3://bucket/prefix`.
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        let mut prefix = prefix.into();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        S3Store {
            client,
            bucket: bucket.into(),
            prefix,
            sse: Sse::default(),
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_bytes: DEFAULT_PART_BYTES,
        }
    }

    /// Server-side encryption of writes.
    pub fn with_sse(mut self, sse: Sse) -> Self {
        self.sse = sse;
        self
    }

    /// Multipart threshold and part size (parts below 5 MiB are refused by S3).
    pub fn with_multipart(mut self, threshold: usize, part_bytes: usize) -> Self {
        self.multipart_threshold = threshold;
        self.part_bytes = part_bytes.max(5 * 1024 * 1024);
        self
    }

    /// A listed object below the store's prefix; `None` for a key outside it or a
    /// "folder" placeholder (not data).
    fn listed(&self, o: &aws_sdk_s3::types::Object) -> Option<ObjectMeta> {
        let rel = o.key()?.strip_prefix(&self.prefix)?;
        if rel.is_empty() || rel.ends_with('/') {
            return None;
        }
        Some(ObjectMeta {
            key: rel.to_string(),
            size: o.size().unwrap_or(0).max(0) as u64,
            etag: trim_etag(o.e_tag()),
        })
    }

    /// Every object under `prefix` (after the key `start_after`, when given), sorted.
    async fn list_from(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full(prefix))
            .set_start_after(start_after.map(|k| self.full(k)))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("list", prefix, e))?;
            out.extend(page.contents().iter().filter_map(|o| self.listed(o)));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// Maps an SDK error: throttling, 5xx, timeouts and connection failures are retryable.
fn sdk_error<E>(op: &'static str, key: &str, e: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (retryable, message) =
        crate::aws_error::classify(&e, &["SlowDown", "ConditionalRequestConflict"]);
    StoreError::Request {
        op,
        key: key.to_string(),
        message,
        retryable,
        source: Some(Box::new(e)),
    }
}

/// Applies the store's server-side encryption to a PutObject or CreateMultipartUpload
/// request (two builder types with the same setters).
macro_rules! with_sse {
    ($req:expr, $sse:expr) => {
        match $sse {
            Sse::S3 => $req.server_side_encryption(ServerSideEncryption::Aes256),
            Sse::Kms(id) => $req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(id),
            Sse::BucketDefault => $req,
        }
    };
}

/// Reads a GetObject body; a connection cut mid-body is worth a retry.
async fn read_body(op: &'static str, key: &str, body: ByteStream) -> Result<Bytes> {
    let body = body.collect().await.map_err(|e| StoreError::Request {
        op,
        key: key.to_string(),
        message: format!("reading the body: {e}"),
        retryable: true,
        source: Some(Box::new(e)),
    })?;
    Ok(body.into_bytes())
}

fn status_of<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// An ETag as HTTP conditional headers carry it: quoted (listings are stored unquoted).
fn quoted_etag(e: &str) -> String {
    if e.starts_with('"') || e.starts_with("W/") {
        e.to_string()
    } else {
        format!("\"{e}\"")
    }
}

fn trim_etag(e: Option<&str>) -> String {
    e.unwrap_or_default().trim_matches('"').to_string()
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.list_from(prefix, None).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(h) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: h.content_length().unwrap_or(0).max(0) as u64,
                etag: trim_etag(h.e_tag()),
            })),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(sdk_error("head", key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let resp = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if status_of(&e) == Some(404) => {
                return Err(StoreError::NotFound {
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(sdk_error("get", key, e)),
        };
        read_body("get", key, resp.body).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.read_range(key, range, None).await
    }

    async fn get_range_if(&self, key: &str, range: Range<u64>, etag: &str) -> Result<Bytes> {
        self.read_range(key, range, Some(etag)).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        if data.len() > self.multipart_threshold {
            return self.put_multipart(key, PartSource::Memory(data)).await;
        }
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(ByteStream::from(data));
        req = with_sse!(req, &self.sse);
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error("put", key, e))
    }

    async fn copy_from(&self, source: &Location, key: &str) -> Result<()> {
        let Location::S3 {
            bucket,
            prefix: source_key,
        } = source
        else {
            return Err(StoreError::Request {
                op: "copy",
                key: key.to_string(),
                message: format!("S3 cannot copy from `{source}`"),
                retryable: false,
                source: None,
            });
        };
        // CopySource is `bucket/key`, the key URL-encoded ('/' kept).
        let encoded: String =
            percent_encoding::utf8_percent_encode(source_key, COPY_SOURCE_ESCAPES).collect();
        let mut req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .copy_source(format!("{bucket}/{encoded}"));
        req = with_sse!(req, &self.sse);
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error("copy", key, e))
    }

    async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<()> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| StoreError::Staging {
                context: format!("reading {}", path.display()),
                source: e,
            })?
            .len();
        if size as usize > self.multipart_threshold {
            return self.put_multipart(key, PartSource::File(path, size)).await;
        }
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| StoreError::Staging {
                context: format!("reading {}: {e}", path.display()),
                source: std::io::Error::other(e),
            })?;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(body);
        req = with_sse!(req, &self.sse);
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error("put", key, e))
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .if_none_match("*")
            .body(ByteStream::from(data));
        req = with_sse!(req, &self.sse);
        match req.send().await {
            Ok(_) => Ok(PutOutcome::Created),
            // 412: someone created it first.
            Err(e) if status_of(&e) == Some(412) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(sdk_error("put_if_absent", key, e)),
        }
    }

    async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<SwapOutcome> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .if_match(quoted_etag(etag))
            .body(ByteStream::from(data));
        req = with_sse!(req, &self.sse);
        match req.send().await {
            Ok(out) => Ok(SwapOutcome::Replaced {
                etag: trim_etag(out.e_tag()),
            }),
            // 412: another version; 404: no object to match.
            Err(e) if matches!(status_of(&e), Some(412 | 404)) => Ok(SwapOutcome::Changed),
            Err(e) => Err(sdk_error("put_if_match", key, e)),
        }
    }

    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<ObjectMeta>> {
        self.list_from(prefix, Some(start_after)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error("delete", key, e))
    }
}

impl S3Store {
    /// A ranged GetObject; with `etag`, sent `If-Match` so S3 itself refuses any other
    /// version (412), the check and the read being one request.
    async fn read_range(&self, key: &str, range: Range<u64>, etag: Option<&str>) -> Result<Bytes> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let resp = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .range(header)
            .set_if_match(etag.map(quoted_etag))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if status_of(&e) == Some(404) => {
                return Err(StoreError::NotFound {
                    key: key.to_string(),
                });
            }
            // 416: the range starts at or past the end of the object.
            Err(e) if status_of(&e) == Some(416) => return Ok(Bytes::new()),
            Err(e) => {
                return Err(match (status_of(&e), etag) {
                    // 412 PreconditionFailed: the `If-Match` version is no longer the
                    // object's. Permanent: no retry brings the planned bytes back.
                    (Some(412), Some(expected)) => StoreError::Changed {
                        key: key.to_string(),
                        expected: expected.to_string(),
                        found: None,
                    },
                    _ => sdk_error("get_range", key, e),
                });
            }
        };
        read_body("get_range", key, resp.body).await
    }

    async fn put_multipart(&self, key: &str, data: PartSource<'_>) -> Result<()> {
        let full = self.full(key);
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full);
        create = with_sse!(create, &self.sse);
        let upload = create.send().await.map_err(|e| sdk_error("put", key, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result: Result<()> = async {
            let mut parts = Vec::new();
            let len = data.len();
            for (i, start) in (0..len).step_by(self.part_bytes).enumerate() {
                let end = (start + self.part_bytes).min(len);
                let n = i as i32 + 1;
                let body = data.part(start, end).await?;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(|e| sdk_error("put", key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| sdk_error("put", key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            // Parts of an abandoned upload are billed until aborted.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

/// The bytes of a multipart upload: in memory, or a staged file read part by part.
enum PartSource<'a> {
    Memory(Bytes),
    File(&'a std::path::Path, u64),
}

impl PartSource<'_> {
    fn len(&self) -> usize {
        match self {
            PartSource::Memory(b) => b.len(),
            PartSource::File(_, n) => *n as usize,
        }
    }

    async fn part(&self, start: usize, end: usize) -> Result<Bytes> {
        match self {
            PartSource::Memory(b) => Ok(b.slice(start..end)),
            PartSource::File(path, _) => {
                use tokio::io::{AsyncReadExt, AsyncSeekExt};
                let staging = |e: std::io::Error| StoreError::Staging {
                    context: format!("reading {}", path.display()),
                    source: e,
                };
                let mut f = tokio::fs::File::open(path).await.map_err(staging)?;
                f.seek(std::io::SeekFrom::Start(start as u64))
                    .await
                    .map_err(staging)?;
                let mut buf = vec![0u8; end - start];
                f.read_exact(&mut buf).await.map_err(staging)?;
                Ok(Bytes::from(buf))
            }
        }
    }
}
