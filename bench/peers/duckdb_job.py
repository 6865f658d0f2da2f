"""The benchmark job (see common.py) in DuckDB, as its users would write it.

A streaming, parallel `COPY (the spec's SQL over read_csv(..., columns = {...},
auto_detect = false)) TO dir (PARTITION_BY (ship_year), COMPRESSION zstd,
COMPRESSION_LEVEL 1, RETURN_STATS)`; the rejected rows are counted by a query over the CSV
that parses only the three checked columns, and Q1 is SQL over the written Parquet (its
columns only). Measured at SF 0.1, this costs the same CPU as parsing the CSV once into an
in-memory table and querying that, with a bounded footprint instead of one growing with
the input. DuckDB's decimal arithmetic is exact (decimal(15,2) products keep scale 4 and 6,
in the decimal(18,4) and (18,6) the job states, so its casts change nothing), sums stay
decimal; `avg` is a double. `preserve_insertion_order = false`, as DuckDB's docs advise
for bulk exports whose row order does not matter (fanout's output has no global order
either).

Other input shapes: a `.csv.gz` or `.csv.zst` is the same `read_csv` (its `compression =
'auto'` decompresses by suffix, streaming); JSON lines (`--format jsonl`) are
`read_json(format = 'newline_delimited', columns = {...})`, the same explicit types (JSON
numbers into DECIMAL(15,2), "YYYY-MM-DD" strings into DATE).

Plain path (`--plain`): one `COPY (SELECT * FROM read_csv(...)) TO 'lineitem.parquet'`.

Usage: python duckdb_job.py --input lineitem.csv --output DIR --result RESULT.json --threads N
"""

from __future__ import annotations

import duckdb

from common import (
    CHARGE_TYPE,
    COLUMNS,
    DECIMAL_PRECISION,
    DECIMAL_SCALE,
    DISCOUNT_MAX,
    DISC_PRICE_TYPE,
    PARTITION_COLUMN,
    SHIP_DATE_MAX,
    ZSTD_LEVEL,
    parse_args,
    q1_row,
    write_result,
)

SQL_TYPES = {
    "int64": "BIGINT",
    "int32": "INTEGER",
    "decimal": f"DECIMAL({DECIMAL_PRECISION},{DECIMAL_SCALE})",
    "string": "VARCHAR",
    "date": "DATE",
}
# Nulls pass min/max checks, as in fanout's rules; only l_orderkey must be present.
VALID = (
    "l_orderkey IS NOT NULL"
    " AND coalesce(l_quantity >= 0, true)"
    f" AND coalesce(l_discount BETWEEN 0 AND {DISCOUNT_MAX}, true)"
)


def transformed(source: str) -> str:
    return f"""
        SELECT *,
               CAST(l_extendedprice * (1 - l_discount) AS DECIMAL{DISC_PRICE_TYPE})
                   AS disc_price,
               CAST(l_extendedprice * (1 - l_discount) * (1 + l_tax) AS DECIMAL{CHARGE_TYPE})
                   AS charge,
               CAST(year(l_shipdate) AS INTEGER) AS {PARTITION_COLUMN}
        FROM {source}
        WHERE {VALID} AND l_shipdate <= DATE '{SHIP_DATE_MAX.isoformat()}'
    """


def q1(written: str) -> str:
    return f"""
        SELECT l_returnflag, l_linestatus,
               sum(l_quantity) AS sum_qty,
               sum(l_extendedprice) AS sum_base_price,
               sum(disc_price) AS sum_disc_price,
               sum(charge) AS sum_charge,
               avg(l_quantity) AS avg_qty,
               avg(l_extendedprice) AS avg_price,
               avg(l_discount) AS avg_disc,
               count(*) AS count_order
        FROM {written}
        GROUP BY l_returnflag, l_linestatus
    """


def read_csv_sql(path: str) -> str:
    columns = ", ".join(f"'{name}': '{SQL_TYPES[kind]}'" for name, kind in COLUMNS)
    return (
        f"read_csv('{path}', header = true, delim = ',', quote = '\"', escape = '\"',"
        f" columns = {{{columns}}}, auto_detect = false)"
    )


def read_json_sql(path: str) -> str:
    columns = ", ".join(f"'{name}': '{SQL_TYPES[kind]}'" for name, kind in COLUMNS)
    return f"read_json('{path}', format = 'newline_delimited', columns = {{{columns}}})"


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    con.execute("SET preserve_insertion_order = false")
    args.output.mkdir(parents=True, exist_ok=True)
    read = read_json_sql if args.format == "jsonl" else read_csv_sql
    source = read(str(args.input))

    if args.plain:
        stats = con.execute(
            f"COPY (SELECT * FROM {source}) TO '{args.output / 'lineitem.parquet'}'"
            f" (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {ZSTD_LEVEL}, RETURN_STATS)"
        )
        rows = rows_copied(stats)
        write_result(
            args.result,
            engine="duckdb",
            version=duckdb.__version__,
            threads=args.threads,
            rows_written=rows,
            rows_rejected=None,
            q1=None,
        )
        return

    stats = con.execute(
        f"COPY ({transformed(source)}) TO '{args.output}'"
        f" (FORMAT parquet, PARTITION_BY ({PARTITION_COLUMN}), COMPRESSION zstd,"
        f" COMPRESSION_LEVEL {ZSTD_LEVEL}, RETURN_STATS, OVERWRITE_OR_IGNORE)"
    )
    rows = rows_copied(stats)
    (rejected,) = con.execute(
        f"SELECT count(*) FILTER (WHERE NOT ({VALID})) FROM {source}"
    ).fetchone()
    cur = con.execute(q1(f"read_parquet('{args.output}/**/*.parquet', hive_partitioning = true)"))
    names = [d[0] for d in cur.description]
    q1_rows = [q1_row(**dict(zip(names, r))) for r in cur.fetchall()]
    write_result(
        args.result,
        engine="duckdb",
        version=duckdb.__version__,
        threads=args.threads,
        rows_written=rows,
        rows_rejected=rejected,
        q1=q1_rows,
    )


def rows_copied(cursor: duckdb.DuckDBPyConnection) -> int:
    names = [d[0] for d in cursor.description]
    return sum(r[names.index("count")] for r in cursor.fetchall())


if __name__ == "__main__":
    main()
