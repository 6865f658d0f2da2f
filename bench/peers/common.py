"""What every peer job shares: the lineitem schema, the job's constants, the command line
and the result file the harness (bench/bench.py) reads.

The job is the one `bench/lineitem.yaml` gives fanout:

  read      lineitem.csv (header line, quoted l_comment) with the explicit schema below:
            decimals as decimal(15,2), dates as date
  validate  drop (and count) rows failing the spec's checks: l_orderkey not null
            (`nullable: false`), l_quantity >= 0, 0 <= l_discount <= 0.10
  transform WHERE l_shipdate <= DATE '1998-09-02', plus
            disc_price = l_extendedprice * (1 - l_discount)            (exact, scale 4)
            charge     = l_extendedprice * (1 - l_discount) * (1 + l_tax)  (exact, scale 6)
            ship_year  = year(l_shipdate) as int32
  write     Hive-partitioned `ship_year=YYYY/` Parquet, zstd level 1 (partition column not
            stored in the files)
  aggregate TPC-H Q1 over the written rows, grouped by l_returnflag, l_linestatus

`--format jsonl` reads JSON lines instead of CSV (one object per row, the money columns as
JSON numbers, dates as "YYYY-MM-DD" strings); a `.gz` or `.zst` input is decompressed by the
engine. `--format parquet` reads a folder of Parquet files holding the same columns already
typed (a dataset re-partitioned by ship_year). Same job, same output.

Rejected rows: fanout writes them to its rejects location and counts them, so a peer does
too, in the same pass as the job: a row failing a check gets a null ship_year, and the
partitioned write puts it in `ship_year=__HIVE_DEFAULT_PARTITION__/` (no row passing the
checks has a null ship_year: its l_shipdate passed the date filter), which is then moved
out of the output to `<output>-rejects/` (REJECTS_SUFFIX); the engine's own count of that
partition's rows is the reject count. `--no-rejects` is the job without any reject
accounting: the rows failing a check are dropped in the WHERE clause, uncounted, and the
result's rows_rejected is null.

`--plain` asks for the plain path instead: the same typed read, every row written unpartitioned
as zstd(1) Parquet, no checks, no transform, no aggregate.

The result file is JSON: engine, version, threads, rows_written, rows_rejected and `q1`, a list
of rows keyed like fanout's `aggregates.json` (decimal sums as exact strings, averages as
strings, count_order an int).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

# (name, type) in file order; type is one of int64, int32, decimal, string, date.
COLUMNS: list[tuple[str, str]] = [
    ("l_orderkey", "int64"),
    ("l_partkey", "int64"),
    ("l_suppkey", "int64"),
    ("l_linenumber", "int32"),
    ("l_quantity", "decimal"),
    ("l_extendedprice", "decimal"),
    ("l_discount", "decimal"),
    ("l_tax", "decimal"),
    ("l_returnflag", "string"),
    ("l_linestatus", "string"),
    ("l_shipdate", "date"),
    ("l_commitdate", "date"),
    ("l_receiptdate", "date"),
    ("l_shipinstruct", "string"),
    ("l_shipmode", "string"),
    ("l_comment", "string"),
]
DECIMAL_PRECISION, DECIMAL_SCALE = 15, 2
# The derived columns' (precision, scale): exact products of decimal(15,2) values, in the
# 8-byte decimals DuckDB's type rules give them. The job states them, so every engine
# writes the same schema whatever its own rules would widen the products to.
DISC_PRICE_TYPE = (18, 4)
CHARGE_TYPE = (18, 6)

SHIP_DATE_MAX = dt.date(1998, 9, 2)
DISCOUNT_MAX = Decimal("0.10")
ZSTD_LEVEL = 1
PARTITION_COLUMN = "ship_year"
# Where the partitioned write puts the rows whose ship_year is null: the rejected ones.
REJECTED_PARTITION = f"{PARTITION_COLUMN}=__HIVE_DEFAULT_PARTITION__"
REJECTS_SUFFIX = "-rejects"

GROUP_BY = ["l_returnflag", "l_linestatus"]
# Q1 measure -> (function, column), the names of bench/lineitem.yaml's aggregate.
MEASURES: dict[str, tuple[str, str | None]] = {
    "sum_qty": ("sum", "l_quantity"),
    "sum_base_price": ("sum", "l_extendedprice"),
    "sum_disc_price": ("sum", "disc_price"),
    "sum_charge": ("sum", "charge"),
    "avg_qty": ("avg", "l_quantity"),
    "avg_price": ("avg", "l_extendedprice"),
    "avg_disc": ("avg", "l_discount"),
    "count_order": ("count", None),
}


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--input",
        required=True,
        type=Path,
        help="lineitem.csv (.gz, .zst), .jsonl, or a folder of .parquet files",
    )
    p.add_argument(
        "--format", choices=("csv", "jsonl", "parquet"), default="csv", help="input format"
    )
    p.add_argument("--output", required=True, type=Path, help="output folder (created)")
    p.add_argument("--result", required=True, type=Path, help="result JSON to write")
    p.add_argument("--threads", required=True, type=int, help="threads the engine may use")
    p.add_argument("--plain", action="store_true", help="plain CSV -> zstd Parquet, no job")
    p.add_argument(
        "--no-rejects", action="store_true", help="drop failing rows uncounted (no rejects)"
    )
    return p.parse_args()


def move_rejects(output: Path) -> Path | None:
    """The partition of rejected rows moved out of `output` to `<output>-rejects/`, or None
    when there was none (the engine wrote no file for it)."""
    written = output / REJECTED_PARTITION
    if not written.exists():
        return None
    rejects = output.with_name(output.name + REJECTS_SUFFIX)
    shutil.rmtree(rejects, ignore_errors=True)
    written.rename(rejects)
    return rejects


def compression(path: Path) -> str | None:
    """The input's compression by suffix, as fanout's `input.compression: auto` decides."""
    return {".gz": "gzip", ".zst": "zstd"}.get(path.suffix)


def text(value: Any) -> str:
    """A number as the harness compares it: Decimals and ints exactly, floats by repr."""
    return str(value)


def q1_row(l_returnflag: str, l_linestatus: str, **measures: Any) -> dict[str, Any]:
    """One Q1 group as the result file holds it (the measures named as in MEASURES)."""
    row: dict[str, Any] = {"l_returnflag": l_returnflag, "l_linestatus": l_linestatus}
    for name in MEASURES:
        v = measures[name]
        row[name] = int(v) if name == "count_order" else text(v)
    return row


def exact_avg(total: Decimal, count: int) -> Decimal:
    """An average from an exact sum, to 12 decimal places (more than any peer prints)."""
    return (total / Decimal(count)).quantize(Decimal("1e-12")) if count else Decimal(0)


def write_result(
    path: Path,
    *,
    engine: str,
    version: str,
    threads: int,
    rows_written: int,
    rows_rejected: int | None,
    q1: list[dict[str, Any]] | None,
    **extra: Any,
) -> None:
    doc = {
        "engine": engine,
        "version": version,
        "threads": threads,
        "rows_written": int(rows_written),
        "rows_rejected": None if rows_rejected is None else int(rows_rejected),
        "q1": sorted(q1, key=lambda r: (r["l_returnflag"], r["l_linestatus"])) if q1 else q1,
        **extra,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
