//! Typed identifiers, validated once where they enter (CLI argument, event, message,
//! persisted record), so a value that would escape its key prefix never reaches a store.
//!
//! A job id and a chunk id become parts of object keys (`jobs/<job_id>/chunks/<chunk_id>.json`,
//! `<rejects>/<job_id>/…`): a `/` or a `..` in one would address another job's objects.

use std::fmt;

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a {what}: {expected}")]
pub struct IdError {
    /// What kind of id (`job id`, `chunk id`).
    pub what: &'static str,
    /// The refused value.
    pub value: String,
    /// What a valid one looks like.
    pub expected: &'static str,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal, $extra:literal, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Longest valid id, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Checks `value`: 1 to [`Self::MAX_LEN`] ASCII letters, digits, `-`, `_`
            /// (and, where allowed, `.`), and not made of dots only.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                let ok = !value.is_empty()
                    && value.len() <= $max
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || $extra.contains(c))
                    && !value.chars().all(|c| c == '.');
                if ok {
                    Ok($name(value))
                } else {
                    Err(IdError { what: $what, value, expected: $expected })
                }
            }

            /// An id fanout made itself from characters the rule allows (a hex digest,
            /// a validated name and a digest); checked in debug builds.
            pub(crate) fn from_trusted(value: String) -> Self {
                debug_assert!(Self::parse(value.as_str()).is_ok(), "{value:?}");
                $name(value)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A job's id: given (`job_id` in the spec, `--job-id`, the Step Functions input) or
    /// derived from the spec's name and the input listing (`<name>-<12 hex digits>`).
    ///
    /// ```
    /// use fanout::ids::JobId;
    /// assert!(JobId::parse("orders-2026.12.01").is_ok());
    /// assert!(JobId::parse("a/b").is_err());
    /// assert!(JobId::parse("..").is_err());
    /// ```
    JobId,
    "job id",
    128,
    ".",
    "use 1–128 letters, digits, `-`, `_` or `.` (not dots only)"
);

id_type!(
    /// A chunk's id: a pure function of the job id and the chunk's pieces
    /// ([`crate::plan::chunk_id`]).
    ///
    /// ```
    /// use fanout::ids::ChunkId;
    /// assert!(ChunkId::parse("0a1b2c3d4e5f60718293").is_ok());
    /// assert!(ChunkId::parse("../x").is_err());
    /// ```
    ChunkId,
    "chunk id",
    64,
    "",
    "use 1–64 letters, digits, `-` or `_`"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_would_leave_their_key_prefix_are_refused() {
        for bad in ["", "a/b", "..", ".", "a b", "ä", "x\\y"] {
            assert!(JobId::parse(bad).is_err(), "{bad:?}");
            assert!(ChunkId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(JobId::parse("a".repeat(129)).is_err());
        assert!(JobId::parse("a".repeat(128)).is_ok());
        assert!(ChunkId::parse("a.b").is_err());
        assert_eq!(
            JobId::parse("orders-1.2").map(String::from).ok().as_deref(),
            Some("orders-1.2")
        );
    }

    #[test]
    fn ids_serialize_as_plain_strings_and_are_checked_when_read() {
        let id = JobId::parse("orders-abc").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"orders-abc\"");
        assert_eq!(serde_json::from_str::<JobId>("\"orders-abc\"").unwrap(), id);
        let err = serde_json::from_str::<JobId>("\"a/b\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a job id"), "{err}");
    }
}
