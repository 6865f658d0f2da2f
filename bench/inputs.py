"""The benchmark's derived inputs, made once (untimed) from the TPC-H lineitem.csv and cached.

Each lives alone in a sibling folder of the data folder, `<data folder>-<shape>/`, because
fanout reads every object under its input location (and `ensure_data` refuses a data
folder holding other CSV files):

  csv.gz        lineitem.csv.gz: the CSV as ONE gzip object (`gzip -6`)
  csv.zst       lineitem.csv.zst: the CSV as one zstd object (`zstd -3`)
  jsonl         lineitem.jsonl: one JSON object per row, in the CSV's order; keys as JSON
                numbers, the money columns as JSON numbers with their exact two decimals
                (`17.00`, as the CSV writes them), dates as "YYYY-MM-DD" strings, text as JSON
                strings; written by DuckDB from the typed CSV (its own JSON writer would print
                `17.0`: each line is built as text instead)
  huge-record   lineitem-huge.csv: lineitem's header, HUGE_ROWS_AROUND ordinary rows, one row
                whose l_comment is `huge_bytes` of text, then HUGE_ROWS_AROUND more rows

A file is written under a `.partial` name and renamed when complete, so an interrupted
generation is redone.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

MB = 1e6

# shape -> (file name, input format: fanout's input.format and the peers' --format)
SHAPES: dict[str, tuple[str, str]] = {
    "csv.gz": ("lineitem.csv.gz", "csv"),
    "csv.zst": ("lineitem.csv.zst", "csv"),
    "jsonl": ("lineitem.jsonl", "jsonl"),
    "huge-record": ("lineitem-huge.csv", "csv"),
}
HUGE_ROWS_AROUND = 10_000
# The money columns as JSON numbers keep their two decimals: checked on the first line.
MONEY_RE = re.compile(r'"l_extendedprice":\d+\.\d\d,')


@dataclass
class Dataset:
    """One input file of the benchmark (a folder holding it alone is fanout's location)."""

    scale: float
    path: Path
    bytes: int
    shape: str = "csv"
    format: str = "csv"

    @property
    def mb(self) -> float:
        return self.bytes / MB


def sibling(base: Dataset, shape: str) -> Path:
    folder = base.path.parent
    return folder.with_name(f"{folder.name}-{shape}") / SHAPES[shape][0]


def derived(base: Dataset, shape: str, log, *, huge_bytes: int = 0) -> Dataset:
    """`base` (the plain lineitem.csv) as `shape`, generated if missing."""
    path = sibling(base, shape)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.iterdir():
            if stale.name != path.name:
                stale.unlink()
        partial = path.with_name(f".{path.name}.partial")
        log(f"generating {path} from {base.path} (untimed)")
        if shape == "csv.gz":
            _compress(["gzip", "-6", "-c"], base.path, partial)
        elif shape == "csv.zst":
            _compress(["zstd", "-3", "-q", "-c"], base.path, partial)
        elif shape == "jsonl":
            _jsonl(base.path, partial)
        elif shape == "huge-record":
            _huge_record(base.path, partial, huge_bytes)
        else:
            raise ValueError(f"unknown input shape {shape}")
        partial.rename(path)
    return Dataset(base.scale, path, path.stat().st_size, shape, SHAPES[shape][1])


def _compress(cmd: list[str], src: Path, dst: Path) -> None:
    with open(dst, "wb") as out:
        subprocess.run([*cmd, str(src)], stdout=out, check=True)


def _jsonl(src: Path, dst: Path) -> None:
    import duckdb

    from duckdb_job import read_csv_sql  # bench/peers is on sys.path (bench.py puts it there)
    from common import COLUMNS

    def value(name: str, kind: str) -> str:
        # DECIMAL -> VARCHAR prints the scale's digits ('17.00'); to_json quotes and escapes.
        if kind in ("int64", "int32", "decimal"):
            return f"coalesce(CAST({name} AS VARCHAR), 'null')"
        return f"coalesce(to_json(CAST({name} AS VARCHAR)), 'null')"

    fields = " || ',' || ".join(f"'\"{name}\":' || {value(name, kind)}" for name, kind in COLUMNS)
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT '{{' || {fields} || '}}' FROM {read_csv_sql(str(src))}) TO '{dst}'"
        " (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\t')"
    )
    with open(dst) as f:
        first = f.readline()
    if not MONEY_RE.search(first):
        raise RuntimeError(f"{dst}: money columns not written with two decimals: {first[:300]}")
    with open(src, "rb") as f:
        csv_rows = sum(1 for _ in f) - 1
    with open(dst, "rb") as f:
        json_rows = sum(1 for _ in f)
    if csv_rows != json_rows:
        raise RuntimeError(f"{dst}: {json_rows} JSON lines for {csv_rows} CSV rows")


def _huge_record(src: Path, dst: Path, huge_bytes: int) -> None:
    """Ordinary rows around one whose quoted l_comment (the last field) is `huge_bytes` long."""
    with open(src, "rb") as f:
        header = f.readline()
        rows = [f.readline() for _ in range(2 * HUGE_ROWS_AROUND)]
    if not rows[-1]:
        raise RuntimeError(f"{src} has fewer than {2 * HUGE_ROWS_AROUND} rows")
    template = rows[HUGE_ROWS_AROUND - 1]
    # The last field is l_comment (quoted by tpchgen when it holds a comma, else bare).
    head = template[: template.rstrip(b"\r\n").rfind(b",") + 1]
    piece = b"carefully final deposits sleep blithely. " * 25_000  # about 1 MB, no quotes
    with open(dst, "wb") as out:
        out.write(header)
        out.writelines(rows[:HUGE_ROWS_AROUND])
        out.write(head + b'"')
        left = huge_bytes
        while left > 0:
            out.write(piece[:left])
            left -= len(piece)
        out.write(b'"\n')
        out.writelines(rows[HUGE_ROWS_AROUND:])
