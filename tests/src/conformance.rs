//! Conformance checks per port: one function per behaviour, run on every adapter, so a
//! failure names the behaviour and the adapter (`fs_store::put_if_absent_first_wins`).
//!
//! An adapter's test file states how to make a fresh subject and lists the checks with
//! [`store_conformance!`](crate::store_conformance), [`queue_conformance!`](crate::queue_conformance)
//! and [`metrics_conformance!`](crate::metrics_conformance): each check becomes one test
//! on a subject of its own, so the checks do not depend on each other's leftovers.

use std::time::Duration;

/// Object store checks, on a store whose keys (below its root) start empty.
pub mod store {
    use super::*;
    use bytes::Bytes;
    use fanout::store::{ObjectMeta, ObjectStore, PutOutcome, SwapOutcome};

    async fn put(store: &dyn ObjectStore, key: &str, data: &'static [u8]) {
        store.put(key, Bytes::from_static(data)).await.unwrap();
    }

    /// An absent key: `head` is `None`, `get` is `NotFound`, `list` is empty.
    pub async fn missing_keys_are_absent(store: &dyn ObjectStore) {
        assert!(store.head("a/missing.txt").await.unwrap().is_none());
        assert!(matches!(
            store.get("a/missing.txt").await,
            Err(fanout::store::StoreError::NotFound { .. })
        ));
        assert!(store.list("a/").await.unwrap().is_empty());
    }

    /// What is put is got, listed and headed with its size, and deleted.
    pub async fn put_get_delete_list(store: &dyn ObjectStore) {
        put(store, "a/one.txt", b"0123456789").await;
        assert_eq!(
            store.get("a/one.txt").await.unwrap(),
            Bytes::from_static(b"0123456789")
        );
        let head = store.head("a/one.txt").await.unwrap().unwrap();
        assert_eq!((head.key.as_str(), head.size), ("a/one.txt", 10));
        assert!(!head.etag.is_empty());
        let listed = store.list("").await.unwrap();
        assert_eq!(listed, vec![head]);
        store.delete("a/one.txt").await.unwrap();
        assert!(store.head("a/one.txt").await.unwrap().is_none());
        assert!(store.list("").await.unwrap().is_empty());
    }

    /// `get_range` returns the bytes asked for, clamped at the object's end.
    pub async fn get_range_clamps_at_the_end(store: &dyn ObjectStore) {
        put(store, "r.txt", b"0123456789").await;
        let range = |r| store.get_range("r.txt", r);
        assert_eq!(range(2..5).await.unwrap(), Bytes::from_static(b"234"));
        assert_eq!(
            range(0..10).await.unwrap(),
            Bytes::from_static(b"0123456789")
        );
        assert_eq!(range(8..100).await.unwrap(), Bytes::from_static(b"89"));
    }

    /// `list` is recursive, sorted by key, filtered by prefix, with sizes and version tags.
    pub async fn list_is_recursive_sorted_and_by_prefix(store: &dyn ObjectStore) {
        put(store, "c/three.txt", b"three").await;
        put(store, "a/one.txt", b"0123456789").await;
        put(store, "a/b/two.txt", b"two").await;
        put(store, "ab.txt", b"ab").await;
        let all = store.list("").await.unwrap();
        let keys: Vec<(&str, u64)> = all.iter().map(|o| (o.key.as_str(), o.size)).collect();
        assert_eq!(
            keys,
            [
                ("a/b/two.txt", 3),
                ("a/one.txt", 10),
                ("ab.txt", 2),
                ("c/three.txt", 5)
            ]
        );
        assert!(all.iter().all(|o| !o.etag.is_empty()));
        let a: Vec<String> = store
            .list("a/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(a, ["a/b/two.txt", "a/one.txt"]);
        // A prefix is a string prefix, not a folder: `a` holds `ab.txt` too.
        assert_eq!(store.list("a").await.unwrap().len(), 3);
    }

    /// An overwrite replaces the content, the size and the version tag.
    pub async fn overwrite_replaces_content_and_version_tag(store: &dyn ObjectStore) {
        put(store, "a/one.txt", b"0123456789").await;
        let before = store.head("a/one.txt").await.unwrap().unwrap();
        // Local version tags hold the modification time.
        tokio::time::sleep(Duration::from_millis(5)).await;
        put(store, "a/one.txt", b"new content").await;
        let after = store.head("a/one.txt").await.unwrap().unwrap();
        assert_eq!(after.size, 11);
        assert_ne!(before.etag, after.etag);
        assert_eq!(
            store.get("a/one.txt").await.unwrap(),
            Bytes::from_static(b"new content")
        );
    }

    /// A read pinned to a version (`get_range_if`) reads that version only: once the
    /// object is replaced, it fails permanently with `Changed`, naming the object.
    pub async fn get_range_if_reads_only_the_pinned_version(store: &dyn ObjectStore) {
        put(store, "p/in.csv", b"0123456789").await;
        let v1 = store.head("p/in.csv").await.unwrap().unwrap().etag;
        let pinned =
            |etag: String| async move { store.get_range_if("p/in.csv", 2..5, &etag).await };
        assert_eq!(
            pinned(v1.clone()).await.unwrap(),
            Bytes::from_static(b"234")
        );
        // Local version tags hold the modification time.
        tokio::time::sleep(Duration::from_millis(5)).await;
        put(store, "p/in.csv", b"9876543210").await;
        let err = pinned(v1.clone()).await.unwrap_err();
        assert!(
            matches!(&err, fanout::store::StoreError::Changed { key, expected, .. }
                if key == "p/in.csv" && expected == &v1),
            "{err:?}"
        );
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("`p/in.csv` changed"), "{err}");
        let v2 = store.head("p/in.csv").await.unwrap().unwrap().etag;
        assert_eq!(pinned(v2).await.unwrap(), Bytes::from_static(b"765"));
        store.delete("p/in.csv").await.unwrap();
        assert!(matches!(
            pinned(v1).await,
            Err(fanout::store::StoreError::NotFound { .. })
        ));
    }

    /// Create-if-absent: the first write wins, the second is told, the content stays.
    pub async fn put_if_absent_first_wins(store: &dyn ObjectStore) {
        let create = |data| store.put_if_absent("commit.json", Bytes::from_static(data));
        assert_eq!(create(b"first").await.unwrap(), PutOutcome::Created);
        assert_eq!(create(b"second").await.unwrap(), PutOutcome::AlreadyExists);
        assert_eq!(
            store.get("commit.json").await.unwrap(),
            Bytes::from_static(b"first")
        );
    }

    /// Of writers racing to create one key, exactly one is told it created it.
    pub async fn put_if_absent_has_one_winner_among_racers(store: &dyn ObjectStore) {
        let tries = (0..8u8).map(|i| store.put_if_absent("race.json", Bytes::from(vec![b'0' + i])));
        let outcomes = join_all(tries).await;
        let created: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, Ok(PutOutcome::Created)))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(created.len(), 1, "{outcomes:?}");
        assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
        let winner = b'0' + created[0] as u8;
        assert_eq!(
            store.get("race.json").await.unwrap(),
            Bytes::from(vec![winner])
        );
    }

    /// Compare-and-swap: a swap from the version read replaces it and tells the new tag;
    /// a swap from any other tag, or of an absent key, writes nothing. Versions of the same
    /// size written in a row still get distinct tags (no ABA).
    pub async fn put_if_match_swaps_only_the_version_read(store: &dyn ObjectStore) {
        let swap = |data: &'static [u8], etag: String| async move {
            store
                .put_if_match("lease.json", Bytes::from_static(data), &etag)
                .await
                .unwrap()
        };
        assert_eq!(swap(b"x", "nope".into()).await, SwapOutcome::Changed);
        assert!(store.head("lease.json").await.unwrap().is_none());
        put(store, "lease.json", b"aaaa").await;
        let first = store.head("lease.json").await.unwrap().unwrap().etag;
        let SwapOutcome::Replaced { etag: second } = swap(b"bbbb", first.clone()).await else {
            panic!("the swap from the current tag failed")
        };
        assert_ne!(second, first);
        assert_eq!(
            store.head("lease.json").await.unwrap().unwrap().etag,
            second
        );
        assert_eq!(swap(b"cccc", first.clone()).await, SwapOutcome::Changed);
        assert_eq!(
            store.get("lease.json").await.unwrap(),
            Bytes::from_static(b"bbbb")
        );
        let mut seen = vec![first, second.clone()];
        let mut current = second;
        for data in [b"dddd", b"eeee", b"ffff"] {
            let SwapOutcome::Replaced { etag } = swap(data, current.clone()).await else {
                panic!("a swap in a row failed")
            };
            assert!(!seen.contains(&etag), "tag {etag} reused: {seen:?}");
            seen.push(etag.clone());
            current = etag;
        }
    }

    /// Of swaps racing from one version, exactly one replaces it.
    pub async fn put_if_match_has_one_winner_among_racers(store: &dyn ObjectStore) {
        put(store, "cas.json", b"0").await;
        let etag = store.head("cas.json").await.unwrap().unwrap().etag;
        let tries =
            (1..=8u8).map(|i| store.put_if_match("cas.json", Bytes::from(vec![b'0' + i]), &etag));
        let outcomes = join_all(tries).await;
        let won: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, Ok(SwapOutcome::Replaced { .. })))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(won.len(), 1, "{outcomes:?}");
        assert_eq!(
            store.get("cas.json").await.unwrap(),
            Bytes::from(vec![b'0' + won[0] as u8])
        );
    }

    /// `list_after` lists the prefix's keys sorting after the given key, in order.
    pub async fn list_after_lists_only_later_keys(store: &dyn ObjectStore) {
        for k in [
            "log/001.json",
            "log/002.json",
            "log/003.json",
            "other/004.json",
        ] {
            put(store, k, b"e").await;
        }
        let keys = |v: Vec<ObjectMeta>| v.into_iter().map(|o| o.key).collect::<Vec<_>>();
        assert_eq!(
            keys(store.list_after("log/", "log/001.json").await.unwrap()),
            ["log/002.json", "log/003.json"]
        );
        assert_eq!(
            keys(store.list_after("log/", "log/").await.unwrap()),
            ["log/001.json", "log/002.json", "log/003.json"]
        );
        assert!(
            store
                .list_after("log/", "log/003.json")
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// Deleting an absent object succeeds, as deleting twice does.
    pub async fn delete_is_idempotent(store: &dyn ObjectStore) {
        put(store, "c/three.txt", b"three").await;
        store.delete("c/three.txt").await.unwrap();
        store.delete("c/three.txt").await.unwrap();
        store.delete("never/was.txt").await.unwrap();
        assert!(store.head("c/three.txt").await.unwrap().is_none());
    }

    /// Keys with spaces and non-ASCII characters round-trip through put, list and get.
    pub async fn keys_with_spaces_and_unicode_round_trip(store: &dyn ObjectStore) {
        let odd = "odd name/ünï cødé (2).csv";
        store.put(odd, Bytes::from_static(b"x")).await.unwrap();
        let listed: Vec<String> = store
            .list("odd name/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(listed, [odd]);
        assert_eq!(store.get(odd).await.unwrap(), Bytes::from_static(b"x"));
    }

    /// `put_file` stores a local file's bytes at the key, replacing what was there.
    pub async fn put_file_stores_a_local_file(store: &dyn ObjectStore) {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let path = dir.path().join("staged.bin");
        std::fs::write(&path, &data).unwrap();
        put(store, "out/part-0.parquet", b"old").await;
        store.put_file("out/part-0.parquet", &path).await.unwrap();
        assert_eq!(
            store.get("out/part-0.parquet").await.unwrap().as_ref(),
            &data[..]
        );
        let head = store.head("out/part-0.parquet").await.unwrap().unwrap();
        assert_eq!(head.size, data.len() as u64);
        // An empty file is an empty object, not an error.
        let empty = dir.path().join("empty.bin");
        std::fs::write(&empty, b"").unwrap();
        store.put_file("out/empty", &empty).await.unwrap();
        assert!(store.get("out/empty").await.unwrap().is_empty());
    }

    /// `copy_from` copies an object of the same kind of store, by its full location, to a
    /// key (replacing it), leaving the source as it was; a missing source is an error.
    pub async fn copy_from_copies_an_object_by_location(store: &dyn ObjectStore) {
        let root = fanout::location::Location::parse(&store.describe()).unwrap();
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        let src = "jobs/j/staged/region=EU West/part-ü 1.parquet";
        store.put(src, Bytes::from(data.clone())).await.unwrap();
        put(store, "out/region=EU West/part-ü 1.parquet", b"old").await;
        store
            .copy_from(&root.join(src), "out/region=EU West/part-ü 1.parquet")
            .await
            .unwrap();
        assert_eq!(
            store
                .get("out/region=EU West/part-ü 1.parquet")
                .await
                .unwrap()
                .as_ref(),
            &data[..]
        );
        assert_eq!(store.get(src).await.unwrap().as_ref(), &data[..]);
        assert!(
            store
                .copy_from(&root.join("jobs/j/staged/missing"), "out/x")
                .await
                .is_err()
        );
        assert!(store.head("out/x").await.unwrap().is_none());
    }

    /// Polls the futures together (so their writes overlap as far as the adapter lets
    /// them) and returns their outputs in order.
    async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
        let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
        let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, r) in pinned.iter_mut().zip(results.iter_mut()) {
                if r.is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *r = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        results.into_iter().map(|r| r.unwrap()).collect()
    }
}

/// A queue under test: a fresh queue redriving to a fresh dead-letter queue after
/// `max_receive` receives, with visibility timeout `visibility`.
#[derive(Debug)]
pub struct QueueSubject {
    /// The queue.
    pub queue: std::sync::Arc<dyn fanout::queue::Queue>,
    /// Its dead-letter queue.
    pub dlq: std::sync::Arc<dyn fanout::queue::Queue>,
    /// Receives before the redrive.
    pub max_receive: u32,
    /// The queue's visibility timeout.
    pub visibility: Duration,
    /// The largest message (and batch payload) the adapter was built to send.
    pub max_message_bytes: usize,
}

/// Queue checks (SQS semantics), each on a fresh [`QueueSubject`].
pub mod queue {
    use super::*;
    use fanout::queue::Message;

    const LONG: Duration = Duration::from_secs(2);
    const SHORT: Duration = Duration::from_millis(50);

    fn bodies(ms: &[Message]) -> Vec<&str> {
        let mut b: Vec<&str> = ms.iter().map(|m| m.body.as_str()).collect();
        b.sort();
        b
    }

    async fn send(s: &QueueSubject, bodies: &[&str]) {
        let owned: Vec<String> = bodies.iter().map(|b| b.to_string()).collect();
        s.queue.send(&owned).await.unwrap();
    }

    /// Sent bodies are received once each, on their first receive.
    pub async fn send_then_receive_delivers_each_body(s: &QueueSubject) {
        send(s, &["one", "two"]).await;
        let got = s.queue.receive(10, LONG).await.unwrap();
        assert_eq!(bodies(&got), ["one", "two"]);
        assert!(got.iter().all(|m| m.receive_count == 1), "{got:?}");
        assert_ne!(got[0].id, got[1].id);
    }

    /// A received message is invisible until its visibility timeout, then comes back
    /// with the same id and its receive count raised.
    pub async fn an_unacknowledged_message_comes_back_after_the_visibility_timeout(
        s: &QueueSubject,
    ) {
        send(s, &["three"]).await;
        let m = s.queue.receive(1, LONG).await.unwrap();
        assert_eq!(bodies(&m), ["three"]);
        assert!(s.queue.receive(10, SHORT).await.unwrap().is_empty());
        tokio::time::sleep(s.visibility + Duration::from_millis(300)).await;
        let back = s.queue.receive(1, LONG).await.unwrap();
        assert_eq!(bodies(&back), ["three"]);
        assert_eq!((back[0].receive_count, &back[0].id), (2, &m[0].id));
    }

    /// A deleted message does not come back, even after the visibility timeout.
    pub async fn a_deleted_message_is_gone(s: &QueueSubject) {
        send(s, &["one"]).await;
        let m = s.queue.receive(1, LONG).await.unwrap();
        s.queue.delete(&m[0].receipt).await.unwrap();
        tokio::time::sleep(s.visibility + Duration::from_millis(300)).await;
        assert!(s.queue.receive(10, SHORT).await.unwrap().is_empty());
        assert!(s.queue.depth().await.unwrap().is_drained());
    }

    /// A zero visibility change makes a message visible at once; its receive count rises.
    pub async fn change_visibility_to_zero_releases_at_once(s: &QueueSubject) {
        send(s, &["two"]).await;
        let m = s.queue.receive(1, LONG).await.unwrap();
        s.queue
            .change_visibility(&m[0].receipt, Duration::ZERO)
            .await
            .unwrap();
        let again = s.queue.receive(10, LONG).await.unwrap();
        assert_eq!(bodies(&again), ["two"]);
        assert_eq!((again[0].receive_count, &again[0].id), (2, &m[0].id));
    }

    /// A delete with an older receipt of a message received again succeeds (as in SQS).
    pub async fn a_stale_receipt_can_be_deleted_without_error(s: &QueueSubject) {
        send(s, &["one"]).await;
        let first = s.queue.receive(1, LONG).await.unwrap();
        s.queue
            .change_visibility(&first[0].receipt, Duration::ZERO)
            .await
            .unwrap();
        let second = s.queue.receive(1, LONG).await.unwrap();
        s.queue.delete(&first[0].receipt).await.unwrap();
        s.queue.delete(&second[0].receipt).await.unwrap();
        assert!(s.queue.receive(10, SHORT).await.unwrap().is_empty());
    }

    /// After `max_receive` receives a message moves to the dead-letter queue.
    pub async fn the_redrive_moves_a_message_to_the_dead_letter_queue(s: &QueueSubject) {
        send(s, &["poison"]).await;
        let mut count = 0;
        while count < s.max_receive {
            let m = s.queue.receive(1, LONG).await.unwrap();
            assert_eq!(bodies(&m), ["poison"], "receive {}", count + 1);
            count = m[0].receive_count;
            s.queue
                .change_visibility(&m[0].receipt, Duration::ZERO)
                .await
                .unwrap();
        }
        assert_eq!(count, s.max_receive);
        assert!(
            s.queue.receive(1, SHORT).await.unwrap().is_empty(),
            "a message received max_receive times must not come back"
        );
        let dead = s.dlq.receive(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(bodies(&dead), ["poison"]);
        s.dlq.delete(&dead[0].receipt).await.unwrap();
    }

    /// Sends larger than SQS's batch of 10 are split by the adapter; receives return at
    /// most the number asked for.
    pub async fn large_sends_are_split_into_batches(s: &QueueSubject) {
        let many: Vec<String> = (0..25).map(|i| format!("m{i:02}")).collect();
        s.queue.send(&many).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 25 {
            let b = s.queue.receive(10, LONG).await.unwrap();
            assert!(!b.is_empty() && b.len() <= 10, "{} messages", b.len());
            for m in &b {
                s.queue.delete(&m.receipt).await.unwrap();
            }
            seen.extend(b.into_iter().map(|m| m.body));
        }
        seen.sort();
        assert_eq!(seen, many);
        assert!(s.queue.depth().await.unwrap().is_drained());
    }

    /// Sends are batched by bytes as well as by count: ten bodies of four fifths of the
    /// limit each (twice SQS's 1 MiB batch payload at the default limit) all arrive. A
    /// body over the limit refuses its whole send, naming its size and the limit, before
    /// anything of it is sent.
    pub async fn sends_respect_the_message_size_limit(s: &QueueSubject) {
        let limit = s.max_message_bytes;
        let big: Vec<String> = (0..10)
            .map(|i| format!("{i}{}", "x".repeat(limit * 4 / 5)))
            .collect();
        s.queue.send(&big).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < big.len() {
            let b = s.queue.receive(10, LONG).await.unwrap();
            assert!(!b.is_empty(), "{} of {} received", seen.len(), big.len());
            for m in &b {
                s.queue.delete(&m.receipt).await.unwrap();
            }
            seen.extend(b.into_iter().map(|m| m.body));
        }
        seen.sort();
        assert_eq!(seen, big);

        let over = vec!["small".to_string(), "y".repeat(limit + 1)];
        let e = s.queue.send(&over).await.unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains(&format!("{} bytes", limit + 1)), "{shown}");
        assert!(
            shown.contains(&format!("limit of {limit} bytes")),
            "{shown}"
        );
        assert!(!e.retryable, "{shown}");
        assert!(s.queue.receive(10, SHORT).await.unwrap().is_empty());
        assert!(s.queue.depth().await.unwrap().is_drained());
    }

    /// The depth counts visible and in-flight messages; deleted ones leave it.
    pub async fn depth_counts_visible_and_in_flight(s: &QueueSubject) {
        assert!(s.queue.depth().await.unwrap().is_drained());
        send(s, &["a", "b", "c"]).await;
        let m = s.queue.receive(1, LONG).await.unwrap();
        let d = s.queue.depth().await.unwrap();
        assert_eq!((d.visible, d.in_flight), (2, 1));
        s.queue.delete(&m[0].receipt).await.unwrap();
        let mut rest = Vec::new();
        while rest.len() < 2 {
            rest.extend(s.queue.receive(10, LONG).await.unwrap());
        }
        for m in &rest {
            s.queue.delete(&m.receipt).await.unwrap();
        }
        assert!(s.queue.depth().await.unwrap().is_drained());
    }
}

/// What a metrics backend saw of one metric of one job, once flushed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    /// Sum of the values.
    pub sum: f64,
    /// Number of values.
    pub count: u64,
}

/// A metrics adapter under test, with a way to read back what its backend received.
#[async_trait::async_trait]
pub trait MetricsSubject: Send + Sync {
    /// The adapter.
    fn metrics(&self) -> &dyn fanout::metrics::Metrics;
    /// What the backend holds of metric `name` for job `job` (after a flush).
    async fn observed(&self, job: &str, name: &str) -> Observed;
    /// The unit the backend holds for the metric, when it keeps units.
    async fn unit(&self, job: &str, name: &str) -> Option<String>;
}

/// Metrics checks, each on a fresh [`MetricsSubject`].
pub mod metrics {
    use super::*;
    use fanout::metrics::{Unit, names};

    /// Every value of a metric reaches the backend: sum and count.
    pub async fn values_of_a_metric_add_up(s: &dyn MetricsSubject) {
        for v in [1.0, 2.5, 4.0, 0.0] {
            s.metrics()
                .record("orders", names::ROWS_READ, v, Unit::Count);
        }
        s.metrics().flush().await.unwrap();
        assert_eq!(
            s.observed("orders", names::ROWS_READ).await,
            Observed { sum: 7.5, count: 4 }
        );
    }

    /// Metrics of different names are kept apart.
    pub async fn metrics_are_kept_apart_by_name(s: &dyn MetricsSubject) {
        s.metrics()
            .record("orders", names::ROWS_READ, 10.0, Unit::Count);
        s.metrics()
            .record("orders", names::BYTES_WRITTEN, 4096.0, Unit::Bytes);
        s.metrics()
            .record("orders", names::ROWS_READ, 5.0, Unit::Count);
        s.metrics().flush().await.unwrap();
        assert_eq!(
            s.observed("orders", names::ROWS_READ).await,
            Observed {
                sum: 15.0,
                count: 2
            }
        );
        assert_eq!(
            s.observed("orders", names::BYTES_WRITTEN).await,
            Observed {
                sum: 4096.0,
                count: 1
            }
        );
        assert_eq!(
            s.observed("orders", names::ROWS_REJECTED).await,
            Observed::default()
        );
    }

    /// The `JobName` dimension keeps jobs apart (for backends that have dimensions).
    pub async fn jobs_are_kept_apart(s: &dyn MetricsSubject) {
        s.metrics()
            .record("orders", names::ROWS_READ, 3.0, Unit::Count);
        s.metrics()
            .record("returns", names::ROWS_READ, 7.0, Unit::Count);
        s.metrics().flush().await.unwrap();
        assert_eq!(
            s.observed("orders", names::ROWS_READ).await,
            Observed { sum: 3.0, count: 1 }
        );
        assert_eq!(
            s.observed("returns", names::ROWS_READ).await,
            Observed { sum: 7.0, count: 1 }
        );
    }

    /// A metric keeps the unit it was recorded with (for backends that keep units).
    pub async fn units_are_kept(s: &dyn MetricsSubject) {
        s.metrics()
            .record("orders", names::BYTES_READ, 100.0, Unit::Bytes);
        s.metrics()
            .record("orders", names::CHUNK_DURATION, 12.5, Unit::Milliseconds);
        s.metrics()
            .record("orders", names::JOB_COST, 0.25, Unit::None);
        s.metrics().flush().await.unwrap();
        assert_eq!(
            s.unit("orders", names::BYTES_READ).await.as_deref(),
            Some("Bytes")
        );
        assert_eq!(
            s.unit("orders", names::CHUNK_DURATION).await.as_deref(),
            Some("Milliseconds")
        );
        assert_eq!(
            s.unit("orders", names::JOB_COST).await.as_deref(),
            Some("None")
        );
    }

    /// More values than one backend request or document holds all arrive, once.
    pub async fn many_values_survive_batching(s: &dyn MetricsSubject) {
        for i in 0..1500 {
            s.metrics()
                .record("orders", names::ROWS_WRITTEN, (i % 10) as f64, Unit::Count);
        }
        s.metrics().flush().await.unwrap();
        assert_eq!(
            s.observed("orders", names::ROWS_WRITTEN).await,
            Observed {
                sum: 6750.0,
                count: 1500
            }
        );
    }

    /// A second flush sends nothing again, and a flush with nothing recorded succeeds.
    pub async fn a_flush_sends_each_value_once(s: &dyn MetricsSubject) {
        s.metrics().flush().await.unwrap();
        s.metrics()
            .record("orders", names::FILES_WRITTEN, 2.0, Unit::Count);
        s.metrics().flush().await.unwrap();
        s.metrics().flush().await.unwrap();
        assert_eq!(
            s.observed("orders", names::FILES_WRITTEN).await,
            Observed { sum: 2.0, count: 1 }
        );
    }

    /// Values recorded from many tasks at once are all kept.
    pub async fn concurrent_records_are_all_kept(s: &dyn MetricsSubject) {
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..250 {
                        s.metrics()
                            .record("orders", names::CHUNKS_COMMITTED, 1.0, Unit::Count);
                    }
                });
            }
        });
        s.metrics().flush().await.unwrap();
        assert_eq!(
            s.observed("orders", names::CHUNKS_COMMITTED).await,
            Observed {
                sum: 1000.0,
                count: 1000
            }
        );
    }
}

/// One `#[tokio::test]` per listed check; `$make` is an async fn returning the subject
/// (boxed: the checks take what it derefs to) and a guard kept alive for the test (a
/// temporary directory, say).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($port:ident, $make:path, [$($check:ident),* $(,)?]) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (subject, _guard) = $make().await;
                $crate::conformance::$port::$check(&*subject).await;
            }
        )*
    };
}

/// Every store check, as one test each, on the stores `$make` returns: an async fn
/// giving `(Box<dyn ObjectStore>, guard)`.
#[macro_export]
macro_rules! store_conformance {
    ($make:path) => {
        $crate::__conformance_tests!(
            store,
            $make,
            [
                missing_keys_are_absent,
                put_get_delete_list,
                get_range_clamps_at_the_end,
                get_range_if_reads_only_the_pinned_version,
                list_is_recursive_sorted_and_by_prefix,
                overwrite_replaces_content_and_version_tag,
                put_if_absent_first_wins,
                put_if_absent_has_one_winner_among_racers,
                put_if_match_swaps_only_the_version_read,
                put_if_match_has_one_winner_among_racers,
                list_after_lists_only_later_keys,
                delete_is_idempotent,
                keys_with_spaces_and_unicode_round_trip,
                put_file_stores_a_local_file,
                copy_from_copies_an_object_by_location,
            ]
        );
    };
}

/// Every queue check, as one test each, on the boxed [`QueueSubject`]s `$make` returns.
#[macro_export]
macro_rules! queue_conformance {
    ($make:path) => {
        $crate::__conformance_tests!(
            queue,
            $make,
            [
                send_then_receive_delivers_each_body,
                an_unacknowledged_message_comes_back_after_the_visibility_timeout,
                a_deleted_message_is_gone,
                change_visibility_to_zero_releases_at_once,
                a_stale_receipt_can_be_deleted_without_error,
                the_redrive_moves_a_message_to_the_dead_letter_queue,
                large_sends_are_split_into_batches,
                sends_respect_the_message_size_limit,
                depth_counts_visible_and_in_flight,
            ]
        );
    };
}

/// The listed metrics checks (not every backend keeps jobs or units), as one test each,
/// on the boxed [`MetricsSubject`]s `$make` returns.
#[macro_export]
macro_rules! metrics_conformance {
    ($make:path, [$($check:ident),* $(,)?]) => {
        $crate::__conformance_tests!(metrics, $make, [$($check),*]);
    };
}
