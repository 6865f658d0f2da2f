//! Locations: a local path, `file://…`, or `s3://bucket/prefix`.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Where a prefix of objects lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A local directory (absolute or relative to the working directory).
    Local(PathBuf),
    /// An S3 bucket and key prefix (no leading `/`; empty for the bucket root).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix.
        prefix: String,
    },
}

impl Location {
    /// Parses a location string.
    ///
    /// ```
    /// use fanout::location::Location;
    /// assert_eq!(
    ///     Location::parse("s3://bucket/raw/orders/").unwrap(),
    ///     Location::S3 { bucket: "bucket".into(), prefix: "raw/orders/".into() }
    /// );
    /// assert!(matches!(Location::parse("data/in").unwrap(), Location::Local(_)));
    /// assert!(Location::parse("gs://bucket/x").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Location, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("the location is empty".into());
        }
        if let Some(rest) = t.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
                && !bucket.starts_with(['-', '.'])
                && !bucket.ends_with(['-', '.']);
            if !valid_bucket {
                return Err(format!(
                    "`{bucket}` is not an S3 bucket name (3–63 lowercase letters, digits, `-`, `.`)"
                ));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if let Some(rest) = t.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(format!(
                    "`{t}`: a file:// URL needs an absolute path (file:///…)"
                ));
            }
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = t.split_once("://") {
            return Err(format!(
                "unsupported scheme `{scheme}://`: use a local path, file:// or s3://"
            ));
        }
        Ok(Location::Local(PathBuf::from(t)))
    }

    /// Whether `self` lies inside (or equals) `other`.
    pub fn is_within(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Local(a), Location::Local(b)) => normalize(a).starts_with(normalize(b)),
            (
                Location::S3 {
                    bucket: ba,
                    prefix: pa,
                },
                Location::S3 {
                    bucket: bb,
                    prefix: pb,
                },
            ) => {
                let dir = |p: &str| {
                    if p.is_empty() || p.ends_with('/') {
                        p.to_string()
                    } else {
                        format!("{p}/")
                    }
                };
                ba == bb && dir(pa).starts_with(&dir(pb))
            }
            _ => false,
        }
    }

    /// A child location `key` below this one.
    pub fn join(&self, key: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.join(key)),
            Location::S3 { bucket, prefix } => {
                let sep = if prefix.is_empty() || prefix.ends_with('/') {
                    ""
                } else {
                    "/"
                };
                Location::S3 {
                    bucket: bucket.clone(),
                    prefix: format!("{prefix}{sep}{key}"),
                }
            }
        }
    }

    /// For a location naming one object: its parent prefix and its key below that.
    pub fn split_object(&self) -> (Location, String) {
        match self {
            Location::Local(p) => {
                let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (Location::Local(parent), name)
            }
            Location::S3 { bucket, prefix } => {
                let (dir, name) = prefix
                    .rsplit_once('/')
                    .map_or(("", prefix.as_str()), |(d, n)| (d, n));
                (
                    Location::S3 {
                        bucket: bucket.clone(),
                        prefix: if dir.is_empty() {
                            String::new()
                        } else {
                            format!("{dir}/")
                        },
                    },
                    name.to_string(),
                )
            }
        }
    }
}

/// Lexically absolute and `..`-free, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Server-side encryption of objects written to S3 (a property of where objects are
/// written, chosen by the spec's `sse`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sse {
    /// Whatever the bucket's default encryption says.
    #[default]
    BucketDefault,
    /// SSE-S3 (AES256).
    S3,
    /// SSE-KMS with this key id or ARN.
    Kms(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_locations_are_detected_lexically() {
        let a = Location::parse("data/in/").unwrap();
        assert!(Location::parse("data/in/out").unwrap().is_within(&a));
        assert!(Location::parse("data/x/../in/out").unwrap().is_within(&a));
        assert!(!Location::parse("data/input2").unwrap().is_within(&a));
        let s = Location::parse("s3://bkt/raw").unwrap();
        assert!(Location::parse("s3://bkt/raw/x").unwrap().is_within(&s));
        assert!(!Location::parse("s3://bkt/raw2/x").unwrap().is_within(&s));
    }

    #[test]
    fn object_locations_split_into_prefix_and_key() {
        let (dir, key) = Location::parse("s3://bkt/ref/customers.csv")
            .unwrap()
            .split_object();
        assert_eq!(dir.to_string(), "s3://bkt/ref/");
        assert_eq!(key, "customers.csv");
    }
}
