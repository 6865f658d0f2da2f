"""The benchmark job (see common.py) in pyarrow: streaming CSV reader, compute kernels,
partitioned `pyarrow.dataset.write_dataset`.

`pyarrow.csv.open_csv` streams typed record batches (explicit `column_types`, 4 MiB blocks);
each batch is checked, filtered and extended with compute kernels and handed, through a
generator, to `write_dataset` (Hive partitioning on ship_year, zstd level 1, at least
122,880 rows per row group like DuckDB's default, so the per-partition slices of small
batches do not become tiny row groups). The writer encodes on Arrow's thread pool while the
generator reads the next batch. Q1 is kept as exact per-group partial sums (a `group_by` per
batch, merged as Python Decimals); the averages are those sums divided by the count.

Decimal products widen their precision (p1 + p2 + 1): disc_price is decimal(32,4), narrowed
to the job's decimal(18,4) (a checked cast: it fails rather than overflow) before the
product that makes charge decimal(35,6), narrowed to decimal(18,6).

Other input shapes: `open_csv` on a `.csv.gz` or `.csv.zst` path decompresses it as a
stream (pyarrow picks the codec by suffix). JSON lines (`--format jsonl`) stream through
`pyarrow.json.open_json` with the explicit schema (JSON numbers into decimal128(15,2)); its
reader does not parse a date from a string, so the three dates are read as strings and cast
to date32 per batch. Parquet (`--format parquet`, a folder) streams through a
`pyarrow.dataset` scanner (`ds.dataset(folder).scanner(columns=...).to_reader()`), already
typed.

Rejects: counted per batch from the checks' mask the filter needs anyway (one sum per
batch, no measurable cost), so there is no variant without them.

Threads: `pa.set_cpu_count(N)` and `pa.set_io_thread_count(max(2, N))` (one I/O thread
deadlocks: see main).

Plain path (`--plain`): the streaming reader straight into `write_dataset`, one file.

Usage: python pyarrow_job.py --input lineitem.csv --output DIR --result RESULT.json --threads N
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.dataset as ds
import pyarrow.json as pa_json

from common import (
    CHARGE_TYPE,
    COLUMNS,
    DECIMAL_PRECISION,
    DECIMAL_SCALE,
    DISCOUNT_MAX,
    DISC_PRICE_TYPE,
    GROUP_BY,
    PARTITION_COLUMN,
    SHIP_DATE_MAX,
    ZSTD_LEVEL,
    exact_avg,
    parse_args,
    q1_row,
    write_result,
)

BLOCK_BYTES = 4 << 20
MIN_ROWS_PER_GROUP = 122_880
MAX_ROWS_PER_GROUP = 1 << 20

DEC = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
TYPES = {
    "int64": pa.int64(),
    "int32": pa.int32(),
    "decimal": DEC,
    "string": pa.string(),
    "date": pa.date32(),
}
SCHEMA = pa.schema([(name, TYPES[kind]) for name, kind in COLUMNS])
OUT_SCHEMA = (
    SCHEMA.append(pa.field("disc_price", pa.decimal128(*DISC_PRICE_TYPE)))
    .append(pa.field("charge", pa.decimal128(*CHARGE_TYPE)))
    .append(pa.field(PARTITION_COLUMN, pa.int32()))
)

ONE = pa.scalar(Decimal(1), DEC)
ZERO = pa.scalar(Decimal(0), DEC)
DISCOUNT_MAX_S = pa.scalar(DISCOUNT_MAX, DEC)
SHIP_DATE_MAX_S = pa.scalar(SHIP_DATE_MAX, pa.date32())
# (column, Arrow aggregation) per batch; merged into [sum_qty, sum_base_price,
# sum_disc_price, sum_charge, sum_discount, count].
PARTIALS = [
    ("l_quantity", "sum"),
    ("l_extendedprice", "sum"),
    ("disc_price", "sum"),
    ("charge", "sum"),
    ("l_discount", "sum"),
    ([], "count_all"),
]
PARTIAL_NAMES = [f"{c}_{f}" if c else f for c, f in PARTIALS]


class Job:
    """Checks, transform and Q1 partials over a stream of batches."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self.reader = reader
        self.rejected = 0
        self.written = 0
        self.partials: dict[tuple[str, str], list] = {}

    def batches(self) -> Iterator[pa.RecordBatch]:
        for batch in self.reader:
            if batch.num_rows == 0:
                continue
            # Nulls pass min/max checks, as in fanout's rules; only l_orderkey must be present.
            valid = pc.and_(
                pc.is_valid(batch["l_orderkey"]),
                pc.and_(
                    pc.fill_null(pc.greater_equal(batch["l_quantity"], ZERO), True),
                    pc.fill_null(
                        pc.and_(
                            pc.greater_equal(batch["l_discount"], ZERO),
                            pc.less_equal(batch["l_discount"], DISCOUNT_MAX_S),
                        ),
                        True,
                    ),
                ),
            )
            self.rejected += batch.num_rows - pc.sum(valid).as_py()
            kept = batch.filter(pc.and_(valid, pc.less_equal(batch["l_shipdate"], SHIP_DATE_MAX_S)))
            if kept.num_rows == 0:
                continue
            disc_price = pc.multiply(
                kept["l_extendedprice"], pc.subtract(ONE, kept["l_discount"])
            ).cast(pa.decimal128(*DISC_PRICE_TYPE))
            charge = pc.multiply(disc_price, pc.add(ONE, kept["l_tax"])).cast(
                pa.decimal128(*CHARGE_TYPE)
            )
            year = pc.year(kept["l_shipdate"]).cast(pa.int32())
            out = pa.RecordBatch.from_arrays(
                kept.columns + [disc_price, charge, year], schema=OUT_SCHEMA
            )
            self.add_partials(out)
            self.written += out.num_rows
            yield out

    def add_partials(self, batch: pa.RecordBatch) -> None:
        groups = pa.Table.from_batches([batch]).group_by(GROUP_BY).aggregate(PARTIALS)
        for row in groups.to_pylist():
            acc = self.partials.setdefault(
                (row["l_returnflag"], row["l_linestatus"]), [Decimal(0)] * 5 + [0]
            )
            for i, name in enumerate(PARTIAL_NAMES):
                acc[i] += row[name]

    def q1(self) -> list[dict]:
        rows = []
        for (flag, status), (qty, price, disc_price, charge, disc, n) in self.partials.items():
            rows.append(
                q1_row(
                    flag,
                    status,
                    sum_qty=qty,
                    sum_base_price=price,
                    sum_disc_price=disc_price,
                    sum_charge=charge,
                    avg_qty=exact_avg(qty, n),
                    avg_price=exact_avg(price, n),
                    avg_disc=exact_avg(disc, n),
                    count_order=n,
                )
            )
        return rows


def json_batches(path: str) -> pa.RecordBatchReader:
    """JSON lines as SCHEMA's batches: dates read as strings, cast to date32."""
    as_read = pa.schema(
        [(f.name, pa.string() if f.type == pa.date32() else f.type) for f in SCHEMA]
    )
    reader = pa_json.open_json(
        path,
        read_options=pa_json.ReadOptions(block_size=BLOCK_BYTES, use_threads=True),
        parse_options=pa_json.ParseOptions(
            explicit_schema=as_read, unexpected_field_behavior="ignore"
        ),
    )

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield pa.RecordBatch.from_arrays(
                [c.cast(f.type) for c, f in zip(batch.select(SCHEMA.names).columns, SCHEMA)],
                schema=SCHEMA,
            )

    return pa.RecordBatchReader.from_batches(SCHEMA, batches())


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    if args.no_rejects:
        raise SystemExit("pyarrow_job.py: no --no-rejects variant (its reject count is free)")
    pa.set_cpu_count(args.threads)
    # At least 2 I/O threads: `write_dataset` pulls the generator on an I/O thread, and a
    # reader needing an I/O thread of its own would wait for it forever (seen with Parquet
    # input). I/O threads wait on reads and writes; the CPU work is on set_cpu_count's.
    pa.set_io_thread_count(max(2, args.threads))
    if args.format == "jsonl":
        reader = json_batches(str(args.input))
    elif args.format == "parquet":
        reader = (
            ds.dataset(args.input, format="parquet")
            .scanner(columns=SCHEMA.names, use_threads=True)
            .to_reader()
        )
    else:
        reader = pa_csv.open_csv(
            str(args.input),
            read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES, use_threads=True),
            convert_options=pa_csv.ConvertOptions(
                column_types=SCHEMA, include_columns=SCHEMA.names
            ),
        )
    parquet = ds.ParquetFileFormat()
    write = dict(
        format=parquet,
        file_options=parquet.make_write_options(compression="zstd", compression_level=ZSTD_LEVEL),
        min_rows_per_group=MIN_ROWS_PER_GROUP,
        max_rows_per_group=MAX_ROWS_PER_GROUP,
        existing_data_behavior="overwrite_or_ignore",
        use_threads=True,
    )

    if args.plain:
        ds.write_dataset(reader, args.output, basename_template="lineitem-{i}.parquet", **write)
        rows = sum(
            f.count_rows() for f in ds.dataset(args.output, format="parquet").get_fragments()
        )
        write_result(
            args.result,
            engine="pyarrow",
            version=pa.__version__,
            threads=pa.cpu_count(),
            rows_written=rows,
            rows_rejected=None,
            q1=None,
        )
        return

    job = Job(reader)
    ds.write_dataset(
        job.batches(),
        args.output,
        schema=OUT_SCHEMA,
        partitioning=ds.partitioning(
            pa.schema([OUT_SCHEMA.field(PARTITION_COLUMN)]), flavor="hive"
        ),
        **write,
    )
    write_result(
        args.result,
        engine="pyarrow",
        version=pa.__version__,
        threads=pa.cpu_count(),
        rows_written=job.written,
        rows_rejected=job.rejected,
        q1=job.q1(),
    )


if __name__ == "__main__":
    main()
