//! The port conformance suites on the embedded adapters.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use fanout::queue::LocalQueue;
use fanout::store::FsStore;
use fanout_tests::conformance::{queue_suite, store_suite};

#[tokio::test]
async fn fs_store_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    store_suite(&FsStore::new(dir.path()), "suite/").await;
}

#[tokio::test]
async fn fs_store_refuses_keys_that_escape_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path().join("root"));
    use fanout::store::ObjectStore;
    let err = store
        .put("../outside.txt", bytes::Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot be stored"), "{err}");
    assert!(!dir.path().join("outside.txt").exists());
}

#[tokio::test]
async fn local_queue_keeps_the_sqs_contract() {
    let visibility = Duration::from_millis(400);
    let dlq = Arc::new(LocalQueue::new("dlq", visibility));
    let queue = LocalQueue::new("q", visibility).with_dead_letter(dlq.clone(), 3);
    queue_suite(&queue, dlq.as_ref(), 3, visibility).await;
}
