//! Progress of a local run on stderr.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fanout::job::ChunkRecord;
use fanout::planner::PlannedJob;
use fanout::runner::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// Progress: a bar on a terminal, plain lines otherwise.
pub struct Bar {
    bar: Option<ProgressBar>,
    total: AtomicU64,
    done: AtomicU64,
    rows: AtomicU64,
}

impl Bar {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} chunks  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Bar {
            bar,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn planned(&self, job: &PlannedJob, to_run: u64) {
        self.total.store(to_run, Ordering::Relaxed);
        let skipped = job.summary.chunks - to_run;
        let note = if skipped > 0 {
            format!(" ({skipped} already committed)")
        } else {
            String::new()
        };
        match &self.bar {
            Some(b) => {
                b.set_length(to_run);
                b.println(format!(
                    "planned {} chunks over {} objects{note}",
                    job.summary.chunks, job.summary.objects
                ));
            }
            None => eprintln!(
                "planned {} chunks over {} objects{note}",
                job.summary.chunks, job.summary.objects
            ),
        }
    }

    fn compacting(&self, summary: &fanout::job::compaction::CompactionSummary, sent: u64) {
        let line = format!(
            "compacting: {} bins merge {} chunk files ({} queued now), {} kept as they are",
            summary.bins, summary.merged_files, sent, summary.kept_files
        );
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn committed(&self, r: &ChunkRecord) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let rows = self.rows.fetch_add(r.counts.read, Ordering::Relaxed) + r.counts.read;
        let total = self.total.load(Ordering::Relaxed);
        match &self.bar {
            Some(b) => {
                b.inc(1);
                b.set_message(format!("{rows} rows"));
            }
            None => {
                let step = (total / 10).max(1);
                if done.is_multiple_of(step) || done == total {
                    eprintln!("committed {done}/{total} chunks, {rows} rows read");
                }
            }
        }
    }

    fn failed(&self, chunk_id: &str, attempt: u32, error: &fanout::Error, last_attempt: bool) {
        let what = if last_attempt {
            "failed for good"
        } else {
            "failed, will retry"
        };
        let line = format!("chunk {chunk_id} attempt {attempt} {what}: {error}");
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}
