//! One conformance suite per port: the same checks for every adapter.

use std::time::Duration;

use bytes::Bytes;
use fanout::queue::Queue;
use fanout::store::{ObjectStore, PutOutcome};

/// Checks an object store adapter; `prefix` isolates this run's keys.
pub async fn store_suite(store: &dyn ObjectStore, prefix: &str) {
    let k = |s: &str| format!("{prefix}{s}");
    assert!(store.head(&k("a/missing.txt")).await.unwrap().is_none());
    assert!(matches!(
        store.get(&k("a/missing.txt")).await,
        Err(fanout::store::StoreError::NotFound { .. })
    ));

    store
        .put(&k("a/one.txt"), Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    store
        .put(&k("a/b/two.txt"), Bytes::from_static(b"two"))
        .await
        .unwrap();
    store
        .put(&k("c/three.txt"), Bytes::from_static(b"three"))
        .await
        .unwrap();
    assert_eq!(
        store.get(&k("a/one.txt")).await.unwrap(),
        Bytes::from_static(b"0123456789")
    );

    // Ranges, clamped at the end.
    assert_eq!(
        store.get_range(&k("a/one.txt"), 2..5).await.unwrap(),
        Bytes::from_static(b"234")
    );
    assert_eq!(
        store.get_range(&k("a/one.txt"), 8..100).await.unwrap(),
        Bytes::from_static(b"89")
    );

    // Listing: recursive, sorted, by prefix, sizes and version tags.
    let all = store.list(&k("")).await.unwrap();
    let keys: Vec<&str> = all.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![k("a/b/two.txt"), k("a/one.txt"), k("c/three.txt")]
    );
    assert_eq!(all[1].size, 10);
    assert!(!all[1].etag.is_empty());
    let a = store.list(&k("a/")).await.unwrap();
    assert_eq!(a.len(), 2);

    // Overwrite changes content (and the version tag).
    let before = store.head(&k("a/one.txt")).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .put(&k("a/one.txt"), Bytes::from_static(b"new content"))
        .await
        .unwrap();
    let after = store.head(&k("a/one.txt")).await.unwrap().unwrap();
    assert_eq!(after.size, 11);
    assert_ne!(before.etag, after.etag);

    // Create-if-absent: first wins, second is told, content unchanged.
    assert_eq!(
        store
            .put_if_absent(&k("commit.json"), Bytes::from_static(b"first"))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        store
            .put_if_absent(&k("commit.json"), Bytes::from_static(b"second"))
            .await
            .unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(
        store.get(&k("commit.json")).await.unwrap(),
        Bytes::from_static(b"first")
    );

    // Deleting twice succeeds.
    store.delete(&k("c/three.txt")).await.unwrap();
    store.delete(&k("c/three.txt")).await.unwrap();
    assert!(store.head(&k("c/three.txt")).await.unwrap().is_none());

    // Keys with spaces and unicode round-trip.
    let odd = k("odd name/ünï cødé.csv");
    store.put(&odd, Bytes::from_static(b"x")).await.unwrap();
    assert!(
        store
            .list(&k("odd name/"))
            .await
            .unwrap()
            .iter()
            .any(|o| o.key == odd)
    );
}

/// Checks a queue adapter with redrive: `queue` redrives to `dlq` after `max_receive` receives;
/// its visibility timeout must be `visibility`.
pub async fn queue_suite(
    queue: &dyn Queue,
    dlq: &dyn Queue,
    max_receive: u32,
    visibility: Duration,
) {
    let wait = Duration::from_millis(50);
    queue
        .send(&["one".to_string(), "two".to_string()])
        .await
        .unwrap();
    let got = queue.receive(10, Duration::from_secs(2)).await.unwrap();
    let mut bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, ["one", "two"]);
    assert!(got.iter().all(|m| m.receive_count == 1));

    // In flight: invisible until the timeout.
    assert!(queue.receive(10, wait).await.unwrap().is_empty());
    let one = got.iter().find(|m| m.body == "one").unwrap();
    let two = got.iter().find(|m| m.body == "two").unwrap();
    queue.delete(&one.receipt).await.unwrap();

    // Visible again at once after a zero visibility change; the receive count rises.
    queue
        .change_visibility(&two.receipt, Duration::ZERO)
        .await
        .unwrap();
    let again = queue.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, "two");
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(again[0].id, two.id);
    queue
        .change_visibility(&again[0].receipt, Duration::ZERO)
        .await
        .unwrap();

    // Receive until the redrive: after max_receive receives the message moves to the DLQ.
    let mut count = again[0].receive_count;
    while count < max_receive {
        let m = queue.receive(1, Duration::from_secs(2)).await.unwrap();
        assert_eq!(m.len(), 1);
        count = m[0].receive_count;
        queue
            .change_visibility(&m[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(
        queue.receive(1, wait).await.unwrap().is_empty(),
        "a message received max_receive times must not come back"
    );
    let dead = dlq.receive(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "two");
    dlq.delete(&dead[0].receipt).await.unwrap();

    // A message left alone comes back after the visibility timeout.
    queue.send(&["three".to_string()]).await.unwrap();
    let m = queue.receive(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(m.len(), 1);
    tokio::time::sleep(visibility + Duration::from_millis(300)).await;
    let back = queue.receive(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].receive_count, 2);
    queue.delete(&back[0].receipt).await.unwrap();

    // Batches larger than SQS's 10 are split by the adapter.
    let many: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    queue.send(&many).await.unwrap();
    let mut seen = 0;
    while seen < 25 {
        let b = queue.receive(10, Duration::from_secs(2)).await.unwrap();
        assert!(!b.is_empty() && b.len() <= 10);
        for m in &b {
            queue.delete(&m.receipt).await.unwrap();
        }
        seen += b.len();
    }
    assert!(queue.depth().await.unwrap().is_drained());
}
