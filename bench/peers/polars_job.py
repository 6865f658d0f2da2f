"""The benchmark job (see common.py) in Polars, with the lazy API and the streaming engine.

One lazy query, one streaming pass: `scan_csv` with the explicit schema → filter → derived
columns → `sink_parquet(pl.PartitionBy(dir, key="ship_year", include_key=False),
compression="zstd", compression_level=1, lazy=True)`, collected together with Q1 by one
`pl.collect_all`, whose common-subplan elimination shares the scan and the transform between
the sink and the aggregate (at SF 1 on 2 threads: 0.1–0.5 CPU-s less than reading Q1's
columns back from the written Parquet, for about 100 MiB more peak memory).

Rejects (what it costs): the rows failing a check are not filtered out but given a null
ship_year (and null derived columns), so the partitioned sink writes them to
`ship_year=__HIVE_DEFAULT_PARTITION__/`, moved out of the output afterwards (common.py);
their count is read from those files' footers. The cost is the checks' expression
evaluated once more per row and the rejected rows' Parquet, none in TPC-H data. (The
previous version counted them with a third query in the same `collect_all`: a second scan of
the checked columns.) `--no-rejects` (`polars-noreject`) filters them out uncounted.

Polars' decimal product keeps the larger operand scale (decimal(15,2) * decimal(15,2) is
scale 2, rounded), so the operands are widened first to keep the SQL result exact:
disc_price at scale 4, charge at scale 6, as in SQL engines; then cast to the job's
decimal(18,4) and (18,6).

Other input shapes: `scan_csv` reads a `.csv.gz` or `.csv.zst` itself (by its magic bytes)
into the same query. JSON lines (`--format jsonl`) are `scan_ndjson(schema=...)`: its
reader takes a JSON number only as a float, so the money columns are read as Float64,
rounded to 2 places and cast to decimal(15,2) (exact for these values: at most 13
significant digits); dates are read from their strings as Date. Parquet (`--format
parquet`, a folder) is `scan_parquet('<folder>/*.parquet')`, already typed.

Threads: POLARS_MAX_THREADS is read when polars is imported; the harness sets it and this
script sets it too, before the import.

Plain path (`--plain`): `scan_csv(...).sink_parquet("lineitem.parquet", zstd 1)`.

Usage: python polars_job.py --input lineitem.csv --output DIR --result RESULT.json --threads N
"""

from __future__ import annotations

import os
from decimal import Decimal

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
    move_rejects,
    parse_args,
    q1_row,
    write_result,
)

def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    os.environ["POLARS_MAX_THREADS"] = str(args.threads)
    import polars as pl  # after POLARS_MAX_THREADS is set

    dec = pl.Decimal(DECIMAL_PRECISION, DECIMAL_SCALE)
    types = {
        "int64": pl.Int64,
        "int32": pl.Int32,
        "decimal": dec,
        "string": pl.String,
        "date": pl.Date,
    }
    schema = {name: types[kind] for name, kind in COLUMNS}
    if args.format == "jsonl":
        decimals = [name for name, kind in COLUMNS if kind == "decimal"]
        source = pl.scan_ndjson(
            args.input, schema={n: pl.Float64 if n in decimals else t for n, t in schema.items()}
        ).with_columns(pl.col(decimals).round(DECIMAL_SCALE).cast(dec))
    elif args.format == "parquet":
        source = pl.scan_parquet(args.input / "*.parquet")
    else:
        source = pl.scan_csv(args.input, schema=schema, has_header=True, quote_char='"')
    args.output.mkdir(parents=True, exist_ok=True)
    threads = pl.thread_pool_size()
    engine = "polars-noreject" if args.no_rejects else "polars"

    if args.plain:
        source.sink_parquet(
            args.output / "lineitem.parquet", compression="zstd", compression_level=ZSTD_LEVEL
        )
        rows = pl.scan_parquet(args.output / "lineitem.parquet").select(pl.len()).collect().item()
        write_result(
            args.result,
            engine=engine,
            version=pl.__version__,
            threads=threads,
            rows_written=rows,
            rows_rejected=None,
            q1=None,
        )
        return

    # Nulls pass min/max checks, as in fanout's rules; only l_orderkey must be present.
    valid = (
        pl.col("l_orderkey").is_not_null()
        & (pl.col("l_quantity") >= 0).fill_null(True)
        & (
            pl.col("l_discount").is_between(pl.lit(Decimal(0), dec), pl.lit(DISCOUNT_MAX, dec))
        ).fill_null(True)
    )
    ship_date = pl.col("l_shipdate") <= SHIP_DATE_MAX
    disc_price = (
        pl.col("l_extendedprice").cast(pl.Decimal(38, 4)) * (1 - pl.col("l_discount"))
    ).cast(pl.Decimal(*DISC_PRICE_TYPE))
    year = pl.col("l_shipdate").dt.year().cast(pl.Int32)
    if args.no_rejects:
        kept = source.filter(valid & ship_date)
    else:
        # A rejected row keeps its place with null derived columns and a null ship_year,
        # which the partitioned sink writes to the partition of nulls.
        kept = source.filter(~valid | ship_date)
        disc_price = pl.when(valid).then(disc_price)
        year = pl.when(valid).then(year)
    transformed = (
        kept.with_columns(disc_price=disc_price, **{PARTITION_COLUMN: year})
        .with_columns(
            charge=(pl.col("disc_price").cast(pl.Decimal(38, 6)) * (1 + pl.col("l_tax"))).cast(
                pl.Decimal(*CHARGE_TYPE)
            )
        )
        .select([name for name, _ in COLUMNS] + ["disc_price", "charge", PARTITION_COLUMN])
    )
    sink = transformed.sink_parquet(
        pl.PartitionBy(args.output, key=PARTITION_COLUMN, include_key=False),
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        mkdir=True,
        lazy=True,
    )
    # Q1 over the written rows: a rejected row has a null ship_year.
    written = transformed.filter(pl.col(PARTITION_COLUMN).is_not_null())
    _, q1_frame = pl.collect_all([sink, q1(pl, written if not args.no_rejects else transformed)])
    rejected = None
    if not args.no_rejects:
        rejects = move_rejects(args.output)
        rejected = 0 if rejects is None else count_rows(pl, rejects)
    q1_rows = [q1_row(**r) for r in q1_frame.iter_rows(named=True)]
    write_result(
        args.result,
        engine=engine,
        version=pl.__version__,
        threads=threads,
        rows_written=sum(r["count_order"] for r in q1_rows),
        rows_rejected=rejected,
        q1=q1_rows,
    )


def q1(pl, rows):  # noqa: ANN001, ANN201  (polars is imported in main, after its threads)
    return rows.group_by("l_returnflag", "l_linestatus").agg(
        sum_qty=pl.col("l_quantity").sum(),
        sum_base_price=pl.col("l_extendedprice").sum(),
        sum_disc_price=pl.col("disc_price").sum(),
        sum_charge=pl.col("charge").sum(),
        avg_qty=pl.col("l_quantity").mean(),
        avg_price=pl.col("l_extendedprice").mean(),
        avg_disc=pl.col("l_discount").mean(),
        count_order=pl.len(),
    )


def count_rows(pl, folder) -> int:  # noqa: ANN001
    """Rows in a folder's Parquet files, from their footers."""
    return pl.scan_parquet(folder / "*.parquet").select(pl.len()).collect().item()


if __name__ == "__main__":
    main()
