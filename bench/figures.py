"""How the harness prints figures: Markdown tables, medians with their ranges over rounds,
and the targets of issue 16 (BENCHMARKS.md, "Targets").

Pure functions over runs (anything with `engine`, `ok`, `cpu_s`, `wall_s`,
`peak_rss_bytes`): no process is started here.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

MIB = 1 << 20
# Output files under this count as small (fanout's `job::SMALL_FILE_BYTES`).
SMALL_FILE_BYTES = MIB
# fanout's CPU seconds must be at most the best peer's divided by this.
CPU_TARGET_FACTOR = 1.3
# fanout's peak RSS per worker must stay at or under this.
RSS_TARGET_BYTES = 256 * MIB


class Run(Protocol):
    engine: str
    cpu_s: float
    wall_s: float
    peak_rss_bytes: int

    @property
    def ok(self) -> bool: ...


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, aligned for the terminal (numbers right-aligned)."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    numeric = [
        all(re.fullmatch(r"[-+\d.,x×%()–\s]*|—|n/a", r[i] or "") for r in rows)
        for i in range(len(headers))
    ]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric))
            + " |"
        )

    rule = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, numeric))
        + "|"
    )
    return "\n".join([line(headers), rule] + [line(r) for r in rows])


def f1(x: float) -> str:
    return f"{x:,.1f}"


def f2(x: float) -> str:
    return f"{x:,.2f}"


def file_mb(x: float) -> str:
    """A file size in MB (10^6 bytes): three decimals under 10 MB, where the small files
    of a tiny run would otherwise all read 0.0."""
    return f"{x / 1e6:,.3f}" if x < 10e6 else f"{x / 1e6:,.1f}"


def mib(x: float) -> str:
    return f"{x / MIB:,.0f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "—"


@dataclass
class Spread:
    """One figure over an engine's rounds: median and range."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), len(values))

    def cell(self, fmt) -> str:  # noqa: ANN001  (one of f2, mib)
        """`median`, with `(min–max)` after it when there was more than one round."""
        if self.n == 1:
            return fmt(self.median)
        return f"{fmt(self.median)} ({fmt(self.low)}–{fmt(self.high)})"

    def record(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high}


@dataclass
class EngineFigures:
    """An engine's runs in one section (one input shape at one thread count)."""

    engine: str
    runs: list[Any]

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.ok for r in self.runs)

    def spread(self, attr: str) -> Spread:
        return Spread.of([getattr(r, attr) for r in self.runs])


def section_table(engines: list[EngineFigures]) -> str:
    """CPU, wall and peak RSS side by side (medians, ranges over rounds), rows written and
    rejected (the same in every round: the checks compare them), output files and the
    median file's size (the last round's), and fanout's medians over each peer's."""
    headers = [
        "engine",
        "CPU s",
        "wall s",
        "peak RSS MiB",
        "rows written",
        "rejected",
        "files",
        "median file MB",
        "CPU fanout/peer",
        "wall fanout/peer",
        "RSS fanout/peer",
    ]
    fanout = next((e for e in engines if e.engine == "fanout" and e.ok), None)
    rows = []
    for e in engines:
        if not e.ok:
            rows.append([f"{e.engine} (failed)"] + ["—"] * (len(headers) - 1))
            continue
        cpu, wall, rss = e.spread("cpu_s"), e.spread("wall_s"), e.spread("peak_rss_bytes")
        last = e.runs[-1]
        row = [
            e.engine,
            cpu.cell(f2),
            wall.cell(f2),
            rss.cell(mib),
            f"{last.rows_in_files:,}",
            f"{last.rows_rejected:,}" if last.rows_rejected is not None else "not counted",
            # The same in every round for a deterministic writer; the last round's, as rows.
            f"{last.files:,}",
            file_mb(last.median_file_bytes),
        ]
        if fanout is not None and e is not fanout:
            f_cpu, f_wall = fanout.spread("cpu_s"), fanout.spread("wall_s")
            f_rss = fanout.spread("peak_rss_bytes")
            row += [
                ratio(f_cpu.median, cpu.median),
                ratio(f_wall.median, wall.median),
                ratio(f_rss.median, rss.median),
            ]
        else:
            row += ["—", "—", "—"]
        rows.append(row)
    return table(headers, rows)


@dataclass
class Targets:
    """Issue 16's three targets for one section, on the medians."""

    fanout_cpu: float
    best_peer: str
    best_peer_cpu: float
    fanout_wall: float
    fastest_peer: str
    fastest_peer_wall: float
    fanout_rss: float

    @property
    def cpu_factor(self) -> float:
        """The best peer's CPU over fanout's: the target is at least CPU_TARGET_FACTOR."""
        return self.best_peer_cpu / self.fanout_cpu

    @property
    def wall_factor(self) -> float:
        """The fastest peer's wall over fanout's: the target is above 1."""
        return self.fastest_peer_wall / self.fanout_wall

    @property
    def rss_factor(self) -> float:
        """fanout's peak RSS over the limit: the target is at most 1."""
        return self.fanout_rss / RSS_TARGET_BYTES

    @property
    def cpu_met(self) -> bool:
        return self.cpu_factor >= CPU_TARGET_FACTOR

    @property
    def wall_met(self) -> bool:
        return self.wall_factor > 1

    @property
    def rss_met(self) -> bool:
        return self.rss_factor <= 1

    def lines(self) -> list[str]:
        def said(met: bool) -> str:
            return "met" if met else "MISSED"

        return [
            f"- CPU ≤ best peer / {CPU_TARGET_FACTOR}: fanout {f2(self.fanout_cpu)} s, best "
            f"peer {self.best_peer} {f2(self.best_peer_cpu)} s: {self.cpu_factor:.2f}× less "
            f"(needs ≥ {CPU_TARGET_FACTOR:.2f}×, ≤ {f2(self.best_peer_cpu / CPU_TARGET_FACTOR)}"
            f" s): {said(self.cpu_met)}",
            f"- wall below every peer: fanout {f2(self.fanout_wall)} s, fastest peer "
            f"{self.fastest_peer} {f2(self.fastest_peer_wall)} s: {self.wall_factor:.2f}× "
            f"(needs > 1.00×): {said(self.wall_met)}",
            f"- peak RSS ≤ {mib(RSS_TARGET_BYTES)} MiB: fanout {mib(self.fanout_rss)} MiB: "
            f"{self.rss_factor:.2f}× the limit: {said(self.rss_met)}",
        ]

    def record(self) -> dict[str, Any]:
        return {
            "cpu": {
                "fanout_s": self.fanout_cpu,
                "best_peer": self.best_peer,
                "best_peer_s": self.best_peer_cpu,
                "factor": self.cpu_factor,
                "target_factor": CPU_TARGET_FACTOR,
                "met": self.cpu_met,
            },
            "wall": {
                "fanout_s": self.fanout_wall,
                "fastest_peer": self.fastest_peer,
                "fastest_peer_s": self.fastest_peer_wall,
                "factor": self.wall_factor,
                "met": self.wall_met,
            },
            "peak_rss": {
                "fanout_bytes": self.fanout_rss,
                "limit_bytes": RSS_TARGET_BYTES,
                "factor": self.rss_factor,
                "met": self.rss_met,
            },
        }


def targets(engines: list[EngineFigures]) -> Targets | None:
    """The targets on the medians, against every peer that ran (its variants without reject
    accounting included: the strongest peer sets the bar), or None without fanout and a
    peer."""
    fanout = next((e for e in engines if e.engine == "fanout" and e.ok), None)
    peers = [e for e in engines if e.engine != "fanout" and e.ok]
    if fanout is None or not peers:
        return None
    best = min(peers, key=lambda e: e.spread("cpu_s").median)
    fastest = min(peers, key=lambda e: e.spread("wall_s").median)
    return Targets(
        fanout_cpu=fanout.spread("cpu_s").median,
        best_peer=best.engine,
        best_peer_cpu=best.spread("cpu_s").median,
        fanout_wall=fanout.spread("wall_s").median,
        fastest_peer=fastest.engine,
        fastest_peer_wall=fastest.spread("wall_s").median,
        fanout_rss=fanout.spread("peak_rss_bytes").median,
    )


def summary_table(sections: list[tuple[str, int, Targets]]) -> str:
    """Every section's targets in one table: (input shape, threads, targets)."""
    rows = []
    for shape, threads, t in sections:
        rows.append(
            [
                shape,
                str(threads),
                f2(t.fanout_cpu),
                f"{t.best_peer} {f2(t.best_peer_cpu)}",
                f"{t.cpu_factor:.2f}× {'met' if t.cpu_met else 'MISSED'}",
                f2(t.fanout_wall),
                f"{t.fastest_peer} {f2(t.fastest_peer_wall)}",
                f"{t.wall_factor:.2f}× {'met' if t.wall_met else 'MISSED'}",
                mib(t.fanout_rss),
                f"{t.rss_factor:.2f}× {'met' if t.rss_met else 'MISSED'}",
            ]
        )
    return table(
        [
            "input",
            "threads",
            "fanout CPU s",
            "best peer CPU s",
            f"CPU (≥ {CPU_TARGET_FACTOR:.2f}×)",
            "fanout wall s",
            "fastest peer wall s",
            "wall (> 1×)",
            "fanout RSS MiB",
            "RSS (≤ 1× 256 MiB)",
        ],
        rows,
    )
