//! Helpers for the end-to-end tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `fanout` binary built for this test run (`cargo build --bins` builds it).
pub fn fanout_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FANOUT_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> → target/<profile>/fanout
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("fanout");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --bins`; infra/test.sh does)",
        bin.display()
    );
    bin
}

/// The test venv's Python (with pyarrow); set by infra/test.sh.
pub fn python() -> PathBuf {
    let p = std::env::var("FANOUT_PYTHON").unwrap_or_else(|_| {
        panic!("FANOUT_PYTHON is not set: run the suite with infra/test.sh, which creates the venv with pyarrow")
    });
    PathBuf::from(p)
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a command, panicking with its output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// Every file below `dir` with its bytes, keyed by relative path.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Objects in the long-key job: as many as one chunk may pack.
pub const LONG_KEY_OBJECTS: usize = 1000;

/// Writes [`LONG_KEY_OBJECTS`] small CSV objects with 200-character keys under
/// `root/in/` and returns a job over them that packs up to 1,000 objects a chunk: packed
/// by count alone, their chunk message would be far over SQS's 256 KiB.
pub fn long_key_job(root: &Path) -> fanout::spec::JobSpec {
    for i in 0..LONG_KEY_OBJECTS {
        let p = root.join("in").join(long_key(i));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("id,v\n{i},{}\n", i * 2)).unwrap();
    }
    let r = root.display();
    let text = format!(
        "name: longkeys\nwork: {r}/work/\n\
         input: {{ location: {r}/in/, format: csv, schema: [{{name: id, type: int64}}, {{name: v, type: int64}}] }}\n\
         chunking: {{ target_size: 64MiB, max_objects_per_chunk: 1000 }}\n\
         output: {{ location: {r}/out/ }}\n\
         rejects: {{ location: {r}/rejects/ }}\n\
         aggregate: {{ group_by: [], measures: [{{name: n, fn: count}}, {{name: total, fn: sum, column: v}}] }}\n"
    );
    fanout::spec::JobSpec::parse("longkeys.yaml", &text).unwrap()
}

/// The key of object `i`: 200 characters, in a folder as S3 keys often are.
pub fn long_key(i: usize) -> String {
    let key = format!("year=2026/{i:04}-{}.csv", "k".repeat(181));
    assert_eq!(key.len(), 200);
    key
}

/// Checks the chunk messages of a planned long-key job: each fits the spec's limit,
/// all of them together would not have fitted one, and every object is in exactly one.
pub fn assert_messages_fit(
    spec: &fanout::spec::JobSpec,
    job_id: &fanout::ids::JobId,
    chunks: &[fanout::plan::Chunk],
) {
    let limit = spec.queue.max_message_bytes;
    let task = |chunk: fanout::plan::Chunk| {
        serde_json::to_string(&fanout::job::ChunkTask {
            job_id: job_id.clone(),
            work: spec.work.to_string(),
            chunk,
        })
        .unwrap()
        .len()
    };
    for c in chunks {
        let bytes = task(c.clone());
        assert!(
            bytes <= limit,
            "chunk {} is {bytes} bytes, over {limit}",
            c.id
        );
    }
    let all = fanout::plan::Chunk {
        pieces: chunks.iter().flat_map(|c| c.pieces.clone()).collect(),
        ..chunks[0].clone()
    };
    assert!(
        task(all) > limit,
        "the test needs keys that overflow one message"
    );
    let mut keys: Vec<&str> = chunks
        .iter()
        .flat_map(|c| c.pieces.iter().map(|p| p.key()))
        .collect();
    keys.sort_unstable();
    let want: Vec<String> = (0..LONG_KEY_OBJECTS).map(long_key).collect();
    assert_eq!(keys, want.iter().map(String::as_str).collect::<Vec<_>>());
}
