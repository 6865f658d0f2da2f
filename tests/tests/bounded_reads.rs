//! Memory and reads stay bounded whatever the input's shape: a gzip object whose
//! decompressed size dwarfs the worker's memory, records far over `input.max_record_size`,
//! ranges that start inside a huge record. Peak memory is measured on the real `fanout`
//! process (its maximum resident set, as the kernel reports it to the parent).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fanout::env::Env;
use fanout::job::{Manifest, chunk_records};
use fanout::metrics::MemoryMetrics;
use fanout::runner::{RunOptions, Silent, run_local};
use fanout::spec::JobSpec;
use fanout::store::{FsStore, ObjectStore};
use fanout::transform::Reject;

/// What the issue promises a worker stays under, whatever the input.
const WORKER_MEMORY_BYTES: u64 = 256 * 1024 * 1024;

fn spec_text(root: &Path, extra_input: &str, target: &str) -> String {
    let r = root.display();
    format!(
        r#"
name: bounded
work: {r}/work/
input:
  location: {r}/in/
  format: csv
{extra_input}
  schema:
    - {{ name: id, type: int64 }}
    - {{ name: name, type: utf8 }}
chunking: {{ target_size: {target} }}
transform:
  sql: SELECT id, name FROM input WHERE id % 1000 = 0
output: {{ location: {r}/out/ }}
rejects: {{ location: {r}/rejects/, max_ratio: 0.5 }}
queue: {{ max_receive_count: 1 }}
"#
    )
}

fn rows(first: u64, n: u64) -> String {
    (first..first + n)
        .map(|i| format!("{i},name-{i}\n"))
        .collect()
}

async fn run(spec: &JobSpec) -> Manifest {
    let env = Env::embedded(Arc::new(MemoryMetrics::new()));
    let opts = RunOptions {
        workers: 2,
        retry_backoff: |_| Duration::from_millis(10),
        ..Default::default()
    };
    run_local(&env, spec, &opts, Arc::new(Silent))
        .await
        .unwrap()
        .result
        .unwrap()
}

fn rejects(root: &Path, m: &Manifest) -> Vec<Reject> {
    let mut all: Vec<Reject> = m
        .rejects
        .iter()
        .flat_map(|r| {
            std::fs::read_to_string(root.join("rejects").join(&r.key))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort_by_key(|r| r.byte_offset);
    all
}

#[tokio::test]
async fn records_over_the_limit_are_rejected_with_a_kib_and_no_chunk_reads_twice_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    // 6 MiB and 3 MiB records (no newline in them) among ordinary ones, with 1 MiB chunks
    // and a 1 MiB limit: ranges start inside them, and one runs to the object's end.
    let mut text = format!("id,name\n{}", rows(1, 1000));
    let first_long = text.len() as u64;
    text.push_str(&format!("1001,{}\n", "y".repeat(6 << 20)));
    text.push_str(&rows(1002, 1000));
    let second_long = text.len() as u64;
    text.push_str(&format!("2002,{}", "z".repeat(3 << 20)));
    std::fs::write(root.join("in/a.csv"), &text).unwrap();
    let spec = JobSpec::parse(
        "b.yaml",
        &spec_text(root, "  max_record_size: 1MiB", "1MiB"),
    )
    .unwrap();
    let m = run(&spec).await;
    assert_eq!(m.counts.read, 2002);
    assert_eq!(m.counts.valid, 2000);
    let rj = rejects(root, &m);
    assert_eq!(rj.len(), 2);
    for (r, at) in rj.iter().zip([first_long, second_long]) {
        assert_eq!(r.rule, "max_record_size");
        assert_eq!(r.byte_offset, Some(at));
        assert_eq!(r.raw.len(), 1024, "only the first KiB is kept");
        assert!(r.message.contains("1048576 bytes"), "{}", r.message);
    }
    // The first lies in the object's first chunk, which counts its lines as it reads.
    assert_eq!(rj[0].line, Some(1002));
    let store: Arc<dyn ObjectStore> = Arc::new(FsStore::new(root.join("work")));
    let records = chunk_records(&store, &m.job_id).await.unwrap();
    assert!(records.len() >= 10);
    for c in &records {
        assert!(c.range_bytes > 0);
        // Its range, the byte before it, and at most a record (1 MiB here) past its end.
        assert!(
            c.bytes_read <= c.range_bytes + 1 + (1 << 20) + 1,
            "chunk {} fetched {} bytes for a range of {}",
            c.index,
            c.bytes_read,
            c.range_bytes
        );
    }
}

/// Runs `fanout run SPEC` and returns its peak resident set in bytes, measured by the
/// parent (Python's `resource`, i.e. the kernel's `ru_maxrss` of the waited child).
fn peak_rss_of_run(spec: &Path) -> u64 {
    let script = r#"
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(p.stdout + p.stderr)
if p.returncode != 0:
    sys.exit(p.returncode)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"#;
    let out = Command::new(common::python())
        .arg("-c")
        .arg(script)
        .arg(common::fanout_bin())
        .args(["run", "--workers", "1"])
        .arg(spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fanout run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_gzip_object_and_a_huge_record_stay_in_a_workers_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    // 150 MB of rows decompressed from one small gzip object, and one 150 MB field: each
    // was read whole before (the first alone held about twice its decompressed size).
    let make = r#"
import gzip, sys
root = sys.argv[1]
with gzip.open(root + "/in/big.csv.gz", "wb", compresslevel=1) as f:
    f.write(b"id,name\n")
    row = b"".join(b"%d,%s\n" % (i, b"n" * 40) for i in range(10000))
    for _ in range(350):
        f.write(row)
with open(root + "/in/huge.csv", "wb") as f:
    f.write(b"id,name\n1,before\n2,")
    chunk = b"w" * (1 << 20)
    for _ in range(150):
        f.write(chunk)
    f.write(b"\n3,after\n")
"#;
    let out = Command::new(common::python())
        .args(["-c", make])
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = root.join("spec.yaml");
    std::fs::write(&spec, spec_text(root, "", "64MiB")).unwrap();
    let peak = peak_rss_of_run(&spec);
    println!("peak RSS {} MiB", peak >> 20);
    assert!(
        peak < WORKER_MEMORY_BYTES,
        "peak RSS {} MiB over the 256 MiB a worker is promised",
        peak >> 20
    );
    let m: Manifest = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(root.join("work/jobs"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path()
                .join("_manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(m.counts.read, 3_500_000 + 3);
    assert_eq!(m.counts.rejected, 1);
    assert_eq!(m.reject_rules.get("max_record_size"), Some(&1));
}
