"""fanout's benchmark harness (BENCHMARKS.md says what it measures and why).

Run it through `bench/run`, which provides the Python venv with the peers' engines.

Sections, each optional but the inputs' (the CSV job alone by default):

  inputs      the full job of bench/lineitem.yaml (typed read, two rules, SQL filter and
              derived columns, ship_year-partitioned zstd(1) Parquet, TPC-H Q1 partial
              aggregates and their reduce) in fanout and, the same job, in DuckDB, Polars,
              pyarrow, DuckDB and Polars without reject accounting (`-noreject`) and
              (--spark, CSV only) PySpark local mode: one section per input shape (--shapes;
              --formats: the CSV, JSON lines, ONE gzip object, one zstd object, a Parquet
              dataset re-partitioned, bench/lineitem-parquet.yaml) and thread count
              (--threads 1,2), each --rounds times interleaved: CPU, wall and peak RSS side
              by side (medians, ranges), and the targets (fanout's CPU <= best peer / 1.3,
              wall below every peer, peak RSS <= 256 MiB) met or missed by what factor; the
              results must agree (rows, rejects where counted, partitions, Q1), across
              shapes too, else the run fails. The derived inputs are made once, untimed, in
              their own folder beside the data (data-sf<SF>-<shape>/)
  --plain     plain CSV -> zstd(1) Parquet (same schema, no rules, SQL, partitions or
              aggregate): fanout, DuckDB, pyarrow, at each thread count
  --memory    fanout alone, 1 worker, chunk target_size 64MiB / 256MiB / 1GiB over SF 2
              (> 1 GiB of CSV), and the same CSV as one gzip object: peak RSS, which should
              stay flat; then a CSV whose one row holds a 300 MB l_comment among 20,000
              ordinary rows: fanout (1 worker) must reject it alone (rule max_record_size)
              within 256 MiB; DuckDB's and Polars' outcome and figures are recorded
  --scaling   fanout with 1 and 2 workers: speed-up (the CSV sections' runs when they ran)
  --compaction  the CSV job in fanout at the largest --threads count, chunk target_size 64MiB
              and 8MiB (4MiB and 512KiB at --tiny), each with output.target_file_size off
              and at its default, --rounds times interleaved: CPU, wall, peak RSS, files and
              the stage's work, its share of the job's CPU, files before -> after; on and
              off must write the same rows and Q1; then the files DuckDB, Polars (and with
              --spark Spark) write for the same job (the CSV section's runs when it ran)
  --cold-start  planner / worker / reducer release binaries against a local stub of the
              Lambda Runtime API: process spawn -> first `GET .../invocation/next`
  --synthetic `fanout bench-plan --objects 1000000`, `fanout bench-reduce --records 100000`

Every engine runs as its own process, measured by os.wait4: wall time, CPU (user + sys),
peak RSS (ru_maxrss). The input is read once before each run (warm page cache for all) and
the file system synced; data generation and checks are not timed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import importlib.util
import json
import os
import platform
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH / "peers"))
from common import MEASURES  # noqa: E402  (peers/ is the single source of the Q1 names)
from figures import (  # noqa: E402
    SMALL_FILE_BYTES,
    EngineFigures,
    Targets,
    f1,
    f2,
    file_mb,
    ratio,
    section_table,
    summary_table,
    table,
    targets,
)
from inputs import HUGE_ROWS_AROUND, Dataset, derived  # noqa: E402

import compaction as compact  # noqa: E402  (the --compaction section's figures)

CACHE = Path(os.environ.get("FANOUT_CACHE", Path.home() / ".cache" / "fanout"))
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "fanout-target"))
# fanout's job spec per input format (the CSV one also reads JSON lines: its input block
# is rewritten for them).
SPEC_TEMPLATES = {"csv": BENCH / "lineitem.yaml", "parquet": BENCH / "lineitem-parquet.yaml"}

# `<peer>-noreject` runs bench/peers/<peer>_job.py --no-rejects: the job without reject
# accounting (pyarrow's count is free, so it has no such variant).
ENGINES = (
    "fanout",
    "duckdb",
    "duckdb-noreject",
    "polars",
    "polars-noreject",
    "pyarrow",
    "spark",
)
DEFAULT_ENGINES = tuple(e for e in ENGINES if e != "spark")
PLAIN_ENGINES = ("fanout", "duckdb", "pyarrow")
# The engines of the non-CSV inputs (Spark runs the CSV job only).
SHAPE_ENGINES = DEFAULT_ENGINES
# The job's input shapes, CSV first; bench/inputs.py makes the others from lineitem.csv.
SHAPES = ("csv", "jsonl", "csv.gz", "csv.zst", "parquet")
DEFAULT_THREADS = "1,2"
# The --memory section's huge record: its l_comment's bytes (over input.max_record_size,
# 64 MiB by default, at --tiny too), and the peak RSS fanout must stay under.
HUGE_RECORD_BYTES = 300_000_000
TINY_HUGE_RECORD_BYTES = 80_000_000
MEMORY_LIMIT_BYTES = 256 * (1 << 20)
TINY_SCALE = 0.01
MEMORY_SCALE = 2
MEMORY_CHUNK_SIZES = ("64MiB", "256MiB", "1GiB")
SPARK_DRIVER_MEMORY = "4g"
COLD_START_RUNS = 20
COLD_START_TIMEOUT_S = 15.0
FUNCTIONS = ("planner", "worker", "reducer")
# (subcommand, flag, n, target seconds) — the targets.
SYNTHETIC = (
    ("bench-plan", "--objects", 1_000_000, 2.0),
    ("bench-reduce", "--records", 100_000, 5.0),
)
SYNTHETIC_RUNS = 3
MB = 1e6
MIB = 1 << 20


# ---------------------------------------------------------------- measuring a process


@dataclass
class Usage:
    """What os.wait4 tells about one finished process (its waited-for children included)."""

    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_bytes: int
    exit_code: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


# A measured command is started by this small launcher, not by the harness: Linux reports a
# child's peak RSS as at least that of the process it was forked from (the forked memory
# counts until exec), and the harness holds pyarrow and, after making a derived input,
# much more. The launcher (python -S, os and sys only: about 10 MiB) starts the command,
# waits for it and writes what os.wait4 said, one line of numbers, to $FANOUT_BENCH_USAGE.
LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(os.environ["FANOUT_BENCH_USAGE"], "w") as f:
    f.write(f"{wall} {ru.ru_utime} {ru.ru_stime} {ru.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def run_measured(
    cmd: list[str], *, env: dict[str, str], log_dir: Path, name: str, cwd: Path | None = None
) -> Usage:
    """Runs `cmd` to completion, stdout and stderr to `<log_dir>/<name>.{out,err}`, through
    LAUNCHER: its wall time, CPU and peak RSS as the launcher's os.wait4 saw them."""
    log_dir.mkdir(parents=True, exist_ok=True)
    usage_file = log_dir / f"{name}.usage"
    usage_file.unlink(missing_ok=True)
    launcher = [sys.executable, "-S", "-c", LAUNCHER, *cmd]
    env = {**env, "FANOUT_BENCH_USAGE": str(usage_file)}
    with open(log_dir / f"{name}.out", "wb") as out, open(log_dir / f"{name}.err", "wb") as err:
        proc = subprocess.Popen(launcher, stdout=out, stderr=err, env=env, cwd=cwd)
        try:
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    try:
        wall, user, system, maxrss_kib, code = usage_file.read_text().split()
    except (OSError, ValueError):
        # The launcher itself failed (the command could not be started): its exit code.
        return Usage(0.0, 0.0, 0.0, 0, proc.returncode or 1)
    return Usage(float(wall), float(user), float(system), int(maxrss_kib) * 1024, int(code))


def warm_cache(data: Dataset) -> None:
    """Reads the input once, so every engine starts with it in the page cache."""
    for path in data.files:
        with open(path, "rb", buffering=0) as f:
            while f.read(8 * MIB):
                pass


def settle() -> None:
    """Writes back the previous run's output before the next run starts."""
    os.sync()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data


def ensure_data(scale: float, data_dir: Path | None) -> Dataset:
    """TPC-H lineitem at `scale` as <data_dir>/lineitem.csv, generated (untimed) if missing."""
    folder = data_dir or CACHE / "bench" / f"data-sf{scale:g}"
    csv = folder / "lineitem.csv"
    if not csv.exists():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        tpchgen = Path(sys.executable).with_name("tpchgen-cli")
        log(f"generating TPC-H lineitem SF {scale:g} into {folder}")
        subprocess.run(
            [
                str(tpchgen),
                "csv",
                "-s",
                f"{scale:g}",
                "--tables",
                "lineitem",
                "--output-dir",
                str(partial),
            ],
            check=True,
        )
        folder.mkdir(parents=True, exist_ok=True)
        (partial / "lineitem.csv").rename(csv)
        shutil.rmtree(partial)
    others = sorted(p.name for p in folder.glob("*.csv") if p.name != "lineitem.csv")
    if others:
        sys.exit(
            f"bench: {folder} holds other CSV files ({', '.join(others)}); fanout would "
            "read them too: give a folder holding only lineitem.csv"
        )
    return Dataset(scale, csv, csv.stat().st_size)


# ---------------------------------------------------------------- fanout's job spec


def _top_level_blocks(text: str) -> list[tuple[str | None, str]]:
    """The spec split into top-level YAML entries (key, text); leading comments have key None."""
    blocks: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines(keepends=True):
        m = re.match(r"([A-Za-z_][\w-]*):", line)
        if m:
            blocks.append((m.group(1), [line]))
        else:
            blocks[-1][1].append(line)
    return [(k, "".join(lines)) for k, lines in blocks]


def _set_location(block: str, path: Path) -> str:
    value = json.dumps(f"{path}/")  # a YAML double-quoted scalar
    new, n = re.subn(r"(\blocation:[ \t]*)([^\s,}]+)", lambda m: m.group(1) + value, block, count=1)
    if n != 1:
        raise ValueError(f"no `location:` in spec block:\n{block}")
    return new


def _set_input_file(block: str, data: Dataset) -> str:
    """The input block reading `data`: `include` its file's name (or its dataset's pattern),
    `format` its format (compression is fanout's `auto`, by suffix), the `csv:` options
    only for CSV."""
    block, n = re.subn(
        r"^(\s+include:).*$", lambda m: f"{m.group(1)} [{json.dumps(data.include)}]", block,
        count=1, flags=re.M,
    )
    block, k = re.subn(r"^(\s+format:).*$", rf"\1 {data.format}", block, count=1, flags=re.M)
    if n != 1 or k != 1:
        raise ValueError(f"no `include:` or `format:` in the spec's input block:\n{block}")
    if data.format != "csv":
        block = re.sub(r"^\s+csv:.*\n", "", block, flags=re.M)
    return block


def _set_output_option(block: str, key: str, value: str) -> str:
    """The output block with `key: value` as its first option (an existing `key:` line
    dropped), indented as the block's other options."""
    lines = block.splitlines(keepends=True)
    if not re.fullmatch(r"output:\s*(#.*)?\n?", lines[0]):
        raise ValueError(f"the spec's output block is not a block mapping:\n{block}")
    options = [x for x in lines[1:] if x.strip() and not x.lstrip().startswith("#")]
    if not options:
        raise ValueError(f"the spec's output block has no options:\n{block}")
    indent = options[0][: len(options[0]) - len(options[0].lstrip())]
    kept = [x for x in lines[1:] if not re.match(rf"\s+{key}:", x)]
    return "".join([lines[0], f"{indent}{key}: {value}\n", *kept])


def render_spec(
    *,
    data: Dataset,
    run_dir: Path,
    plain: bool = False,
    target_size: str | None = None,
    target_file_size: str | None = None,
) -> Path:
    """bench/lineitem.yaml with absolute locations under `run_dir` (the template's exact
    `location:` values replaced, never a textual search of paths), written to run_dir/job.yaml.
    The input is the folder of `data`'s file, that file alone, in its format.

    `plain` keeps the name (suffixed), schema and output but drops the rules (and the
    schema's `nullable: false`), the SQL, the partitioning and the aggregate.
    `target_size` sets `chunking.target_size`, `target_file_size` sets
    `output.target_file_size` (`off` turns the compaction stage off); None leaves the
    template's (or fanout's default)."""
    out: list[str] = []
    seen: set[str] = set()
    template = SPEC_TEMPLATES.get(data.format, SPEC_TEMPLATES["csv"])
    for key, block in _top_level_blocks(template.read_text()):
        if key == "name" and plain:
            block = re.sub(r"^name:\s*(\S+)", r"name: \1-plain", block)
        elif key == "work":
            block = f"work: {json.dumps(str(run_dir / 'work') + '/')}\n"
        elif key == "input":
            block = _set_input_file(_set_location(block, data.folder), data)
            if plain:
                block = block.replace(", nullable: false", "")
        elif key == "output":
            block = _set_location(block, run_dir / "out")
            if target_file_size:
                block = _set_output_option(block, "target_file_size", target_file_size)
            if plain:
                block = "".join(
                    line
                    for line in block.splitlines(keepends=True)
                    if not re.match(r"\s*partition_by:", line)
                )
        elif key == "rejects":
            block = _set_location(block, run_dir / "rejects")
        elif key == "chunking" and target_size:
            block = f"chunking: {{ target_size: {target_size} }}\n"
        elif key in ("validate", "transform", "aggregate") and plain:
            continue
        if key:
            seen.add(key)
        out.append(block)
    missing = {"work", "input", "output", "rejects"} - seen
    if missing:
        raise ValueError(f"{template}: no {', '.join(sorted(missing))}")
    if target_size and "chunking" not in seen:
        out.append(f"chunking: {{ target_size: {target_size} }}\n")
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = run_dir / "job.yaml"
    spec.write_text("".join(out))
    return spec


# ---------------------------------------------------------------- one engine's run


@dataclass
class EngineRun:
    """One engine's run of the job (or the plain path) and what it produced."""

    engine: str
    threads: int
    label: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    peak_rss_bytes: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    files: int = 0
    # Each output file's bytes, sorted (kept out of the JSON record: its figures go there).
    file_bytes: list[int] = field(default_factory=list, repr=False)
    rows_in_files: int = 0
    partition_rows: dict[str, int] = field(default_factory=dict)
    rows_written: int | None = None
    rows_rejected: int | None = None
    reject_rules: dict[str, int] = field(default_factory=dict)
    chunks: int | None = None
    # fanout's manifest's `compaction` object (None when the stage was off).
    compaction: dict[str, Any] | None = None
    q1: list[dict[str, Any]] | None = None
    version: str = ""
    engine_threads: int | None = None
    error: str | None = None
    logs: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def mb_per_core_s(self) -> float:
        return self.input_bytes / MB / self.cpu_s if self.cpu_s else 0.0

    @property
    def median_file_bytes(self) -> float:
        """The median output file's bytes (the mean of the middle two for an even count, as
        `fanout inspect` and the report take it), 0 without files."""
        return float(statistics.median(self.file_bytes)) if self.file_bytes else 0.0

    @property
    def small_files(self) -> int:
        """Output files under 1 MiB (fanout's `SMALL_FILE_BYTES`)."""
        return sum(1 for b in self.file_bytes if b < SMALL_FILE_BYTES)


def scan_output(run: EngineRun, out: Path) -> None:
    """Output bytes and rows from the Parquet files themselves (footers only)."""
    for f in sorted(out.rglob("*.parquet")):
        if any(part.startswith((".", "_")) for part in f.relative_to(out).parts):
            continue
        meta = pq.read_metadata(f)
        size = f.stat().st_size
        run.files += 1
        run.file_bytes.append(size)
        run.output_bytes += size
        run.rows_in_files += meta.num_rows
        partition = "/".join(p for p in f.relative_to(out).parent.parts) or "."
        run.partition_rows[partition] = run.partition_rows.get(partition, 0) + meta.num_rows
    run.file_bytes.sort()


class Runner:
    """Runs engines on a dataset inside the work folder."""

    def __init__(self, args: argparse.Namespace, work: Path, fanout_bin: Path) -> None:
        self.args = args
        self.work = work
        self.fanout_bin = fanout_bin
        self.fanout_version = subprocess.run(
            [str(fanout_bin), "--version"], capture_output=True, text=True
        ).stdout.strip()

    def _fresh_dir(self, name: str) -> Path:
        d = self.work / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def _measure(
        self, run: EngineRun, cmd: list[str], env: dict[str, str], d: Path, data: Dataset
    ) -> Usage:
        warm_cache(data)
        settle()
        log(f"{run.label or run.engine}: {' '.join(cmd)}")
        usage = run_measured(cmd, env=env, log_dir=d, name="log")
        run.wall_s, run.user_s, run.sys_s = usage.wall_s, usage.user_s, usage.sys_s
        run.cpu_s, run.peak_rss_bytes = usage.cpu_s, usage.peak_rss_bytes
        run.input_bytes = data.bytes
        run.logs = str(d / "log.{out,err}")
        if usage.exit_code != 0:
            kept = "" if self.args.work_dir else " (removed at the end: keep it with --work-dir)"
            run.error = (
                f"exit code {usage.exit_code}; last lines of {d}/log.err{kept}:\n"
                f"{tail(d / 'log.err')}\n{tail(d / 'log.out', 5)}"
            )
        return usage

    def fanout(
        self,
        data: Dataset,
        threads: int,
        *,
        name: str,
        plain: bool = False,
        target_size: str | None = None,
        target_file_size: str | None = None,
    ) -> EngineRun:
        run = EngineRun(
            "fanout", threads, label=name, version=self.fanout_version, engine_threads=threads
        )
        d = self._fresh_dir(name)
        spec = render_spec(
            data=data,
            run_dir=d,
            plain=plain,
            target_size=target_size,
            target_file_size=target_file_size,
        )
        cmd = [str(self.fanout_bin), "run", "-w", str(threads), str(spec)]
        if self._measure(run, cmd, dict(os.environ), d, data).exit_code != 0:
            return run
        manifests = list((d / "work" / "jobs").glob("*/_manifest.json"))
        if len(manifests) != 1:
            run.error = f"expected one manifest under {d / 'work' / 'jobs'}, found {len(manifests)}"
            return run
        manifest = json.loads(manifests[0].read_text())
        counts = manifest["counts"]
        run.rows_written, run.rows_rejected = counts["written"], counts["rejected"]
        run.chunks = manifest.get("chunks")
        run.compaction = manifest.get("compaction")
        run.reject_rules = manifest.get("reject_rules") or {}
        aggregates = manifests[0].parent / "aggregates.json"
        if not plain:
            run.q1 = json.loads(aggregates.read_text())
        scan_output(run, d / "out")
        self._drop_outputs(d)
        return run

    def peer(
        self, engine: str, data: Dataset, threads: int, *, name: str, plain: bool = False
    ) -> EngineRun:
        run = EngineRun(engine, threads, label=name)
        d = self._fresh_dir(name)
        job_args = [
            "--input",
            str(data.path),
            "--output",
            str(d / "out"),
            "--result",
            str(d / "result.json"),
            "--threads",
            str(threads),
            "--format",
            data.format,
        ]
        job_args += ["--plain"] if plain else []
        script, _, variant = engine.partition("-")
        job_args += ["--no-rejects"] if variant == "noreject" else []
        env = dict(os.environ)
        env["POLARS_MAX_THREADS"] = str(threads)
        if engine == "spark":
            spark_home = spark_home_dir()
            env.update(
                SPARK_HOME=str(spark_home),
                PYSPARK_PYTHON=sys.executable,
                PYSPARK_DRIVER_PYTHON=sys.executable,
                SPARK_LOCAL_IP="127.0.0.1",
            )
            cmd = [
                str(spark_home / "bin" / "spark-submit"),
                "--master",
                f"local[{threads}]",
                "--driver-memory",
                SPARK_DRIVER_MEMORY,
                str(BENCH / "peers" / "spark_job.py"),
            ]
        else:
            cmd = [sys.executable, str(BENCH / "peers" / f"{script}_job.py")]
        if self._measure(run, cmd + job_args, env, d, data).exit_code != 0:
            return run
        result = json.loads((d / "result.json").read_text())
        run.version, run.engine_threads = result["version"], result["threads"]
        run.rows_written, run.rows_rejected = result["rows_written"], result["rows_rejected"]
        run.q1 = result["q1"]
        scan_output(run, d / "out")
        self._drop_outputs(d)
        return run

    def _drop_outputs(self, d: Path) -> None:
        """A run's Parquet output, once counted, is deleted (logs and results stay): every
        round of every section would otherwise hold its own copy (about 200 MB at SF 1)."""
        if not self.args.keep_outputs:
            for out in ("out", "out-rejects", "rejects", "work"):
                shutil.rmtree(d / out, ignore_errors=True)

    def engine(
        self, engine: str, data: Dataset, threads: int, *, name: str, plain: bool = False
    ) -> EngineRun:
        if engine == "fanout":
            return self.fanout(data, threads, name=name, plain=plain)
        return self.peer(engine, data, threads, name=name, plain=plain)


def spark_home_dir() -> Path:
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        sys.exit("bench: pyspark is not installed in this venv: run `bench/run --spark ...`")
    return Path(spec.origin).parent


# ---------------------------------------------------------------- checking results


def _avg_close(a: str, b: str) -> bool:
    """Within 1e-6 relative, or one unit in the last place of the less precise text
    (fanout and Spark give avg of a decimal(15,2) at scale 6, others a double)."""
    da, db = Decimal(a), Decimal(b)
    ulp = Decimal(1).scaleb(max(da.as_tuple().exponent, db.as_tuple().exponent))
    tolerance = max(max(abs(da), abs(db)) * Decimal("1e-6"), ulp)
    return abs(da - db) <= tolerance


def compare(ref: EngineRun, other: EngineRun) -> list[str]:
    """Every way `other` disagrees with `ref`, as messages."""
    problems: list[str] = []
    who = f"{other.label} vs {ref.label}"

    def differs(what: str, a: Any, b: Any) -> None:
        if a != b:
            problems.append(f"MISMATCH {who}: {what}: {other.label} {b}, {ref.label} {a}")

    differs("rows written", ref.rows_written, other.rows_written)
    differs("rows in the Parquet files", ref.rows_in_files, other.rows_in_files)
    for r in (ref, other):
        if r.rows_written != r.rows_in_files:
            problems.append(
                f"MISMATCH {r.label}: reports {r.rows_written} rows written, "
                f"its Parquet files hold {r.rows_in_files}"
            )
    if ref.rows_rejected is not None and other.rows_rejected is not None:
        differs("rows rejected", ref.rows_rejected, other.rows_rejected)
    for p in sorted(ref.partition_rows.keys() | other.partition_rows.keys()):
        differs(
            f"rows in partition {p}", ref.partition_rows.get(p, 0), other.partition_rows.get(p, 0)
        )
    if ref.q1 is None or other.q1 is None:
        return problems
    ref_groups = {(r["l_returnflag"], r["l_linestatus"]): r for r in ref.q1}
    groups = {(r["l_returnflag"], r["l_linestatus"]): r for r in other.q1}
    differs("Q1 groups", sorted(ref_groups), sorted(groups))
    for key in sorted(ref_groups.keys() & groups.keys()):
        a, b = ref_groups[key], groups[key]
        for name, (fn, _) in MEASURES.items():
            if fn == "count":
                ok = int(a[name]) == int(b[name])
            elif fn == "sum":
                ok = Decimal(str(a[name])) == Decimal(str(b[name]))
            else:
                ok = _avg_close(str(a[name]), str(b[name]))
            if not ok:
                problems.append(
                    f"MISMATCH {who}: Q1 {key[0]},{key[1]} {name}: "
                    f"{other.label} {b[name]}, {ref.label} {a[name]}"
                )
    return problems


# ---------------------------------------------------------------- printing


def engine_table(runs: list[EngineRun], ref: EngineRun | None, *, q1: bool = True) -> str:
    headers = [
        "engine",
        "threads",
        "wall s",
        "CPU s",
        "MB/s per core",
        "peak RSS MiB",
        "output MB",
        "files",
        "median file MB",
        "rows written",
    ]
    headers += ["rejected"] if q1 else []
    headers += ["wall fanout/peer", "CPU fanout/peer"]
    rows = []
    for r in runs:
        if not r.ok:
            rows.append([f"{r.label} (failed)", str(r.threads)] + ["—"] * (len(headers) - 2))
            continue
        row = [
            r.label,
            str(r.threads),
            f2(r.wall_s),
            f2(r.cpu_s),
            f1(r.mb_per_core_s),
            f"{r.peak_rss_bytes / MIB:,.0f}",
            f1(r.output_bytes / MB),
            f"{r.files:,}",
            file_mb(r.median_file_bytes),
            f"{r.rows_in_files:,}",
        ]
        row += [f"{r.rows_rejected:,}" if r.rows_rejected is not None else "—"] if q1 else []
        if ref is not None and ref.ok and r is not ref:
            row += [ratio(ref.wall_s, r.wall_s), ratio(ref.cpu_s, r.cpu_s)]
        else:
            row += ["—", "—"]
        rows.append(row)
    return table(headers, rows)


def outcome(run: EngineRun, log_err: Path) -> str:
    """What an engine did with the huge record, in a few words: for a failed run, its
    exception's line and the line after it (from its whole log)."""
    if not run.ok:
        lines = [x.strip() for x in log_err.read_text(errors="replace").splitlines() if x.strip()]
        at = next(
            (i for i, x in enumerate(lines) if re.match(r"[\w.]*(Exception|Error)\b.*: ", x)),
            None,
        )
        if at is None:
            return f"error: {(lines[-1] if lines else run.error or '?')[:200]}"
        after = [x for x in lines[at + 1 : at + 3] if not x.startswith("Original Line")]
        return "error: " + " ".join([lines[at][:200]] + [x[:120] for x in after[:1]])
    rules = ", ".join(f"{k}: {v}" for k, v in sorted(run.reject_rules.items()))
    said = f"{run.rows_in_files:,} rows written"
    if run.rows_rejected is not None:
        said += f", {run.rows_rejected:,} rejected" + (f" ({rules})" if rules else "")
    return said


def as_record(run: EngineRun) -> dict[str, Any]:
    record = {k: v for k, v in asdict(run).items() if k != "file_bytes"}
    return {
        **record,
        "ok": run.ok,
        "mb_per_core_s": run.mb_per_core_s,
        "median_file_bytes": run.median_file_bytes,
        "small_files": run.small_files,
    }


def heading(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


# ---------------------------------------------------------------- sections


class Bench:
    def __init__(self, args: argparse.Namespace, runner: Runner) -> None:
        self.args = args
        self.runner = runner
        self.problems: list[str] = []
        self.record: dict[str, Any] = {}
        # fanout's first CSV run per scale: every other shape must write the same rows.
        self.csv_refs: dict[float, EngineRun] = {}
        # The CSV sections' figures by (scale, threads), for --scaling.
        self.csv_sections: dict[tuple[float, int], list[EngineFigures]] = {}

    def fail(self, msg: str) -> None:
        self.problems.append(msg)
        print(msg, flush=True)

    def check_runs(self, runs: list[EngineRun]) -> None:
        for r in runs:
            if not r.ok:
                self.fail(f"FAILED {r.label}: {r.error}")
            elif r.engine_threads is not None and r.engine_threads != r.threads:
                print(f"note: {r.label} ran with {r.engine_threads} threads, asked {r.threads}")
        good = [r for r in runs if r.ok]
        for other in good[1:]:
            for p in compare(good[0], other):
                self.fail(p)

    def inputs(self, data: Dataset, shapes: list[str], engines: list[str]) -> None:
        """The job on each input shape at each thread count: one section each, then every
        section's targets in one table."""
        summary: list[tuple[str, int, Targets]] = []
        for shape in shapes:
            shaped = data if shape == "csv" else derived(data, shape, log)
            names = [e for e in engines if e in SHAPE_ENGINES or shape == "csv"]
            for threads in self.args.thread_list:
                met = self.section(shaped, threads, names)
                if met is not None:
                    summary.append((shape, threads, met))
        if summary:
            heading("Targets: every section (medians)")
            print(summary_table(summary))
            self.record["targets"] = [
                {"shape": sh, "threads": t, **m.record()} for sh, t, m in summary
            ]

    def section(self, shaped: Dataset, threads: int, engines: list[str]) -> Targets | None:
        """The engines' rounds on one input at one thread count, checked against each other
        (and fanout's CSV run: the same rows), printed as medians and ranges with the
        targets; returns the targets when fanout and a peer ran."""
        rounds = self.args.rounds
        what = "CSV" if shaped.shape == "csv" else shaped.shape
        spec = SPEC_TEMPLATES.get(shaped.format, SPEC_TEMPLATES["csv"]).name
        heading(
            f"{what}: bench/{spec} on {shaped.name} ({shaped.mb:,.1f} MB), "
            f"SF {shaped.scale:g}, {threads} thread{'s' if threads > 1 else ''}"
        )
        every: dict[str, list[EngineRun]] = {e: [] for e in engines}
        for i in range(rounds):
            # Rounds interleave the engines, each round starting one engine later, so a slow
            # spell of the machine, or the engine run just before, hits them alike.
            for e in engines[i % len(engines) :] + engines[: i % len(engines)]:
                name = f"{e}-{shaped.shape}-t{threads}" + (f"-r{i + 1}" if rounds > 1 else "")
                every[e].append(self.runner.engine(e, shaped, threads, name=name))
        before = len(self.problems)
        flat = sorted(
            (r for rs in every.values() for r in rs), key=lambda r: r.engine != "fanout"
        )
        self.check_runs(flat)
        ref = next((r for r in flat if r.ok), None)
        if shaped.shape == "csv" and ref is not None and ref.engine == "fanout":
            self.csv_refs[shaped.scale] = ref
        csv_ref = self.csv_refs.get(shaped.scale)
        if ref is not None and csv_ref is not None and csv_ref is not ref:
            for p in compare(csv_ref, ref):
                self.fail(p)
        figures = [EngineFigures(e, every[e]) for e in engines]
        if shaped.shape == "csv":
            self.csv_sections[(shaped.scale, threads)] = figures
        if rounds > 1:
            print(
                f"{rounds} rounds, the engines interleaved; each figure is the median of the "
                "rounds, (min–max) after it.\n"
            )
        print(section_table(figures))
        good = [r for r in flat if r.ok]
        if good and len(self.problems) == before:
            also = " and the CSV job" if csv_ref is not None and shaped.shape != "csv" else ""
            print(
                f"\nAll {len(good)} runs agree{also}: {ref.rows_in_files:,} rows written in "
                f"{len(ref.partition_rows)} partitions, rejected {ref.rows_rejected or 0:,} "
                "(where counted), Q1 sums exact, averages within 1e-6."
            )
        met = targets(figures)
        if met is not None:
            print(f"\nTargets (medians of {rounds} round{'s' if rounds > 1 else ''}):")
            print("\n".join(met.lines()))
        self.record.setdefault("sections", []).append(
            {
                "shape": shaped.shape,
                "threads": threads,
                "rounds": rounds,
                "input": {"path": str(shaped.path), "bytes": shaped.bytes},
                "engines": {
                    f.engine: {
                        "ok": f.ok,
                        **(
                            {a: f.spread(a).record() for a in ("cpu_s", "wall_s", "peak_rss_bytes")}
                            if f.ok
                            else {}
                        ),
                        "runs": [as_record(r) for r in f.runs],
                    }
                    for f in figures
                },
                "targets": met.record() if met is not None else None,
            }
        )
        return met

    def plain(self, data: Dataset, engines: list[str]) -> None:
        record = []
        for threads in self.args.thread_list:
            heading(f"Plain path: CSV -> zstd(1) Parquet, SF {data.scale:g}, {threads} threads")
            names = [e for e in PLAIN_ENGINES if e in engines]
            runs = [
                self.runner.engine(e, data, threads, name=f"{e}-plain-t{threads}", plain=True)
                for e in names
            ]
            self.check_runs(runs)
            fanout = next((r for r in runs if r.engine == "fanout"), None)
            print(engine_table(runs, fanout, q1=False))
            if fanout and fanout.ok:
                print(
                    f"\nfanout plain path: {f1(fanout.mb_per_core_s)} MB/s per core "
                    f"(STACK.md baseline, arrow-csv -> ArrowWriter on one thread: 124 MB/s)"
                )
            record += [as_record(r) for r in runs]
        self.record["plain"] = record

    def scaling(self, data: Dataset) -> None:
        """fanout -w 1 against -w 2: the CSV sections' runs with the median CPU time when
        they ran, else one run each."""
        heading(f"Scaling: fanout with 1 and 2 workers, SF {data.scale:g}")
        runs = []
        for w in (1, 2):
            figures = self.csv_sections.get((data.scale, w), [])
            done = [r for f in figures if f.engine == "fanout" and f.ok for r in f.runs]
            if done:
                run = sorted(done, key=lambda r: r.cpu_s)[len(done) // 2]
            else:
                run = self.runner.fanout(data, w, name=f"fanout-w{w}")
            run.label = f"fanout -w {w}"
            runs.append(run)
        self.check_runs(runs)
        print(engine_table(runs, None))
        if all(r.ok for r in runs):
            speedup = runs[0].wall_s / runs[1].wall_s
            print(
                f"\nspeed-up 1 -> 2 workers: {speedup:.2f}x wall "
                f"(efficiency {speedup / 2:.0%}); CPU {f2(runs[0].cpu_s)} -> {f2(runs[1].cpu_s)} s"
            )
            self.record["scaling"] = {"speedup": speedup, "runs": [as_record(r) for r in runs]}

    def compaction(self, data: Dataset) -> None:
        """The CSV job with the compaction stage off and on, per chunk size, at the largest
        thread count, `--rounds` times interleaved; then each engine's files."""
        threads = max(self.args.thread_list)
        sizes = compact.TINY_CHUNK_SIZES if self.args.tiny else compact.CHUNK_SIZES
        cfgs = compact.configs(sizes)
        rounds = self.args.rounds
        heading(
            f"Compaction: bench/lineitem.yaml on {data.name} ({data.mb:,.1f} MB), SF "
            f"{data.scale:g}, fanout -w {threads}, chunk target_size {' and '.join(sizes)}, "
            f"output.target_file_size off and {compact.DEFAULT_TARGET}"
        )
        every: dict[str, list[EngineRun]] = {c.name: [] for c in cfgs}
        for i in range(rounds):
            for c in cfgs[i % len(cfgs) :] + cfgs[: i % len(cfgs)]:
                name = c.name + (f"-r{i + 1}" if rounds > 1 else "")
                every[c.name].append(
                    self.runner.fanout(
                        data,
                        threads,
                        name=name,
                        target_size=c.chunk_size,
                        target_file_size=c.target_file_size,
                    )
                )
        before = len(self.problems)
        flat = [r for c in cfgs for r in every[c.name]]
        # Every run against the first (rows, rows per partition, Q1), and that one against
        # the CSV section's fanout run: compaction and the chunk size change files, not rows.
        self.check_runs(flat)
        csv_ref = self.csv_refs.get(data.scale)
        if csv_ref is not None and flat[0].ok:
            for p in compare(csv_ref, flat[0]):
                self.fail(p)
        for size in sizes:
            off = every[compact.Config(size, "off").name]
            on = every[compact.Config(size, "on").name]
            for a, b in zip(off, on):
                if a.ok and b.ok:
                    for p in compact.stage_problems(compact.Config(size, "on"), a, b):
                        self.fail(p)
        figures = {c.name: EngineFigures("fanout", every[c.name]) for c in cfgs}
        if rounds > 1:
            print(
                f"{rounds} rounds, the configurations interleaved; each figure is the median "
                "of the rounds, (min–max) after it.\n"
            )
        print(compact.section_table(figures, cfgs))
        costs = compact.costs(figures, sizes)
        if costs:
            print(
                "\nBefore → after, and the stage's share of the job's CPU = (CPU on − CPU "
                "off) / CPU on, on the medians:\n"
            )
            print(compact.cost_table(costs))
        good = [r for r in flat if r.ok]
        if good and len(self.problems) == before:
            also = " and the CSV section's fanout run" if csv_ref is not None else ""
            print(
                f"\nAll {len(good)} runs agree{also}: {good[0].rows_in_files:,} rows written "
                f"in {len(good[0].partition_rows)} partitions, Q1 sums exact, averages within "
                "1e-6; each on run's chunk files are its off run's files."
            )
        peers = self.compaction_peers(data, threads, good[0] if good else None)
        heading(f"Compaction: each engine's files for the same job, {threads} threads")
        fanout_rows = [
            (f"fanout {c.chunk_size} chunks, compaction {c.mode}", every[c.name][-1], False)
            for c in cfgs
        ]
        print(compact.engines_table(fanout_rows + peers))
        self.record["compaction"] = {
            "threads": threads,
            "rounds": rounds,
            "chunk_sizes": list(sizes),
            "configs": [
                {
                    "chunk_size": c.chunk_size,
                    "compaction": c.mode,
                    "target_file_size": c.target_file_size or "default",
                    "ok": figures[c.name].ok,
                    **(
                        {
                            a: figures[c.name].spread(a).record()
                            for a in ("cpu_s", "wall_s", "peak_rss_bytes")
                        }
                        if figures[c.name].ok
                        else {}
                    ),
                    "runs": [as_record(r) for r in every[c.name]],
                }
                for c in cfgs
            ],
            "costs": [c.record() for c in costs],
            "engines": [
                {"engine": label, "reused": reused, **as_record(r)} for label, r, reused in peers
            ],
        }

    def compaction_peers(
        self, data: Dataset, threads: int, ref: EngineRun | None
    ) -> list[tuple[str, EngineRun, bool]]:
        """DuckDB's, Polars' and (with --spark) Spark's run of the CSV job at `threads`: the
        CSV section's last round when it ran them, else one run each, checked against
        `ref`. (label, run, reused)."""
        ran = {f.engine: f for f in self.csv_sections.get((data.scale, threads), [])}
        out = []
        for e in ("duckdb", "polars", "spark"):
            if e not in self.args.engine_list:
                continue
            if e in ran and ran[e].ok:
                out.append((e, ran[e].runs[-1], True))
                continue
            r = self.runner.peer(e, data, threads, name=f"{e}-compaction-t{threads}")
            if not r.ok:
                self.fail(f"FAILED {r.label}: {r.error}")
            elif ref is not None:
                for p in compare(ref, r):
                    self.fail(p)
            out.append((e, r, False))
        return out

    def memory(self, data: Dataset) -> None:
        heading(
            f"Memory: fanout, 1 worker, chunk target_size {', '.join(MEMORY_CHUNK_SIZES)}, "
            f"and the CSV as one gzip object; SF {data.scale:g} "
            f"({data.bytes / (1 << 30):.2f} GiB CSV)"
        )
        if data.bytes < (1 << 30):
            print("note: the input is smaller than 1 GiB; the 1GiB chunk is the whole input")
        runs = []
        for size in MEMORY_CHUNK_SIZES:
            r = self.runner.fanout(data, 1, name=f"fanout-chunk-{size}", target_size=size)
            r.label = f"fanout {size}"
            runs.append(r)
        gz = derived(data, "csv.gz", log)
        r = self.runner.fanout(gz, 1, name="fanout-csv.gz")
        r.label = "fanout csv.gz"
        runs.append(r)
        self.check_runs(runs)
        inputs = [f"{data.path.name}"] * len(MEMORY_CHUNK_SIZES) + [
            f"{gz.path.name} ({gz.mb:,.1f} MB)"
        ]
        sizes = list(MEMORY_CHUNK_SIZES) + ["one chunk (the object)"]
        rows = [
            [
                what,
                size,
                str(r.chunks or "—"),
                f2(r.wall_s),
                f2(r.cpu_s),
                f"{r.peak_rss_bytes / MIB:,.0f}",
                f"{r.files:,}",
                file_mb(r.median_file_bytes),
            ]
            if r.ok
            else [what, f"{size} (failed)"] + ["—"] * 6
            for what, size, r in zip(inputs, sizes, runs)
        ]
        print(
            table(
                [
                    "input",
                    "chunk target_size",
                    "chunks",
                    "wall s",
                    "CPU s",
                    "peak RSS MiB",
                    "files",
                    "median file MB",
                ],
                rows,
            )
        )
        good = [r.peak_rss_bytes for r in runs[: len(MEMORY_CHUNK_SIZES)] if r.ok]
        if len(good) == len(MEMORY_CHUNK_SIZES):
            print(
                f"\npeak RSS, largest / smallest chunk size: {max(good) / min(good):.2f}x "
                "(target: flat, about 1.0x)"
            )
        over = [r.label for r in runs if r.ok and r.peak_rss_bytes > MEMORY_LIMIT_BYTES]
        if over:
            print(f"note: over the 256 MiB target: {', '.join(over)}")
        self.record["memory"] = [as_record(r) for r in runs]
        self.huge_record(data)

    def huge_record(self, data: Dataset) -> None:
        """One record far over input.max_record_size among ordinary rows: fanout (1 worker)
        must reject it alone (rule max_record_size) within 256 MiB; the peers' outcome is
        recorded, whatever it is."""
        huge_bytes = TINY_HUGE_RECORD_BYTES if self.args.tiny else HUGE_RECORD_BYTES
        huge = derived(data, "huge-record", log, huge_bytes=huge_bytes)
        heading(
            f"Memory: a huge record ({huge.path.name}, {huge.mb:,.1f} MB: one row's l_comment "
            f"is {huge_bytes / MB:,.0f} MB, among {2 * HUGE_ROWS_AROUND:,} ordinary rows), "
            "1 worker / 1 thread"
        )
        fanout = self.runner.fanout(huge, 1, name="fanout-huge-record")
        fanout.label = "fanout"
        if not fanout.ok:
            self.fail(f"FAILED fanout on the huge record: {fanout.error}")
        else:
            if fanout.reject_rules != {"max_record_size": 1} or fanout.rows_rejected != 1:
                self.fail(
                    f"MISMATCH fanout on the huge record: rejected {fanout.rows_rejected} "
                    f"by rule {fanout.reject_rules}, expected 1 by max_record_size"
                )
            if fanout.rows_written != fanout.rows_in_files:
                self.fail(
                    f"MISMATCH fanout on the huge record: reports {fanout.rows_written} rows "
                    f"written, its Parquet files hold {fanout.rows_in_files}"
                )
            if fanout.peak_rss_bytes > MEMORY_LIMIT_BYTES:
                self.fail(
                    f"MEMORY fanout on the huge record: peak RSS "
                    f"{fanout.peak_rss_bytes / MIB:,.0f} MiB > 256 MiB"
                )
        runs = [fanout]
        for e in ("duckdb", "polars"):
            if e in self.args.engine_list:
                r = self.runner.peer(e, huge, 1, name=f"{e}-huge-record")
                r.label = e
                runs.append(r)
        said = {
            r.label: outcome(r, self.runner.work / f"{r.label}-huge-record" / "log.err")
            for r in runs
        }
        rows = [
            [
                r.label,
                said[r.label],
                f2(r.cpu_s),
                f2(r.wall_s),
                f"{r.peak_rss_bytes / MIB:,.0f}",
            ]
            for r in runs
        ]
        print(table(["engine", "outcome", "CPU s", "wall s", "peak RSS MiB"], rows))
        self.record["huge_record"] = {
            "input": {"path": str(huge.path), "bytes": huge.bytes, "field_bytes": huge_bytes},
            "runs": [{**as_record(r), "outcome": said[r.label]} for r in runs],
        }

    def cold_start(self) -> None:
        fdir = self.args.functions_dir
        heading(
            f"Cold start: spawn -> first Runtime API poll, {COLD_START_RUNS} runs each ({fdir})"
        )
        results = []
        with RuntimeApiStub() as stub:
            for fn in FUNCTIONS:
                binary = fdir / fn
                if not binary.exists():
                    print(
                        f"{fn}: not built ({binary} missing; `cargo build --release "
                        f"--bin {fn}`), skipped"
                    )
                    continue
                try:
                    samples = cold_starts(binary, fn, stub, self.runner.work / "cold-start")
                except ColdStartError as e:
                    self.fail(f"FAILED cold start of {fn}: {e}")
                    continue
                ms = sorted(s * 1000 for s in samples)
                results.append(
                    {
                        "function": fn,
                        "runs": len(ms),
                        "median_ms": statistics.median(ms),
                        "p90_ms": ms[max(0, -(-9 * len(ms) // 10) - 1)],
                        "min_ms": ms[0],
                        "max_ms": ms[-1],
                        "binary_bytes": binary.stat().st_size,
                    }
                )
        if results:
            print(
                table(
                    ["function", "runs", "median ms", "p90 ms", "min ms", "max ms", "binary MB"],
                    [
                        [
                            r["function"],
                            str(r["runs"]),
                            f1(r["median_ms"]),
                            f1(r["p90_ms"]),
                            f1(r["min_ms"]),
                            f1(r["max_ms"]),
                            f1(r["binary_bytes"] / MB),
                        ]
                        for r in results
                    ],
                )
            )
        self.record["cold_start"] = results

    def synthetic(self) -> None:
        heading("Synthetic: planner and reducer at scale (hidden `fanout bench-*` subcommands)")
        rows, record = [], []
        for sub, flag, n, target in SYNTHETIC:
            d = self.runner.work / sub
            d.mkdir(parents=True, exist_ok=True)
            cmd = [str(self.runner.fanout_bin), sub, flag, str(n)]
            # Three runs, the median reported: one run alone moved by a third between
            # invocations on this machine (other sections' output still being written back).
            runs: list[tuple[Usage, dict]] = []
            failed = False
            for _ in range(SYNTHETIC_RUNS):
                settle()
                log(" ".join(cmd))
                usage = run_measured(cmd, env=dict(os.environ), log_dir=d, name="log")
                err = (d / "log.err").read_text(errors="replace")
                if usage.exit_code != 0 and "unrecognized subcommand" in err:
                    rows.append([sub, f"{n:,}", "not available", "", f"≤ {target:g}", "", ""])
                    record.append({"what": sub, "n": n, "available": False})
                    failed = True
                    break
                out_lines = (d / "log.out").read_text().splitlines()
                line = next((s for s in reversed(out_lines) if s.strip().startswith("{")), None)
                if usage.exit_code != 0 or line is None:
                    self.fail(
                        f"FAILED {' '.join(cmd)}: exit code {usage.exit_code}\n{tail(d / 'log.err')}"
                    )
                    rows.append([sub, f"{n:,}", "failed", "", f"≤ {target:g}", "", ""])
                    failed = True
                    break
                runs.append((usage, json.loads(line)))
            if failed:
                continue
            runs.sort(key=lambda r: float(r[1]["seconds"]))
            usage, got = runs[len(runs) // 2]
            seconds = float(got["seconds"])
            every = [float(r[1]["seconds"]) for r in runs]
            rows.append(
                [
                    f"{sub} ({got.get('what', '?')})",
                    f"{int(got.get('n', n)):,}",
                    f"{seconds:.3f}",
                    f"{every[0]:.3f}–{every[-1]:.3f}",
                    f"≤ {target:g}",
                    "yes" if seconds <= target else "NO",
                    f"{usage.peak_rss_bytes / MIB:,.0f}",
                ]
            )
            record.append(
                {
                    "what": sub,
                    "n": n,
                    "available": True,
                    "seconds": seconds,
                    "runs_s": every,
                    "target_s": target,
                    "wall_s": usage.wall_s,
                    "peak_rss_bytes": usage.peak_rss_bytes,
                    "reported": got,
                }
            )
        print(
            table(
                [
                    "subcommand",
                    "n",
                    f"median s ({SYNTHETIC_RUNS} runs)",
                    "range s",
                    "target s",
                    "met",
                    "peak RSS MiB",
                ],
                rows,
            )
        )
        self.record["synthetic"] = record


# ---------------------------------------------------------------- cold start


class ColdStartError(Exception):
    pass


class RuntimeApiStub:
    """A Lambda Runtime API on 127.0.0.1:<random port> that notes when a function first asks
    for an invocation and holds that request until told to let go (the process is killed
    by then). An init error a function posts is kept, so a failed start says why."""

    NEXT = "/2018-06-01/runtime/invocation/next"

    def __init__(self) -> None:
        self.arrivals: queue.Queue[tuple[float, threading.Event]] = queue.Queue()
        self.init_errors: queue.Queue[str] = queue.Queue()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                arrived = time.perf_counter()
                if self.path != stub.NEXT:
                    self._reply(404)
                    return
                release = threading.Event()
                stub.arrivals.put((arrived, release))
                release.wait(COLD_START_TIMEOUT_S)
                self._reply(404)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/init/error"):
                    stub.init_errors.put(body.decode(errors="replace"))
                self._reply(202)

            def _reply(self, status: int) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the function is gone

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RuntimeApiStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def lambda_env(fn: str, runtime_api: str, home: Path) -> dict[str, str]:
    """What Lambda sets for a provided.al2023 function, plus what template.yaml gives each
    function (functions/*/src/main.rs read them at init); fake credentials, no AWS config."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": f"fanout-{fn}",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/fanout-{fn}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/24/[$LATEST]0123456789abcdef0123456789abcdef",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "INFO",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIAFANOUTBENCHFAKE0",
        "AWS_SECRET_ACCESS_KEY": "fanout-bench-fake-secret-key-not-a-real-one",
        "AWS_SESSION_TOKEN": "fanout-bench-fake-session-token",
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "LAMBDA_TASK_ROOT": str(home),
        "_HANDLER": "bootstrap",
        "FANOUT_WORK": "s3://fanout-bench-work/",
        "FANOUT_METRICS_NAMESPACE": "Fanout",
    }
    if fn == "planner":
        env["FANOUT_QUEUE_URL"] = "https://sqs.us-east-1.amazonaws.com/123456789012/fanout-chunks"
        env["FANOUT_SPEC"] = "s3://fanout-bench-work/specs/default.yaml"
        env["FANOUT_INPUT"] = "s3://fanout-bench-input/"
    elif fn == "worker":
        env["FANOUT_MAX_RECEIVE_COUNT"] = "3"
    return env


def cold_starts(binary: Path, fn: str, stub: RuntimeApiStub, work: Path) -> list[float]:
    """Seconds from spawn to the first `invocation/next`, COLD_START_RUNS times."""
    home = work / fn
    home.mkdir(parents=True, exist_ok=True)
    env = lambda_env(fn, stub.address, home)
    samples = []
    with open(home / "log.out", "ab") as out, open(home / "log.err", "ab") as err:
        for _ in range(COLD_START_RUNS):
            while not stub.arrivals.empty():
                stub.arrivals.get_nowait()[1].set()
            started = time.perf_counter()
            proc = subprocess.Popen([str(binary)], env=env, stdout=out, stderr=err, cwd=home)
            deadline = started + COLD_START_TIMEOUT_S
            arrived, release = None, None
            while arrived is None:
                try:
                    arrived, release = stub.arrivals.get(timeout=0.05)
                except queue.Empty:
                    exited = proc.poll()
                    if exited is not None or time.perf_counter() > deadline:
                        proc.kill()
                        proc.wait()
                        how = "timed out" if exited is None else f"exited with {exited}"
                        why = "" if stub.init_errors.empty() else stub.init_errors.get()
                        raise ColdStartError(
                            f"{binary} {how} before polling the Runtime API {why}\n"
                            f"{tail(home / 'log.err')}"
                        ) from None
            proc.kill()
            proc.wait()
            assert release is not None
            release.set()
            samples.append(arrived - started)
    return samples


# ---------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        meminfo = Path("/proc/meminfo").read_text()
        info["memory_gib"] = round(
            int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1)) / (1 << 20), 1
        )
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = re.search(r"model name\s*:\s*(.*)", cpuinfo).group(1).strip()
    except (OSError, AttributeError):
        pass
    return info


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def fanout_binary(args: argparse.Namespace) -> Path:
    if args.fanout_bin:
        path = args.fanout_bin.expanduser().resolve()
        if not os.access(path, os.X_OK):
            sys.exit(f"bench: {path} is not an executable")
        return path
    log(f"building fanout (cargo build --release --bin fanout, CARGO_TARGET_DIR={TARGET_DIR})")
    subprocess.run(
        ["cargo", "build", "--release", "--bin", "fanout"],
        cwd=REPO,
        check=True,
        env={**os.environ, "CARGO_TARGET_DIR": str(TARGET_DIR)},
    )
    return TARGET_DIR / "release" / "fanout"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:])
        + "\nSee BENCHMARKS.md. Example: bench/run --scale 1 --threads 2 --all",
    )
    p.add_argument("--scale", type=float, default=1.0, help="TPC-H scale factor (default 1)")
    p.add_argument(
        "--rounds",
        "--repeat",
        dest="rounds",
        type=int,
        default=1,
        help="rounds of every engine in each input section, interleaved; each figure is the "
        "median of the rounds, its range after it (default 1)",
    )
    p.add_argument(
        "--threads",
        default=DEFAULT_THREADS,
        help="comma-separated thread counts; each input section runs at each (fanout -w N; "
        f"default {DEFAULT_THREADS})",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help=f"SF {TINY_SCALE:g} (also for --memory, whose huge record is then "
        f"{TINY_HUGE_RECORD_BYTES / MB:g} MB): a quick check that it all works",
    )
    p.add_argument(
        "--engines",
        default=None,
        help=f"comma-separated, from {','.join(ENGINES)} (default: "
        f"{','.join(DEFAULT_ENGINES)}, plus spark with --spark)",
    )
    p.add_argument("--spark", action="store_true", help="also PySpark local[N] (minutes)")
    p.add_argument("--plain", action="store_true", help="also the plain CSV -> Parquet path")
    p.add_argument(
        "--formats",
        action="store_true",
        help="also the job on lineitem as JSON lines, one .csv.gz, one .csv.zst and a "
        "Parquet dataset (--shapes " + ",".join(SHAPES) + ")",
    )
    p.add_argument(
        "--shapes",
        default=None,
        help=f"comma-separated input shapes of the job, from {','.join(SHAPES)} (default csv; "
        "all with --formats)",
    )
    p.add_argument(
        "--keep-outputs",
        action="store_true",
        help="keep every run's Parquet output in the work folder (default: deleted once "
        "counted and checked)",
    )
    p.add_argument(
        "--memory",
        action="store_true",
        help=f"also fanout's peak RSS per chunk size and on one gzip object (SF "
        f"{MEMORY_SCALE:g}), and a 300 MB record in fanout, DuckDB and Polars",
    )
    p.add_argument("--memory-scale", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--cold-start", action="store_true", help="also the Lambda cold starts")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="also the planner (1M objects) and reducer (100k records) figures",
    )
    p.add_argument("--scaling", action="store_true", help="also fanout with 1 vs 2 workers")
    p.add_argument(
        "--compaction",
        action="store_true",
        help="also the compaction stage's cost: fanout with output.target_file_size off and "
        "at its default, chunks of 64MiB and 8MiB, at the largest --threads count; and each "
        "engine's files",
    )
    p.add_argument("--all", action="store_true", help="every section, Spark included")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder of lineitem.csv (default ~/.cache/fanout/bench/data-sf<SF>); "
        "generated if missing",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where outputs and logs go, kept (default: a temporary folder, removed)",
    )
    p.add_argument(
        "--fanout-bin",
        type=Path,
        default=None,
        help="fanout binary (default: cargo build --release --bin fanout)",
    )
    p.add_argument(
        "--functions-dir",
        type=Path,
        default=TARGET_DIR / "release",
        help="planner, worker and reducer release binaries (default %(default)s)",
    )
    p.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    args = p.parse_args(argv)
    if args.all:
        args.spark = args.plain = args.formats = args.memory = args.cold_start = True
        args.synthetic = args.scaling = args.compaction = True
    if args.tiny:
        args.scale = TINY_SCALE
        args.memory_scale = args.memory_scale or TINY_SCALE
    args.memory_scale = args.memory_scale or MEMORY_SCALE
    if args.engines:
        args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()]
        unknown = set(args.engine_list) - set(ENGINES)
        if unknown:
            p.error(f"unknown engines {', '.join(sorted(unknown))}; known: {', '.join(ENGINES)}")
    else:
        args.engine_list = list(DEFAULT_ENGINES) + (["spark"] if args.spark else [])
    try:
        args.thread_list = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        p.error(f"--threads: not a comma-separated list of integers: {args.threads!r}")
    if not args.thread_list or min(args.thread_list) < 1:
        p.error("--threads: each thread count must be at least 1")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.shapes:
        args.shape_list = [x.strip() for x in args.shapes.split(",") if x.strip()]
        unknown = set(args.shape_list) - set(SHAPES)
        if unknown:
            p.error(f"unknown shapes {', '.join(sorted(unknown))}; known: {', '.join(SHAPES)}")
    else:
        args.shape_list = list(SHAPES) if args.formats else ["csv"]
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if "spark" in args.engine_list:
        spark_home_dir()
    fanout_bin = fanout_binary(args)
    data = ensure_data(args.scale, args.data_dir)
    memory_data = ensure_data(args.memory_scale, None) if args.memory else None

    work = (
        args.work_dir.resolve() if args.work_dir else Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    )
    work.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    runner = Runner(args, work, fanout_bin)
    bench = Bench(args, runner)
    info = machine()
    print(f"# fanout benchmark, {started:%Y-%m-%d %H:%M} UTC\n")
    print(f"command: bench/run {' '.join(argv)}")
    print(
        f"machine: {info.get('cores')} cores, {info.get('memory_gib')} GiB, {info.get('cpu', '?')}"
    )
    print(f"fanout:  {fanout_bin} ({runner.fanout_version})")
    print(f"input:   {data.path} ({data.mb:,.1f} MB, SF {data.scale:g})")
    print(f"work:    {work}{'' if args.work_dir else ' (removed at the end)'}")
    print(f"threads: {', '.join(map(str, args.thread_list))}; rounds: {args.rounds}")
    print(f"load:    {load()} (1, 5, 15 min; other work on the machine inflates wall times)")
    try:
        bench.inputs(data, args.shape_list, args.engine_list)
        if args.scaling:
            bench.scaling(data)
        if args.compaction:
            bench.compaction(data)
        if args.plain:
            bench.plain(data, args.engine_list)
        if memory_data:
            bench.memory(memory_data)
        if args.cold_start:
            bench.cold_start()
        if args.synthetic:
            bench.synthetic()
    finally:
        if args.json:
            doc = {
                "date": started.isoformat(timespec="seconds"),
                "command": ["bench/run", *argv],
                "machine": info,
                "fanout": {"binary": str(fanout_bin), "version": runner.fanout_version},
                "scale": data.scale,
                "threads": args.thread_list,
                "rounds": args.rounds,
                "load_at_end": os.getloadavg(),
                "input": {"path": str(data.path), "bytes": data.bytes},
                **bench.record,
                "problems": bench.problems,
            }
            args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
            log(f"figures written to {args.json}")
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload at the end: {load()}")
    if bench.problems:
        print(f"\n{len(bench.problems)} problem(s); see above.")
        return 1
    print("\nok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
