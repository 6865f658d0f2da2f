#!/usr/bin/env python3
"""The event-driven mode end to end through the real Lambda binaries, on moto.

    lambda_events_e2e.py MOTO_URL BIN_DIR CARGO_LAMBDA WORKDIR

Uploads to the emulated S3 → the bucket's EventBridge notifications → an EventBridge rule
("Object Created", input bucket, prefix raw/) → the arrivals SQS queue (moto delivers this
chain itself: the queue receives the EventBridge event JSON as AWS sends it, the shape of
events/eventbridge-object-created.json) → the planner binary invoked with the schedule's
input ({"drain": "arrivals", "drain_id": …}, events/sfn-drain-arrivals.json) → chunk
queue → the worker binary (a poller standing in for the event source mapping) → the
reducer binary (status, finalize). Every input row is then counted, with pyarrow, in the
files of every succeeded manifest: each exactly once, through a duplicated event, a
replayed one, a second drain of new objects and drains of nothing.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
import pyarrow.parquet as pq

MOTO, BIN, CARGO_LAMBDA, WORK = sys.argv[1:5]
REGION = "us-east-1"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = 700
kw = dict(endpoint_url=MOTO, region_name=REGION)
s3, sqs, events = boto3.client("s3", **kw), boto3.client("sqs", **kw), boto3.client("events", **kw)
procs = []

SPEC = """name: arrivals
input:
  location: s3://ev-input/raw/
  include: ["*.csv"]
  format: csv
  schema:
    - { name: id, type: int64, nullable: false }
    - { name: object, type: utf8 }
chunking: { target_size: 8KiB }
output: { location: s3://ev-output/rows/, compression: zstd(1) }
rejects: { location: s3://ev-output/rejects/ }
"""


def fail(msg):
    print("EVENT MODE E2E FAILED: " + msg, file=sys.stderr)
    sys.exit(1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_lambda_apis(env):
    port = free_port()
    log = open(f"{WORK}/cargo-lambda.log", "w")
    procs.append(subprocess.Popen(
        [CARGO_LAMBDA, "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", str(port), "--timeout", "900"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO))
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        fail("cargo lambda watch did not start: " + open(f"{WORK}/cargo-lambda.log").read())
    for name in ("planner", "worker", "reducer"):
        e = dict(env, AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{port}/.rt/{name}", AWS_LAMBDA_FUNCTION_NAME=name,
                 AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1024", AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
                 AWS_LAMBDA_LOG_STREAM_NAME=f"e2e-{name}", AWS_LAMBDA_LOG_GROUP_NAME=f"/aws/lambda/{name}")
        procs.append(subprocess.Popen([f"{BIN}/{name}"], stdout=open(f"{WORK}/{name}.log", "w"), stderr=subprocess.STDOUT, env=e))
    return port


def invoke(port, name, payload):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/2015-03-31/functions/{name}/invocations",
                                 data=json.dumps(payload).encode(), method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        fail(f"{name} returned HTTP {e.code}: {e.read().decode()[:2000]}; logs in {WORK}")


def queue(name, **attributes):
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def upload(n, key):
    body = "id,object\n" + "".join(f"{n * 1000 + i},{key}\n" for i in range(ROWS))
    s3.put_object(Bucket="ev-input", Key=key, Body=body.encode())


def waiting(url):
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"])


def await_arrivals(url, count):
    deadline = time.time() + 30
    while waiting(url) < count:
        if time.time() > deadline:
            fail(f"expected {count} arrivals, {waiting(url)} on the queue")
        time.sleep(0.2)


def peek_events(url):
    """The event bodies on the arrivals queue, left there (visibility 0)."""
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
    return {json.loads(m["Body"])["detail"]["object"]["key"]: m["Body"] for m in msgs}


def run_job(port, chunks, planned):
    job_id, work = planned["job_id"], planned["work"]
    give_up = time.time() + 240
    while True:
        if time.time() > give_up:
            fail(f"job {job_id} did not settle within 240 s; logs in {WORK}")
        msgs = sqs.receive_message(QueueUrl=chunks, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]).get("Messages", [])
        if not msgs:
            status = invoke(port, "reducer", {"action": "status", "job_id": job_id, "work": work})
            if status.get("compaction_due"):
                started = invoke(port, "reducer", {"action": "compact", "job_id": job_id, "work": work})
                if "errorType" in started:
                    fail(f"compact: {started}")
                continue
            if status["settled"]:
                break
            continue
        event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                              "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                              "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ev-chunks",
                              "awsRegion": REGION} for m in msgs]}
        failed = {f["itemIdentifier"] for f in invoke(port, "worker", event)["batchItemFailures"]}
        for m in msgs:
            if m["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=chunks, ReceiptHandle=m["ReceiptHandle"])
    final = invoke(port, "reducer", {"action": "finalize", "job_id": job_id, "work": work})
    if final["outcome"] != "succeeded" or not status["complete"]:
        fail(f"job {job_id}: {status} {final}")


def jobs():
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="ev-work", Prefix="jobs/") for o in p.get("Contents", [])]
    return sorted({k.split("/")[1] for k in keys})


def committed_rows():
    """id -> times present, over the files of every succeeded manifest (read with pyarrow)."""
    counts = {}
    for job in jobs():
        try:
            manifest = json.loads(s3.get_object(Bucket="ev-work", Key=f"jobs/{job}/_manifest.json")["Body"].read())
        except s3.exceptions.NoSuchKey:
            continue
        if manifest["outcome"] != "succeeded":
            continue
        for f in manifest["files"]:
            path = f"{WORK}/part.parquet"
            with open(path, "wb") as fh:
                fh.write(s3.get_object(Bucket="ev-output", Key="rows/" + f["key"])["Body"].read())
            for i in pq.read_table(path).column("id").to_pylist():
                counts[i] = counts.get(i, 0) + 1
    return counts


def check_exactly_once(objects):
    got = committed_rows()
    want = {n * 1000 + i for n in objects for i in range(ROWS)}
    doubled = sorted(i for i, c in got.items() if c > 1)[:5]
    if doubled or set(got) != want:
        fail(f"rows: {len(got)} distinct, {len(want)} expected; doubled {doubled}; missing {sorted(want - set(got))[:5]}; extra {sorted(set(got) - want)[:5]}")
    return len(want)


def drain(port, tick):
    return invoke(port, "planner", {"drain": "arrivals", "drain_id": f"2026-12-01T10:{tick:02d}:00Z"})


def main():
    os.makedirs(WORK, exist_ok=True)
    for b in ("ev-input", "ev-output", "ev-work"):
        s3.create_bucket(Bucket=b)
    _, arrivals_dlq_arn = queue("ev-arrivals-dlq")
    arrivals, arrivals_arn = queue("ev-arrivals", VisibilityTimeout="960",
                                   RedrivePolicy=json.dumps({"deadLetterTargetArn": arrivals_dlq_arn, "maxReceiveCount": "5"}))
    _, chunks_dlq_arn = queue("ev-chunks-dlq")
    chunks, _ = queue("ev-chunks", VisibilityTimeout="60", RedrivePolicy=json.dumps({"deadLetterTargetArn": chunks_dlq_arn, "maxReceiveCount": "3"}))
    # As the template: the bucket's EventBridge notifications, a rule, the queue as target.
    s3.put_bucket_notification_configuration(Bucket="ev-input", NotificationConfiguration={"EventBridgeConfiguration": {}})
    events.put_rule(Name="ev-arrivals", EventPattern=json.dumps({
        "source": ["aws.s3"], "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": ["ev-input"]}, "object": {"key": [{"prefix": "raw/"}]}}}))
    events.put_targets(Rule="ev-arrivals", Targets=[{"Id": "arrivals", "Arn": arrivals_arn}])
    s3.put_object(Bucket="ev-work", Key="specs/default.yaml", Body=SPEC.encode())

    env = dict(os.environ, FANOUT_QUEUE_URL=chunks, FANOUT_SPEC="s3://ev-work/specs/default.yaml", FANOUT_WORK="s3://ev-work/",
               FANOUT_ARRIVALS_QUEUE_URL=arrivals, FANOUT_ARRIVALS_MAX_OBJECTS="100", FANOUT_MAX_RECEIVE_COUNT="3",
               FANOUT_METRICS_NAMESPACE="FanoutE2E", RUST_LOG="info")
    port = start_lambda_apis(env)

    # 1. Three uploads (one outside raw/: no event), one event duplicated.
    upload(1, "raw/2026/a.csv")
    upload(2, "raw/2026/b b.csv")
    upload(3, "raw/2026/c.csv")
    upload(9, "elsewhere/z.csv")
    await_arrivals(arrivals, 3)
    bodies = peek_events(arrivals)
    if sorted(bodies) != ["raw/2026/a.csv", "raw/2026/b b.csv", "raw/2026/c.csv"]:
        fail(f"arrivals {sorted(bodies)}")
    sqs.send_message(QueueUrl=arrivals, MessageBody=bodies["raw/2026/a.csv"])
    first = drain(port, 5)
    if first.get("objects") != 3 or first["drain"]["duplicates"] != 1 or first["drain"]["messages"] != 4:
        fail(f"first drain {first}")
    if waiting(arrivals) != 0:
        fail("the first drain left messages")
    run_job(port, chunks, first)
    rows = check_exactly_once([1, 2, 3])

    # 2. A replayed event of a (ingested) and a new object d: a second job of d only.
    upload(4, "raw/2026/d.csv")
    await_arrivals(arrivals, 1)
    sqs.send_message(QueueUrl=arrivals, MessageBody=bodies["raw/2026/a.csv"])
    second = drain(port, 10)
    if second.get("objects") != 1 or second["drain"]["duplicates"] != 1 or second["job_id"] == first["job_id"]:
        fail(f"second drain {second}")
    run_job(port, chunks, second)
    rows = check_exactly_once([1, 2, 3, 4])

    # 3. Only a replay, then nothing at all: no job either time.
    sqs.send_message(QueueUrl=arrivals, MessageBody=bodies["raw/2026/b b.csv"])
    before = jobs()
    third = drain(port, 15)
    fourth = drain(port, 20)
    if not (third.get("nothing_planned") and third["drain"]["duplicates"] == 1):
        fail(f"a drain of a replay planned {third}")
    if not (fourth.get("nothing_planned") and fourth["drain"]["messages"] == 0 and "no object arrived" in fourth["reason"]):
        fail(f"a drain of nothing answered {fourth}")
    if jobs() != before or len(before) != 2:
        fail(f"jobs {before} -> {jobs()}")
    print(f"OK: 2 drained jobs ({first['chunks']} + {second['chunks']} chunks), {rows} rows each exactly once "
          f"through a duplicated and 2 replayed events; drains of a replay and of nothing planned no job: "
          f"{fourth['reason']}")


try:
    main()
finally:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
