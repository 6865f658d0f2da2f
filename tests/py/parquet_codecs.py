#!/usr/bin/env python3
"""Parquet files written and read by an independent implementation (pyarrow), for
tests/tests/parquet_inputs.rs.

    parquet_codecs.py write DIR CODEC...   DIR/<codec>.parquet: ROWS rows (id, name, score,
                                           day) in row groups of 40, pages in CODEC
    parquet_codecs.py groups FILE N G      FILE: N rows (id, name, score, day) in row groups
                                           of G rows, snappy
    parquet_codecs.py int96 FILE [arrow]   FILE: id and ts as INT96, as Spark writes them;
                                           rows 3 and 5 hold 9999-12-31 (beyond timestamp(ns));
                                           with `arrow`, pyarrow's schema (ts in µs) embedded
    parquet_codecs.py read FILE...         one JSON line per file: its column chunks' codecs
                                           and its rows sorted by id
"""
import datetime as dt
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

ROWS = 100


def table(rows=ROWS):
    ids = list(range(1, rows + 1))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array([f"name {i}" for i in ids], pa.string()),
            "score": pa.array([i / 4 for i in ids], pa.float64()),
            "day": pa.array([dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in ids], pa.date32()),
        }
    )


def write(directory, codecs):
    os.makedirs(directory, exist_ok=True)
    for codec in codecs:
        pq.write_table(
            table(),
            os.path.join(directory, f"{codec}.parquet"),
            compression=codec,
            row_group_size=40,
        )


def groups(path, rows, group_rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table(rows), path, compression="snappy", row_group_size=group_rows)


def int96(path, arrow_schema):
    ts = [
        dt.datetime(2024, 5, 1, 12, 30, 15, 123456),
        dt.datetime(1900, 1, 1, 6, 0, 0, 250000),
        dt.datetime(9999, 12, 31, 23, 59, 59),
        dt.datetime(2262, 4, 11, 0, 0, 0),
        dt.datetime(9999, 12, 31, 0, 0, 0),
        None,
    ]
    t = pa.table(
        {
            "id": pa.array(range(1, len(ts) + 1), pa.int64()),
            "ts": pa.array(ts, pa.timestamp("us")),
        }
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Without the embedded arrow schema, as Spark writes it, readers take INT96 as
    # nanoseconds, which year 9999 overflows.
    pq.write_table(
        t, path, use_deprecated_int96_timestamps=True, store_schema=arrow_schema
    )


def value(v):
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    return v


def read(paths):
    for path in paths:
        # INT96 as microseconds: pyarrow's own nanoseconds would wrap year 9999 too.
        f = pq.ParquetFile(path, coerce_int96_timestamp_unit="us")
        m = f.metadata
        codecs = sorted(
            {
                m.row_group(g).column(c).compression
                for g in range(m.num_row_groups)
                for c in range(m.num_columns)
            }
        )
        rows = [{k: value(v) for k, v in r.items()} for r in f.read().to_pylist()]
        rows.sort(key=lambda r: r["id"])
        print(json.dumps({"path": path, "codecs": codecs, "rows": rows}))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "write":
        write(args[0], args[1:])
    elif cmd == "groups":
        groups(args[0], int(args[1]), int(args[2]))
    elif cmd == "int96":
        int96(args[0], args[1:] == ["arrow"])
    elif cmd == "read":
        read(args)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
