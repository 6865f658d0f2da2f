//! The job's merge of partial aggregates in bounded memory: each chunk's partial becomes a
//! run file on local disk, sorted by group key, and runs are merged k ways at a time,
//! streaming, into one sorted run of the job's groups.
//!
//! A run is zstd-compressed JSON lines, one [`Group`] a line. Memory is one read buffer and
//! one group per open run ([`DEFAULT_MERGE_FAN_IN`] runs at most), whatever the number of
//! groups; more runs than that are merged in passes through intermediate runs.
//!
//! The merge is deterministic: groups of equal keys are combined in the order of the runs
//! given (the reducer gives them in chunk order), and passes merge consecutive runs, so
//! float sums are added in the same order whatever order the chunks finished in.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Group, key_cmp, merge_group};
use crate::spec::AggregateSpec;
use crate::{Error, Result};

/// Runs merged at once: each open run holds a read buffer and a zstd window (about 1 MiB
/// together), so this bounds the merge's memory; more runs are merged in passes.
pub const DEFAULT_MERGE_FAN_IN: usize = 32;

/// zstd level of run files: fast, they are read once or twice and deleted.
const RUN_ZSTD_LEVEL: i32 = 1;

/// One sorted run file of groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Where it is.
    pub path: PathBuf,
    /// Groups in it.
    pub groups: u64,
    /// Per measure, the largest magnitude of an exact integer state in it
    /// ([`super::magnitudes`]).
    pub magnitudes: Vec<u128>,
}

fn io_error(context: String, source: std::io::Error) -> Error {
    Error::Staging { context, source }
}

/// Writes groups, in key order, to a run file.
pub struct RunWriter {
    out: zstd::Encoder<'static, BufWriter<File>>,
    path: PathBuf,
    groups: u64,
    magnitudes: Vec<u128>,
    last: Option<Vec<super::Scalar>>,
}

impl RunWriter {
    /// Creates the run file at `path`.
    pub fn create(path: &Path) -> Result<RunWriter> {
        let file = File::create(path)
            .map_err(|e| io_error(format!("creating the run {}", path.display()), e))?;
        let out = zstd::Encoder::new(BufWriter::new(file), RUN_ZSTD_LEVEL)
            .map_err(|e| io_error(format!("starting the run {}", path.display()), e))?;
        Ok(RunWriter {
            out,
            path: path.to_path_buf(),
            groups: 0,
            magnitudes: Vec::new(),
            last: None,
        })
    }

    /// Appends a group; its key must come after the previous one's.
    pub fn push(&mut self, g: &Group) -> Result<()> {
        if let Some(last) = &self.last
            && key_cmp(last, &g.key) != Ordering::Less
        {
            return Err(Error::Transform {
                message: format!(
                    "run {}: group {:?} does not come after {last:?}",
                    self.path.display(),
                    g.key
                ),
            });
        }
        serde_json::to_writer(&mut self.out, g).map_err(|source| Error::Serialize {
            what: "aggregate group",
            source,
        })?;
        self.out
            .write_all(b"\n")
            .map_err(|e| io_error(format!("writing the run {}", self.path.display()), e))?;
        self.groups += 1;
        super::magnitudes(&mut self.magnitudes, g);
        self.last = Some(g.key.clone());
        Ok(())
    }

    /// Finishes the file.
    pub fn finish(self) -> Result<Run> {
        let context = || format!("finishing the run {}", self.path.display());
        let mut buffered = self.out.finish().map_err(|e| io_error(context(), e))?;
        buffered.flush().map_err(|e| io_error(context(), e))?;
        Ok(Run {
            path: self.path,
            groups: self.groups,
            magnitudes: self.magnitudes,
        })
    }
}

/// Writes a partial's groups as a run at `path`, sorting them first when they are not
/// (a worker sorts its partial; an older or foreign record may not have) and combining
/// groups of equal keys.
pub fn write_run(spec: &AggregateSpec, path: &Path, mut groups: Vec<Group>) -> Result<Run> {
    if !groups.is_sorted_by(|a, b| key_cmp(&a.key, &b.key) != Ordering::Greater) {
        groups.sort_by(|a, b| key_cmp(&a.key, &b.key));
    }
    let mut w = RunWriter::create(path)?;
    let mut pending: Option<Group> = None;
    for g in groups {
        match &mut pending {
            Some(p) if key_cmp(&p.key, &g.key) == Ordering::Equal => merge_group(spec, p, &g)?,
            _ => {
                super::check_measures(spec, &g)?;
                if let Some(done) = pending.replace(g) {
                    w.push(&done)?;
                }
            }
        }
    }
    if let Some(done) = pending {
        w.push(&done)?;
    }
    w.finish()
}

type Lines = serde_json::StreamDeserializer<
    'static,
    serde_json::de::IoRead<BufReader<zstd::Decoder<'static, BufReader<File>>>>,
    Group,
>;

/// Reads a run's groups in order.
struct RunReader {
    lines: Lines,
    path: PathBuf,
}

impl RunReader {
    fn open(run: &Run) -> Result<RunReader> {
        let context = || format!("opening the run {}", run.path.display());
        let file = File::open(&run.path).map_err(|e| io_error(context(), e))?;
        let decoder = zstd::Decoder::new(file).map_err(|e| io_error(context(), e))?;
        let lines = serde_json::Deserializer::from_reader(BufReader::new(decoder)).into_iter();
        Ok(RunReader {
            lines,
            path: run.path.clone(),
        })
    }

    fn next_group(&mut self) -> Result<Option<Group>> {
        match self.lines.next() {
            None => Ok(None),
            Some(Ok(g)) => Ok(Some(g)),
            Some(Err(e)) => Err(Error::Transform {
                message: format!("reading the run {}: {e}", self.path.display()),
            }),
        }
    }
}

/// A run's current group in the merge heap: the smallest key first, then the earliest run.
struct Head {
    group: Group,
    run: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` pops the greatest.
        key_cmp(&other.group.key, &self.group.key).then(other.run.cmp(&self.run))
    }
}

/// Merges `runs` (at most a fan-in's worth) into `emit`, one group per key, in key order.
fn merge_into(
    spec: &AggregateSpec,
    runs: &[Run],
    emit: &mut dyn FnMut(Group) -> Result<()>,
) -> Result<()> {
    let mut readers = runs
        .iter()
        .map(RunReader::open)
        .collect::<Result<Vec<_>>>()?;
    let mut heap = BinaryHeap::with_capacity(readers.len());
    for (run, r) in readers.iter_mut().enumerate() {
        if let Some(group) = r.next_group()? {
            heap.push(Head { group, run });
        }
    }
    let mut current: Option<Group> = None;
    while let Some(Head { group, run }) = heap.pop() {
        if let Some(next) = readers[run].next_group()? {
            heap.push(Head { group: next, run });
        }
        match &mut current {
            Some(c) if key_cmp(&c.key, &group.key) == Ordering::Equal => {
                merge_group(spec, c, &group)?
            }
            _ => {
                super::check_measures(spec, &group)?;
                if let Some(done) = current.replace(group) {
                    emit(done)?;
                }
            }
        }
    }
    if let Some(done) = current {
        emit(done)?;
    }
    Ok(())
}

/// Merges every run into `emit`, in key order, exactly: in passes of `fan_in` consecutive
/// runs (intermediate runs written in `dir`) until one pass is left. Runs are deleted once
/// merged.
pub fn merge_runs(
    spec: &AggregateSpec,
    mut runs: Vec<Run>,
    dir: &Path,
    fan_in: usize,
    emit: &mut dyn FnMut(Group) -> Result<()>,
) -> Result<()> {
    let fan_in = fan_in.max(2);
    let mut pass = 0;
    while runs.len() > fan_in {
        pass += 1;
        let mut next = Vec::with_capacity(runs.len().div_ceil(fan_in));
        for (i, batch) in runs.chunks(fan_in).enumerate() {
            let mut w = RunWriter::create(&dir.join(format!("pass{pass}-{i}.run")))?;
            merge_into(spec, batch, &mut |g| w.push(&g))?;
            next.push(w.finish()?);
            remove(batch);
        }
        runs = next;
    }
    merge_into(spec, &runs, emit)?;
    remove(&runs);
    Ok(())
}

/// Deletes merged runs; a file left behind goes with the temporary folder.
fn remove(runs: &[Run]) {
    for r in runs {
        let _ = std::fs::remove_file(&r.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Partial, Scalar, State, merge};
    use crate::spec::{AggFn, Measure};

    fn spec() -> AggregateSpec {
        AggregateSpec {
            group_by: vec!["k".into()],
            measures: vec![
                Measure {
                    name: "n".into(),
                    function: AggFn::Count,
                    column: None,
                },
                Measure {
                    name: "s".into(),
                    function: AggFn::Sum,
                    column: Some("v".into()),
                },
            ],
        }
    }

    fn group(k: i64, n: u64, s: i64) -> Group {
        Group {
            key: vec![Scalar::Int(k.to_string())],
            states: vec![State::Count(n), State::Value(Scalar::Int(s.to_string()))],
        }
    }

    /// Partials of overlapping key ranges, unsorted, some with a key twice.
    fn partials() -> Vec<Partial> {
        (0..7i64)
            .map(|c| Partial {
                groups: (0..50)
                    .map(|i| group((i * (c + 1)) % 61, 1 + c as u64, i - c))
                    .collect(),
            })
            .collect()
    }

    fn merged_by_runs(fan_in: usize) -> Vec<Group> {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs: Vec<Run> = partials()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                write_run(&spec(), &dir.path().join(format!("{i}.run")), p.groups).expect("run")
            })
            .collect();
        let mut out = Vec::new();
        merge_runs(&spec(), runs, dir.path(), fan_in, &mut |g| {
            out.push(g);
            Ok(())
        })
        .expect("merge");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert!(left.is_empty(), "runs left behind: {left:?}");
        out
    }

    #[test]
    fn runs_merge_to_the_in_memory_merge_in_one_pass_or_several() {
        let expected = merge(&spec(), partials()).expect("merge").groups;
        assert_eq!(merged_by_runs(DEFAULT_MERGE_FAN_IN), expected);
        assert_eq!(merged_by_runs(2), expected);
        assert_eq!(merged_by_runs(3), expected);
    }

    #[test]
    fn a_run_refuses_groups_out_of_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = RunWriter::create(&dir.path().join("r")).expect("create");
        w.push(&group(2, 1, 1)).expect("push");
        let e = w.push(&group(1, 1, 1)).expect_err("out of order");
        assert!(e.to_string().contains("does not come after"), "{e}");
    }
}
