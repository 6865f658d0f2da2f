#!/usr/bin/env python3
"""End-to-end check of fanout with an independent reader (pyarrow).

    orders_e2e.py generate DIR [SEED]   write input, job.yaml and the ground truth
    orders_e2e.py check DIR             compare fanout's output with the ground truth

The generator decides which rows are bad (and why), so the truth does not come from
fanout. The checker reads every Parquet file the manifest lists with pyarrow, compares
row by row and value by value, checks the reject coordinates against the source bytes,
and recomputes the aggregates from the truth with Python's exact Decimal.
"""
import collections
import csv
import datetime as dt
import decimal
import gzip
import io
import json
import os
import random
import sys

import pyarrow.parquet as pq
import zstandard

REGIONS = ["EU", "NA", "APAC", "LATAM"]
STATUSES = ["NEW", "PAID", "SHIPPED", "CANCELLED"]
CUSTOMERS = 300

SPEC = """\
name: e2e
work: {root}/work/
input:
  location: {root}/in/
  format: csv
  csv: {{ header: true, null_values: ["", "NULL"] }}
  schema:
    - {{ name: order_id,    type: int64, nullable: false }}
    - {{ name: customer_id, type: utf8,  nullable: false }}
    - {{ name: amount,      type: "decimal(12,2)" }}
    - {{ name: status,      type: utf8 }}
    - {{ name: ordered_at,  type: "timestamp(ms, UTC)" }}
    - {{ name: note,        type: utf8 }}
chunking: {{ target_size: 48KiB, max_objects_per_chunk: 3 }}
validate:
  - {{ column: amount, min: 0, max: 100000 }}
  - {{ column: status, one_of: [NEW, PAID, SHIPPED, CANCELLED] }}
  - {{ column: customer_id, matches: "^C[0-9]{{6}}$" }}
transform:
  lookups:
    - {{ name: customers, location: {root}/ref/customers.csv, format: csv }}
  sql: |
    SELECT o.*, c.region, CAST(date_trunc('month', o.ordered_at) AS DATE) AS order_month
    FROM input o LEFT JOIN customers c USING (customer_id)
    WHERE o.status <> 'CANCELLED'
output:
  location: {root}/out/
  partition_by: [order_month]
  compression: zstd(1)
  row_group_rows: 2000
rejects: {{ location: {root}/rejects/, max_ratio: 0.05 }}
aggregate:
  group_by: [region, status]
  measures:
    - {{ name: orders, fn: count }}
    - {{ name: revenue, fn: sum, column: amount }}
    - {{ name: avg_amount, fn: avg, column: amount }}
    - {{ name: first_order, fn: min, column: ordered_at }}
    - {{ name: last_order, fn: max, column: ordered_at }}
"""

BAD_KINDS = ["amount_text", "negative", "status", "customer", "date", "columns", "null_id", "quote", "overflow"]


def fmt_ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def generate(root, seed):
    rnd = random.Random(seed)
    os.makedirs(f"{root}/in/big", exist_ok=True)
    os.makedirs(f"{root}/in/small", exist_ok=True)
    os.makedirs(f"{root}/ref", exist_ok=True)
    regions = {}
    with open(f"{root}/ref/customers.csv", "w", newline="") as f:
        f.write("customer_id,region\n")
        for c in range(1, CUSTOMERS + 1):
            cid = f"C{c:06d}"
            regions[cid] = rnd.choice(REGIONS)
            f.write(f"{cid},{regions[cid]}\n")
    truth = {"good": {}, "bad": {}, "regions": regions, "files": {}}
    next_id = [1]

    def rows(n):
        out = []
        for _ in range(n):
            oid = next_id[0]
            next_id[0] += 1
            cid = f"C{rnd.randint(1, CUSTOMERS):06d}"
            cents = rnd.randint(0, 9_999_999)
            amount = f"{cents // 100}.{cents % 100:02d}"
            status = rnd.choice(STATUSES)
            ts = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=rnd.randint(0, 730 * 86400))
            note = rnd.choice(["", "plain", "with, comma", 'with "quotes"', "ünïcödé", "NULL"])
            fields = [str(oid), cid, amount, status, fmt_ts(ts), note]
            kind = rnd.choice(BAD_KINDS) if rnd.random() < 0.02 else None
            if kind == "amount_text":
                fields[2] = "12.3.4"
            elif kind == "negative":
                fields[2] = "-" + amount
            elif kind == "status":
                fields[3] = "LOST"
            elif kind == "customer":
                fields[1] = "c-12"
            elif kind == "date":
                fields[4] = "2024-13-45T99:00:00Z"
            elif kind == "columns":
                fields = fields[:4]
            elif kind == "null_id":
                fields[0] = ""
            elif kind == "overflow":
                fields[2] = "12345678901.00"
            if kind is None:
                truth["good"][oid] = {
                    "customer_id": cid, "amount": amount, "status": status,
                    "ordered_at": fmt_ts(ts), "note": None if note in ("", "NULL") else note,
                }
            else:
                truth["bad"][oid] = kind
            out.append((oid, kind, fields))
        return out

    def encode(fields, kind):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="")
        w.writerow(fields)
        line = buf.getvalue()
        if kind == "quote":
            # An unterminated quote: it runs to the end of the line; the record is malformed.
            line = line + ',"unterminated'
        return line

    def write(path, n, eol="\n", compress=None):
        lines = ["order_id,customer_id,amount,status,ordered_at,note"]
        offsets = {}
        text = ""
        body = rows(n)
        for oid, kind, fields in body:
            lines.append(encode(fields, kind))
        data = eol.join(lines) + eol
        raw = data.encode()
        if compress == "gz":
            blob = gzip.compress(raw, mtime=0)
        elif compress == "zst":
            blob = zstandard.ZstdCompressor().compress(raw)
        else:
            blob = raw
        with open(path, "wb") as f:
            f.write(blob)
        truth["files"][os.path.relpath(path, f"{root}/in")] = {"compressed": compress is not None, "eol": eol}

    write(f"{root}/in/big/orders-a.csv", 6000)
    write(f"{root}/in/big/orders-crlf.csv", 2500, eol="\r\n")
    write(f"{root}/in/big/orders-b.csv.gz", 2000, compress="gz")
    write(f"{root}/in/big/orders-c.csv.zst", 1500, compress="zst")
    for i in range(7):
        write(f"{root}/in/small/part-{i}.csv", 150)
    # A header-only object and an empty one: no records, no errors.
    with open(f"{root}/in/small/header-only.csv", "w") as f:
        f.write("order_id,customer_id,amount,status,ordered_at,note\n")
    open(f"{root}/in/small/empty.csv", "w").close()
    # Hidden and marker files are not input.
    open(f"{root}/in/_SUCCESS", "w").close()
    with open(f"{root}/job.yaml", "w") as f:
        f.write(SPEC.format(root=root))
    with open(f"{root}/truth.json", "w") as f:
        json.dump(truth, f)
    print(f"generated {len(truth['good'])} good and {len(truth['bad'])} bad rows")


def fail(msg):
    print("CHECK FAILED: " + msg, file=sys.stderr)
    sys.exit(1)


def check(root):
    truth = json.load(open(f"{root}/truth.json"))
    good = {int(k): v for k, v in truth["good"].items()}
    bad = {int(k): v for k, v in truth["bad"].items()}
    regions = truth["regions"]
    jobs = os.listdir(f"{root}/work/jobs")
    if len(jobs) != 1:
        fail(f"expected one job, found {jobs}")
    job_dir = f"{root}/work/jobs/{jobs[0]}"
    m = json.load(open(f"{job_dir}/_manifest.json"))
    if m["outcome"] != "succeeded" or not os.path.exists(f"{job_dir}/_SUCCESS"):
        fail(f"job did not succeed: {m.get('problems')}")
    kept = {k: v for k, v in good.items() if v["status"] != "CANCELLED"}
    c = m["counts"]
    expect = {"read": len(good) + len(bad), "rejected": len(bad), "valid": len(good), "written": len(kept)}
    if {k: c[k] for k in expect} != expect:
        fail(f"counts {c} != {expect}")

    # Output: every listed file, read by pyarrow; nothing unlisted under the output.
    listed = {f["key"] for f in m["files"]}
    on_disk = set()
    for d, _, files in os.walk(f"{root}/out"):
        for n in files:
            on_disk.add(os.path.relpath(os.path.join(d, n), f"{root}/out"))
    if on_disk != listed:
        fail(f"files on disk and in the manifest differ: {sorted(on_disk ^ listed)[:5]}")
    seen = {}
    for f in m["files"]:
        t = pq.read_table(f"{root}/out/{f['key']}")
        if t.num_rows != f["rows"]:
            fail(f"{f['key']}: {t.num_rows} rows, manifest says {f['rows']}")
        month = f["key"].split("/")[0]
        if not month.startswith("order_month="):
            fail(f"unexpected partition path {f['key']}")
        month = month.split("=", 1)[1]
        for r in t.to_pylist():
            oid = r["order_id"]
            if oid in seen:
                fail(f"order {oid} written twice ({seen[oid]} and {f['key']})")
            seen[oid] = f["key"]
            e = kept.get(oid)
            if e is None:
                fail(f"order {oid} should not be in the output (bad: {bad.get(oid)})")
            ts = r["ordered_at"]
            got = {
                "customer_id": r["customer_id"], "amount": str(r["amount"]), "status": r["status"],
                "ordered_at": fmt_ts(ts), "note": r["note"],
            }
            if got != e:
                fail(f"order {oid}: {got} != {e}")
            if r["region"] != regions[e["customer_id"]]:
                fail(f"order {oid}: region {r['region']}")
            if month != ts.strftime("%Y-%m-01"):
                fail(f"order {oid} in partition {month}, ordered {ts}")
            if ts.tzinfo is None or r["amount"].as_tuple().exponent != -2:
                fail(f"order {oid}: types lost (tz {ts.tzinfo}, amount {r['amount']!r})")
    missing = set(kept) - set(seen)
    if missing:
        fail(f"{len(missing)} orders missing, e.g. {sorted(missing)[:5]}")

    # Rejects: each bad row once, with a rule and coordinates that point at its bytes.
    rejected = {}
    for rf in m["rejects"]:
        for line in open(f"{root}/rejects/{rf['key']}", encoding="utf-8"):
            rj = json.loads(line)
            first = rj["raw"].split(",")[0]
            oid = int(first) if first.isdigit() else None
            if oid is None:
                # An empty order id: find it by the record's bytes.
                oid = ("null_id", rj["object"], rj.get("byte_offset"), rj.get("decompressed_offset"))
            if oid in rejected:
                fail(f"reject {oid} twice")
            rejected[oid] = rj
            for k in ("rule", "message", "object", "raw"):
                if rj.get(k) in (None, ""):
                    fail(f"reject without {k}: {rj}")
            # The line is known unless its chunk started inside a plain object (the
            # offset then locates it; counting lines would re-read the object).
            if rj.get("line") is None and not (rj.get("byte_offset") or 0) > 0:
                fail(f"reject without line or offset into the object: {rj}")
            meta = truth["files"][rj["object"]]
            if meta["compressed"]:
                if rj.get("decompressed_offset") is None:
                    fail(f"compressed reject without decompressed_offset: {rj}")
            else:
                raw = open(f"{root}/in/{rj['object']}", "rb").read()
                off = rj["byte_offset"]
                end = raw.index(b"\n", off)
                source = raw[off:end].rstrip(b"\r").decode()
                if source != rj["raw"]:
                    fail(f"reject coordinates do not point at its record: {source!r} != {rj['raw']!r}")
                want_line = raw[:off].count(b"\n") + 1
                if rj.get("line") is not None and want_line != rj["line"]:
                    fail(f"reject line {rj['line']} != {want_line}")
    ids = {k for k in rejected if isinstance(k, int)}
    nulls = [k for k in rejected if not isinstance(k, int)]
    want_ids = {k for k, v in bad.items() if v != "null_id"}
    want_nulls = sum(1 for v in bad.values() if v == "null_id")
    if ids != want_ids or len(nulls) != want_nulls:
        fail(f"rejected ids differ: extra {sorted(ids - want_ids)[:5]}, missing {sorted(want_ids - ids)[:5]}, nulls {len(nulls)}/{want_nulls}")

    # Aggregates, recomputed from the truth with exact decimals.
    groups = collections.defaultdict(lambda: {"orders": 0, "revenue": decimal.Decimal(0), "min": None, "max": None})
    for oid, e in kept.items():
        g = groups[(regions[e["customer_id"]], e["status"])]
        g["orders"] += 1
        g["revenue"] += decimal.Decimal(e["amount"])
        g["min"] = min(g["min"] or e["ordered_at"], e["ordered_at"])
        g["max"] = max(g["max"] or e["ordered_at"], e["ordered_at"])
    rows = json.load(open(f"{job_dir}/aggregates.json"))
    table = pq.read_table(f"{job_dir}/aggregates.parquet").to_pylist()
    if len(rows) != len(groups) or len(table) != len(groups):
        fail(f"{len(rows)} aggregate rows, expected {len(groups)}")
    for r, t in zip(rows, table):
        g = groups.get((r["region"], r["status"]))
        if g is None:
            fail(f"unexpected group {r}")
        avg = (g["revenue"] / g["orders"]).quantize(decimal.Decimal("0.000001"), rounding=decimal.ROUND_HALF_UP)
        if r["orders"] != g["orders"] or decimal.Decimal(r["revenue"]) != g["revenue"] or decimal.Decimal(r["avg_amount"]) != avg:
            fail(f"aggregate {r} != {g} (avg {avg})")
        if t["orders"] != g["orders"] or t["revenue"] != g["revenue"] or t["avg_amount"] != avg:
            fail(f"aggregates.parquet row {t} != {g}")
        if fmt_ts(t["first_order"]) != g["min"] or fmt_ts(t["last_order"]) != g["max"]:
            fail(f"min/max {t['first_order']} {t['last_order']} != {g['min']} {g['max']}")
    print(f"OK: {len(seen)} rows compared value by value, {len(rejected)} rejects located, {len(groups)} aggregate groups")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "generate":
        generate(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 7)
    elif len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    else:
        print(__doc__)
        sys.exit(2)
