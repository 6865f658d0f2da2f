#!/usr/bin/env python3
"""Checks the benchmark's output file figures against the files a kept run left.

    bench_files_check.py BENCH.json WORK_DIR

For every run of every section in BENCH.json (written by `bench/run --json ... --keep-outputs
--work-dir WORK_DIR`), counts the `.parquet` files under WORK_DIR/<run label>/out (hidden
and `_` folders left out, as the harness does) and takes the median of their sizes here;
the run's `files` and `median_file_bytes` must be these. Exit 0 when all agree, 1 with the
differences listed.
"""
import json
import statistics
import sys
from pathlib import Path


def on_disk(out: Path) -> list[int]:
    return sorted(
        f.stat().st_size
        for f in out.rglob("*.parquet")
        if not any(p.startswith((".", "_")) for p in f.relative_to(out).parts)
    )


def main() -> int:
    record = json.loads(Path(sys.argv[1]).read_text())
    work = Path(sys.argv[2])
    problems, checked = [], 0
    for section in record.get("sections", []):
        for engine in section["engines"].values():
            for run in engine["runs"]:
                if not run["ok"]:
                    continue
                sizes = on_disk(work / run["label"] / "out")
                median = float(statistics.median(sizes)) if sizes else 0.0
                if (run["files"], run["median_file_bytes"]) != (len(sizes), median):
                    problems.append(
                        f"{run['label']}: reports {run['files']} files, median "
                        f"{run['median_file_bytes']} B; on disk {len(sizes)}, median {median} B"
                    )
                checked += 1
    if not checked:
        problems.append("no run to check: was the benchmark run with --keep-outputs?")
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if not problems:
        print(f"bench_files_check: {checked} runs' file counts and median file sizes agree")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
