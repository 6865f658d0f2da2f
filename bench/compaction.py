"""The `--compaction` section's figures (BENCHMARKS.md, "Compaction"): fanout's job with
`output.target_file_size: off` and with the default, per chunk size, and the files each
engine writes.

Pure functions over finished runs (bench.py's EngineRun: `ok`, `cpu_s`, `wall_s`,
`peak_rss_bytes`, `files`, `file_bytes`, `median_file_bytes`, `small_files`, `chunks`, and
`compaction`, the manifest's `compaction` object of a run with the stage on): no process is
started here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from figures import EngineFigures, f2, file_mb, mib, table

# The chunk sizes (bench/lineitem.yaml's 64 MiB, and 8 MiB: eight times the chunk
# files). At --tiny (SF 0.01, 7.3 MB of CSV) the same ratio, 2 and 14 chunks: the input is
# still cut into several chunks, so the stage has files to merge, and the four debug-binary
# runs in CI take about 10 s (the sizes scaled by the SF, 640KiB and 80KiB, took 23 s).
CHUNK_SIZES = ("64MiB", "8MiB")
TINY_CHUNK_SIZES = ("4MiB", "512KiB")
# `output.target_file_size` of each run: off, and fanout's default (the spec leaves it out).
MODES = ("off", "on")
DEFAULT_TARGET = "default (128MiB)"


@dataclass
class Config:
    """One fanout configuration of the section: a chunk size, compaction off or on."""

    chunk_size: str
    mode: str

    @property
    def name(self) -> str:
        return f"fanout-compaction-{self.chunk_size}-{self.mode}"

    @property
    def target_file_size(self) -> str | None:
        """The spec's `output.target_file_size`: `off`, or None for the default."""
        return "off" if self.mode == "off" else None


def configs(chunk_sizes: tuple[str, ...]) -> list[Config]:
    return [Config(size, mode) for size in chunk_sizes for mode in MODES]


def _stage(run: Any, key: str) -> str:
    value = (run.compaction or {}).get(key)
    return f"{value:,}" if isinstance(value, int) else "—"


def _chunk_files(run: Any) -> dict[str, Any]:
    """The manifest's `compaction.chunk_files` of a run with the stage on, else {}."""
    return (run.compaction or {}).get("chunk_files") or {}


def section_table(figures: dict[str, EngineFigures], cfgs: list[Config]) -> str:
    """One row per configuration: medians (ranges over rounds) of CPU, wall and peak RSS,
    the last round's files (the same in every round: the writer is deterministic) and,
    with the stage on, what it did."""
    headers = [
        "chunk size",
        "compaction",
        "chunks",
        "CPU s",
        "wall s",
        "peak RSS MiB",
        "files",
        "median file MB",
        "small files",
        "bins",
        "merged files",
        "copied row groups",
        "encoded row groups",
    ]
    rows = []
    for c in cfgs:
        f = figures[c.name]
        if not f.ok:
            rows.append([c.chunk_size, f"{c.mode} (failed)"] + ["—"] * (len(headers) - 2))
            continue
        last = f.runs[-1]
        rows.append(
            [
                c.chunk_size,
                c.mode,
                f"{last.chunks:,}" if last.chunks is not None else "—",
                f.spread("cpu_s").cell(f2),
                f.spread("wall_s").cell(f2),
                f.spread("peak_rss_bytes").cell(mib),
                f"{last.files:,}",
                file_mb(last.median_file_bytes),
                f"{last.small_files:,}",
                _stage(last, "bins"),
                _stage(last, "merged_files"),
                _stage(last, "copied_row_groups"),
                _stage(last, "encoded_row_groups"),
            ]
        )
    return table(headers, rows)


@dataclass
class Cost:
    """What the stage cost and gave at one chunk size, on the medians of the rounds."""

    chunk_size: str
    cpu_off: float
    cpu_on: float
    wall_off: float
    wall_on: float
    files_before: int
    files_after: int
    median_before: float
    median_after: float
    small_before: int
    small_after: int

    @property
    def cpu_share(self) -> float:
        """The stage's share of the job's CPU: (CPU on - CPU off) / CPU on."""
        return (self.cpu_on - self.cpu_off) / self.cpu_on if self.cpu_on else 0.0

    @property
    def wall_share(self) -> float:
        return (self.wall_on - self.wall_off) / self.wall_on if self.wall_on else 0.0

    def record(self) -> dict[str, Any]:
        return {
            "chunk_size": self.chunk_size,
            "cpu_off_s": self.cpu_off,
            "cpu_on_s": self.cpu_on,
            "cpu_share": self.cpu_share,
            "wall_off_s": self.wall_off,
            "wall_on_s": self.wall_on,
            "wall_share": self.wall_share,
            "files_before": self.files_before,
            "files_after": self.files_after,
            "median_file_bytes_before": self.median_before,
            "median_file_bytes_after": self.median_after,
            "small_files_before": self.small_before,
            "small_files_after": self.small_after,
        }


def costs(figures: dict[str, EngineFigures], chunk_sizes: tuple[str, ...]) -> list[Cost]:
    """Per chunk size whose off and on runs all succeeded: the medians' CPU share, and the
    files before (the off run's: the chunk files themselves) and after (the on run's)."""
    out = []
    for size in chunk_sizes:
        off = figures[Config(size, "off").name]
        on = figures[Config(size, "on").name]
        if not (off.ok and on.ok):
            continue
        before, after = off.runs[-1], on.runs[-1]
        out.append(
            Cost(
                chunk_size=size,
                cpu_off=off.spread("cpu_s").median,
                cpu_on=on.spread("cpu_s").median,
                wall_off=off.spread("wall_s").median,
                wall_on=on.spread("wall_s").median,
                files_before=before.files,
                files_after=after.files,
                median_before=before.median_file_bytes,
                median_after=after.median_file_bytes,
                small_before=before.small_files,
                small_after=after.small_files,
            )
        )
    return out


def cost_table(rows: list[Cost]) -> str:
    return table(
        [
            "chunk size",
            "files before → after",
            "median file MB before → after",
            "small files before → after",
            "CPU off → on s",
            "compaction's share of CPU",
            "wall off → on s",
        ],
        [
            [
                c.chunk_size,
                f"{c.files_before:,} → {c.files_after:,}",
                f"{file_mb(c.median_before)} → {file_mb(c.median_after)}",
                f"{c.small_before:,} → {c.small_after:,}",
                f"{f2(c.cpu_off)} → {f2(c.cpu_on)}",
                f"{c.cpu_share:.1%}",
                f"{f2(c.wall_off)} → {f2(c.wall_on)}",
            ]
            for c in rows
        ],
    )


def stage_problems(cfg: Config, off: Any, on: Any) -> list[str]:
    """What a pair of successful off and on runs at one chunk size must show beyond the rows
    and Q1 (compared elsewhere): the on run's manifest has a `compaction` object whose chunk
    files are the off run's files (the chunk writer is the same either way), the off run's
    has none, and the stage never adds files."""
    problems = []
    who = f"{cfg.name} vs its off run"
    if off.compaction is not None:
        problems.append(f"MISMATCH {off.label}: target_file_size off, manifest has compaction")
    if on.compaction is None:
        problems.append(f"MISMATCH {on.label}: compaction on, manifest has no compaction object")
        return problems
    before = _chunk_files(on)
    if (before.get("files"), before.get("total_bytes")) != (off.files, off.output_bytes):
        problems.append(
            f"MISMATCH {who}: the manifest's chunk_files are {before.get('files')} files, "
            f"{before.get('total_bytes')} B; the off run wrote {off.files}, {off.output_bytes} B"
        )
    if on.files > off.files:
        problems.append(f"MISMATCH {who}: {on.files} files after compaction, {off.files} before")
    return problems


def engines_table(rows: list[tuple[str, Any, bool]]) -> str:
    """Each engine's files at the section's thread count: (label, run, reused from the CSV
    section)."""
    return table(
        ["engine", "files", "median file MB", "small files", "output MB", "run"],
        [
            [
                label,
                f"{r.files:,}",
                file_mb(r.median_file_bytes),
                f"{r.small_files:,}",
                f"{r.output_bytes / 1e6:,.1f}",
                "CSV section's" if reused else "this section's",
            ]
            if r.ok
            else [f"{label} (failed)", "—", "—", "—", "—", "—"]
            for label, r, reused in rows
        ],
    )
