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
