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
  parquet       part-00000.parquet, ...: the typed rows (the job's schema: int64/int32 keys,
                decimal(15,2) money, date32 dates, utf8 text) as a dataset of
                PARQUET_FILES_AT_LEAST or more files of at most PARQUET_ROWS_PER_FILE rows each,
                in row groups of PARQUET_ROW_GROUP_ROWS rows (under 10 MB compressed at SF 1,
                far below fanout's input.max_row_group_size of 128 MiB), snappy (the
                default codec of pyarrow, DuckDB and Spark, so what a data lake mostly holds);
                written by pyarrow's streaming CSV reader, in the CSV's order
  huge-record   lineitem-huge.csv: lineitem's header, HUGE_ROWS_AROUND ordinary rows, one row
                whose l_comment is `huge_bytes` of text, then HUGE_ROWS_AROUND more rows

A file is written under a `.partial` name and renamed when complete (the Parquet dataset: a
`.partial` folder), so an interrupted generation is redone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MB = 1e6

# shape -> (file name, input format: fanout's input.format and the peers' --format); a
# name with a `*` is a dataset: the folder is the input, the name what fanout includes.
SHAPES: dict[str, tuple[str, str]] = {
    "csv.gz": ("lineitem.csv.gz", "csv"),
    "csv.zst": ("lineitem.csv.zst", "csv"),
    "jsonl": ("lineitem.jsonl", "jsonl"),
    "parquet": ("*.parquet", "parquet"),
    "huge-record": ("lineitem-huge.csv", "csv"),
}
PARQUET_ROWS_PER_FILE = 1_000_000
PARQUET_FILES_AT_LEAST = 2
PARQUET_ROW_GROUP_ROWS = 250_000
HUGE_ROWS_AROUND = 10_000
# The money columns as JSON numbers keep their two decimals: checked on the first line.
MONEY_RE = re.compile(r'"l_extendedprice":\d+\.\d\d,')


@dataclass
class Dataset:
    """One input of the benchmark: a file (a folder holding it alone is fanout's location)
    or, for a dataset shape, the folder of its files."""

    scale: float
    path: Path
    bytes: int
    shape: str = "csv"
    format: str = "csv"

    @property
    def mb(self) -> float:
        return self.bytes / MB

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    @property
    def folder(self) -> Path:
        """fanout's input location."""
        return self.path if self.is_folder else self.path.parent

    @property
    def include(self) -> str:
        """fanout's `include` pattern: the file's name, or the dataset's files."""
        return SHAPES[self.shape][0] if self.is_folder else self.path.name

    @property
    def files(self) -> list[Path]:
        return sorted(self.path.glob(self.include)) if self.is_folder else [self.path]

    @property
    def name(self) -> str:
        """The input as printed: a file's name, or `folder/*.parquet (N files)`."""
        if not self.is_folder:
            return self.path.name
        return f"{self.path.name}/{self.include} ({len(self.files)} files)"


def sibling(base: Dataset, shape: str) -> Path:
    folder = base.path.parent
    shaped = folder.with_name(f"{folder.name}-{shape}")
    return shaped if "*" in SHAPES[shape][0] else shaped / SHAPES[shape][0]


def derived(base: Dataset, shape: str, log, *, huge_bytes: int = 0) -> Dataset:
    """`base` (the plain lineitem.csv) as `shape`, generated if missing."""
    path = sibling(base, shape)
    if shape == "parquet":
        if not path.exists():
            log(f"generating {path} from {base.path} (untimed)")
            _parquet(base.path, path)
        size = sum(f.stat().st_size for f in path.glob(SHAPES[shape][0]))
        return Dataset(base.scale, path, size, shape, SHAPES[shape][1])
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


def _parquet(src: Path, dst: Path) -> None:
    """The CSV's rows, typed, as a dataset of Parquet files (module docs) in a new folder."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from pyarrow_job import SCHEMA  # the job's schema as Arrow types

    with open(src, "rb") as f:
        rows = sum(1 for _ in f) - 1
    n_files = max(PARQUET_FILES_AT_LEAST, -(-rows // PARQUET_ROWS_PER_FILE))
    per_file = -(-rows // n_files)
    partial = dst.with_name(f".{dst.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    reader = pa_csv.open_csv(str(src), convert_options=pa_csv.ConvertOptions(column_types=SCHEMA))
    # Each file's rows are gathered (about 130 MB of Arrow memory at most), then written in
    # whole row groups: the CSV reader's batches are far smaller than a row group.
    pending: list[pa.RecordBatch] = []
    held = written = 0

    def write_file() -> None:
        nonlocal pending, held, written
        name = partial / f"part-{written // per_file:05d}.parquet"
        table = pa.Table.from_batches(pending, schema=SCHEMA)
        pq.write_table(table, name, row_group_size=PARQUET_ROW_GROUP_ROWS, compression="snappy")
        pending, held, written = [], 0, written + table.num_rows

    for batch in reader:
        while batch.num_rows:
            take = min(batch.num_rows, per_file - held)
            pending.append(batch.slice(0, take))
            batch, held = batch.slice(take), held + take
            if held == per_file:
                write_file()
    if held:
        write_file()
    if written != rows:
        raise RuntimeError(f"{dst}: {written} rows written for {rows} CSV rows")
    partial.rename(dst)


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
