"""Reads a fanout output folder back through Hive partitioning, as other engines do.

    hive_read.py DIR COLUMN

Prints one JSON object: for pyarrow (`pyarrow.dataset`, hive flavor) and DuckDB
(`read_parquet(..., hive_partitioning = true)`), the rows as [id, partition value] sorted
by id. The partition column is read as text in both, so a value is compared as written.
"""

import json
import sys

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds


def main() -> None:
    root, column = sys.argv[1], sys.argv[2]
    part = ds.partitioning(pa.schema([(column, pa.string())]), flavor="hive")
    table = ds.dataset(root, format="parquet", partitioning=part).to_table()
    by_pyarrow = sorted(zip(table["id"].to_pylist(), table[column].to_pylist()))
    rows = duckdb.execute(
        "select id, \"" + column + "\" from read_parquet(?, hive_partitioning = true, "
        "hive_types = {'" + column + "': 'VARCHAR'}) order by id",
        [root + "/**/*.parquet"],
    ).fetchall()
    by_duckdb = [list(r) for r in rows]
    print(json.dumps({"pyarrow": [list(r) for r in by_pyarrow], "duckdb": by_duckdb}))


if __name__ == "__main__":
    main()
