//! What a chunk's attempt writes besides its commit record: the writer task that
//! encodes the transformed rows and feeds the partial aggregate, and the rejects file.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

use crate::job::{ChunkTask, RejectFile, layout};
use crate::store::ObjectStore;
use crate::transform::Reject;
use crate::write::PartitionedWriter;
use crate::{Error, Result};

/// The partial aggregate's input channel and its task.
pub(super) type AggregateTask = (
    tokio::sync::mpsc::Sender<RecordBatch>,
    tokio::task::JoinHandle<Result<crate::aggregate::Partial>>,
);

/// The writer task: encodes the transformed rows and feeds the partial aggregate.
pub(super) async fn consume(
    mut rows: tokio::sync::mpsc::Receiver<RecordBatch>,
    mut writer: PartitionedWriter,
    aggregate: Option<AggregateTask>,
) -> Result<(
    PartitionedWriter,
    Option<crate::aggregate::Partial>,
    Duration,
)> {
    let (mut agg_tx, agg_task) = match aggregate {
        Some((tx, task)) => (Some(tx), Some(task)),
        None => (None, None),
    };
    let mut encode = Duration::ZERO;
    while let Some(b) = rows.recv().await {
        let t = Instant::now();
        let set_aside = writer.write(&b)?;
        encode += t.elapsed();
        // Rows rejected for their partition value are in no file: not in the aggregate either.
        let b = if set_aside.is_empty() {
            b
        } else {
            let mut keep = vec![true; b.num_rows()];
            for r in set_aside {
                keep[r as usize] = false;
            }
            arrow::compute::filter_record_batch(&b, &arrow::array::BooleanArray::from(keep))?
        };
        // A failed aggregate reports its error when awaited; the rows still get written.
        if let Some(tx) = &agg_tx
            && tx.send(b).await.is_err()
        {
            agg_tx = None;
        }
    }
    drop(agg_tx);
    let partial = match agg_task {
        Some(t) => Some(t.await.map_err(|source| Error::Task {
            what: "the aggregate task",
            source,
        })??),
        None => None,
    };
    Ok((writer, partial, encode))
}

/// Writes the chunk's rejects file (JSON lines), when any record was rejected.
pub(super) async fn store_rejects(
    store: &dyn ObjectStore,
    task: &ChunkTask,
    rejects: &[Reject],
) -> Result<Option<RejectFile>> {
    if rejects.is_empty() {
        return Ok(None);
    }
    let key = layout::rejects(&task.job_id, &task.chunk.id);
    let mut body = Vec::new();
    for r in rejects {
        serde_json::to_writer(&mut body, r).map_err(|source| Error::Serialize {
            what: "reject",
            source,
        })?;
        body.push(b'\n');
    }
    store.put(&key, body.into()).await?;
    Ok(Some(RejectFile {
        key,
        records: rejects.len() as u64,
    }))
}

/// The reject of a transformed row whose partition value cannot be a key. The SQL may
/// join, aggregate or drop rows, so an output row is not traced back to one record:
/// `object` names the chunk's object (its first, and how many more, for a packed chunk)
/// and `raw` is the row as the SQL produced it.
pub(super) fn partition_reject(
    chunk: &crate::plan::Chunk,
    r: crate::write::PartitionReject,
) -> Reject {
    let mut keys: Vec<&str> = chunk.pieces.iter().map(|p| p.key()).collect();
    keys.dedup();
    let object = match keys.as_slice() {
        [] => String::new(),
        [one] => (*one).to_string(),
        [first, rest @ ..] => format!(
            "{first} (and {} more objects of chunk {})",
            rest.len(),
            chunk.id
        ),
    };
    Reject {
        rule: "partition".into(),
        column: Some(r.column),
        message: r.message,
        object,
        byte_offset: None,
        decompressed_offset: None,
        line: None,
        row: None,
        raw: r.raw,
    }
}

/// Rejected records per rule.
pub(super) fn rule_counts(rejects: &[Reject]) -> std::collections::BTreeMap<String, u64> {
    rejects
        .iter()
        .fold(std::collections::BTreeMap::new(), |mut m, r| {
            *m.entry(r.rule.clone()).or_insert(0) += 1;
            m
        })
}
