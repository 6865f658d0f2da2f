//! The "object created" events of S3: read from an EventBridge event (what the arrivals
//! queue holds) or from an S3 event notification's `Records` (what a bucket sends to SQS,
//! SNS or Lambda directly).

use serde_json::Value;

use crate::location::Location;

/// One object an event says was created.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectCreated {
    /// The bucket.
    pub bucket: String,
    /// The key as the event best gives it (URL-decoded for S3 notification records,
    /// whose keys are always form-encoded).
    pub key: String,
    /// The key URL-decoded, when that differs from `key`: EventBridge gives keys as
    /// they are, but a key an encoder touched (spaces as `+`, `%2F`) is only found under
    /// its decoded form, so a reader that HEADs the object tries both.
    pub decoded_key: Option<String>,
}

impl ObjectCreated {
    /// The keys to try for this object, in order.
    pub fn candidate_keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key.as_str()).chain(self.decoded_key.as_deref())
    }
}

/// Decodes a key of an S3 event notification: form-encoded, so `+` is a space.
///
/// ```
/// assert_eq!(fanout::arrivals::url_decode("raw/orders+1%2B2.csv"), "raw/orders 1+2.csv");
/// ```
pub fn url_decode(key: &str) -> String {
    let plus = key.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// The objects an event says were created: `None` when the event is not an S3 event
/// notification nor an EventBridge "Object Created" event, an empty list when it is one
/// that names no created object (a delete, a test event).
///
/// ```
/// use serde_json::json;
/// let event = json!({"source": "aws.s3", "detail-type": "Object Created",
///     "detail": {"bucket": {"name": "in"}, "object": {"key": "raw/a.csv"}}});
/// let objects = fanout::arrivals::object_created(&event).unwrap();
/// assert_eq!((objects[0].bucket.as_str(), objects[0].key.as_str()), ("in", "raw/a.csv"));
/// assert!(fanout::arrivals::object_created(&json!({"hello": 1})).is_none());
/// ```
pub fn object_created(event: &Value) -> Option<Vec<ObjectCreated>> {
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        return Some(
            records
                .iter()
                .filter(|r| {
                    r["eventSource"] == "aws:s3"
                        && r["eventName"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("ObjectCreated"))
                })
                .filter_map(|r| {
                    Some(ObjectCreated {
                        bucket: r["s3"]["bucket"]["name"].as_str()?.to_string(),
                        key: url_decode(r["s3"]["object"]["key"].as_str()?),
                        decoded_key: None,
                    })
                })
                .collect(),
        );
    }
    if event["source"] == "aws.s3" && event.get("detail-type").is_some() {
        if event["detail-type"] != "Object Created" {
            return Some(Vec::new());
        }
        let bucket = event["detail"]["bucket"]["name"].as_str()?;
        let key = event["detail"]["object"]["key"].as_str()?;
        if bucket.is_empty() || key.is_empty() {
            return None;
        }
        let decoded = url_decode(key);
        return Some(vec![ObjectCreated {
            bucket: bucket.to_string(),
            key: key.to_string(),
            decoded_key: (decoded != key).then_some(decoded),
        }]);
    }
    None
}

/// The key of `bucket`/`key` relative to the input location, or `None` when the object
/// does not lie under it.
///
/// ```
/// use fanout::location::Location;
/// let input = Location::parse("s3://landing/raw/").unwrap();
/// assert_eq!(fanout::arrivals::relative_key(&input, "landing", "raw/2026/a.csv"), Some("2026/a.csv".into()));
/// assert_eq!(fanout::arrivals::relative_key(&input, "landing", "other/a.csv"), None);
/// assert_eq!(fanout::arrivals::relative_key(&input, "elsewhere", "raw/a.csv"), None);
/// ```
pub fn relative_key(input: &Location, bucket: &str, key: &str) -> Option<String> {
    match input {
        Location::S3 { bucket: b, prefix } if b == bucket => key
            .strip_prefix(prefix.as_str())
            .filter(|k| !k.is_empty())
            .map(str::to_string),
        Location::Local(dir) => {
            let path = std::path::Path::new(bucket).join(key);
            // `a/../b` would leave the input directory, whatever it strips to.
            let plain = path.components().all(|c| {
                !matches!(
                    c,
                    std::path::Component::ParentDir | std::path::Component::CurDir
                )
            });
            path.strip_prefix(dir)
                .ok()
                .filter(|_| plain)
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|k| !k.is_empty())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notification_keys_are_decoded_and_other_records_ignored() {
        let event = json!({"Records": [
            {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
             "s3": {"bucket": {"name": "in"}, "object": {"key": "raw/a+b%2Cc.csv"}}},
            {"eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete",
             "s3": {"bucket": {"name": "in"}, "object": {"key": "raw/gone.csv"}}},
        ]});
        let got = object_created(&event).expect("an S3 event");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].key, "raw/a b,c.csv");
        assert_eq!(got[0].decoded_key, None);
    }

    #[test]
    fn eventbridge_keys_are_kept_with_their_decoded_form_as_a_fallback() {
        let event = json!({"source": "aws.s3", "detail-type": "Object Created",
            "detail": {"bucket": {"name": "in"}, "object": {"key": "raw/a+b.csv"}}});
        let got = object_created(&event).expect("an EventBridge event");
        assert_eq!(
            got[0].candidate_keys().collect::<Vec<_>>(),
            ["raw/a+b.csv", "raw/a b.csv"]
        );
        let deleted = json!({"source": "aws.s3", "detail-type": "Object Deleted",
            "detail": {"bucket": {"name": "in"}, "object": {"key": "raw/a.csv"}}});
        assert_eq!(object_created(&deleted), Some(Vec::new()));
        let keyless = json!({"source": "aws.s3", "detail-type": "Object Created",
            "detail": {"bucket": {"name": "in"}, "object": {}}});
        assert_eq!(object_created(&keyless), None);
    }

    #[test]
    fn the_sample_event_names_its_object() {
        let text = include_str!("../../../events/eventbridge-object-created.json");
        let event: Value = serde_json::from_str(text).expect("JSON");
        let got = object_created(&event).expect("an EventBridge event");
        assert_eq!(got[0].bucket, "fanout-input-123456789012");
        assert_eq!(got[0].key, "raw/orders/2026/orders-11.csv");
    }
}
