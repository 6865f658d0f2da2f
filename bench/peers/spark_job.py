"""The benchmark job (see common.py) in PySpark, local mode (`local[N]`).

The harness starts it through `spark-submit --master local[N] --driver-memory 4g` (so the
JVM is the measured process and the Python driver its child). The CSV is read with the
explicit schema (FAILFAST: a malformed line fails the job instead of becoming nulls); the
checks, filter and derived columns are the spec's SQL, run by Spark SQL over a temporary
view. Rejected and written rows are counted by `DataFrame.observe` during the write, not by
extra passes. The write is `partitionBy("ship_year")`, zstd level 1
(`parquet.compression.codec.zstd.level`), with concurrent output writers so the rows are not
sorted by partition first. Q1 then reads back only its columns of the written Parquet, the
usual way in Spark (caching the whole frame would cost more).

Settings an expert would make for one machine: shuffle partitions = N, UI off, AQE on (the
default); nothing but the small Q1 result is collected to Python.

Plain path (`--plain`): read with the schema, write one folder of zstd(1) Parquet files.

Usage: spark-submit --master local[N] spark_job.py --input lineitem.csv --output DIR
       --result RESULT.json --threads N
"""

from __future__ import annotations

from decimal import Decimal

from pyspark import __version__ as spark_version
from pyspark.sql import Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

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

TYPES = {
    "int64": T.LongType(),
    "int32": T.IntegerType(),
    "decimal": T.DecimalType(DECIMAL_PRECISION, DECIMAL_SCALE),
    "string": T.StringType(),
    "date": T.DateType(),
}
SCHEMA = T.StructType([T.StructField(n, TYPES[k], n != "l_orderkey") for n, k in COLUMNS])
# Nulls pass min/max checks, as in fanout's rules; only l_orderkey must be present.
VALID = (
    "l_orderkey IS NOT NULL"
    " AND coalesce(l_quantity >= 0, true)"
    f" AND coalesce(l_discount BETWEEN 0 AND {DISCOUNT_MAX}, true)"
)
TRANSFORM = f"""
    SELECT *,
           CAST(l_extendedprice * (1 - l_discount) AS DECIMAL{DISC_PRICE_TYPE}) AS disc_price,
           CAST(l_extendedprice * (1 - l_discount) * (1 + l_tax) AS DECIMAL{CHARGE_TYPE})
               AS charge,
           CAST(year(l_shipdate) AS INT) AS {PARTITION_COLUMN}
    FROM lineitem
    WHERE {VALID} AND l_shipdate <= DATE '{SHIP_DATE_MAX.isoformat()}'
"""
Q1 = """
    SELECT l_returnflag, l_linestatus,
           sum(l_quantity) AS sum_qty,
           sum(l_extendedprice) AS sum_base_price,
           sum(disc_price) AS sum_disc_price,
           sum(charge) AS sum_charge,
           avg(l_quantity) AS avg_qty,
           avg(l_extendedprice) AS avg_price,
           avg(l_discount) AS avg_disc,
           count(*) AS count_order
    FROM written
    GROUP BY l_returnflag, l_linestatus
"""


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    spark = (
        SparkSession.builder.appName("fanout-bench")
        .master(f"local[{args.threads}]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(args.threads))
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.hadoop.parquet.compression.codec.zstd.level", str(ZSTD_LEVEL))
        .config("spark.sql.maxConcurrentOutputFileWriters", "16")
        .config("spark.sql.sources.partitionOverwriteMode", "static")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    raw = spark.read.csv(
        str(args.input),
        schema=SCHEMA,
        header=True,
        quote='"',
        escape='"',
        mode="FAILFAST",
        enforceSchema=True,
    )
    out = str(args.output)

    if args.plain:
        seen = Observation("plain")
        raw.observe(seen, F.count(F.lit(1)).alias("rows")).write.mode("overwrite").parquet(out)
        write_result(
            args.result,
            engine="spark",
            version=spark_version,
            threads=args.threads,
            rows_written=seen.get["rows"],
            rows_rejected=None,
            q1=None,
        )
        spark.stop()
        return

    checked = Observation("checked")
    raw.observe(
        checked, F.count(F.when(~F.expr(VALID), 1)).alias("rejected")
    ).createOrReplaceTempView("lineitem")
    written = Observation("written")
    (
        spark.sql(TRANSFORM)
        .observe(written, F.count(F.lit(1)).alias("rows"))
        .write.mode("overwrite")
        .partitionBy(PARTITION_COLUMN)
        .parquet(out)
    )
    spark.read.parquet(out).createOrReplaceTempView("written")
    q1 = [
        q1_row(**{k: (str(v) if isinstance(v, Decimal) else v) for k, v in r.asDict().items()})
        for r in spark.sql(Q1).collect()
    ]
    write_result(
        args.result,
        engine="spark",
        version=spark_version,
        threads=args.threads,
        rows_written=written.get["rows"],
        rows_rejected=checked.get["rejected"],
        q1=q1,
    )
    spark.stop()


if __name__ == "__main__":
    main()
