#!/usr/bin/env python3
"""End to end through the real Lambda function binaries, on moto.

    lambda_e2e.py MOTO_URL BIN_DIR CARGO_LAMBDA WORKDIR

objects uploaded to the emulated S3 → S3 event notification delivered to an SQS queue →
planner binary (with that event) → chunk queue → the worker binary driven through the
Lambda Runtime API (cargo-lambda's emulator) by a small poller standing in for the event
source mapping → reducer binary (status until complete, compact when due as the Compact step does, then finalize) → manifest checked
and the Parquet read back from the emulated S3 and compared, byte for byte, with the same
job run by `fanout run` on the embedded default.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import boto3

MOTO, BIN, CARGO_LAMBDA, WORK = sys.argv[1:5]
REGION = "us-east-1"
# cargo-lambda reads the workspace manifest even when it only serves the APIs.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
s3 = boto3.client("s3", endpoint_url=MOTO, region_name=REGION)
sqs = boto3.client("sqs", endpoint_url=MOTO, region_name=REGION)
procs = []


def fail(msg):
    print("LAMBDA E2E FAILED: " + msg, file=sys.stderr)
    sys.exit(1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def make_input(root):
    os.makedirs(f"{root}/in/2026", exist_ok=True)
    for f in range(3):
        lines = ["id,region,amount"]
        for i in range(3000):
            oid = f * 10000 + i
            amount = "n/a" if oid % 499 == 0 else f"{oid % 500}.{oid % 100:02d}"
            lines.append(f"{oid},{['EU', 'NA', 'APAC'][oid % 3]},{amount}")
        with open(f"{root}/in/2026/orders {f}.csv", "w") as fh:
            fh.write("\n".join(lines) + "\n")


SPEC = """name: lambdajob
input:
  location: {input}
  format: csv
  schema:
    - {{ name: id, type: int64, nullable: false }}
    - {{ name: region, type: utf8 }}
    - {{ name: amount, type: "decimal(10,2)" }}
chunking: {{ target_size: 16KiB }}
transform:
  sql: SELECT id, amount, region, amount * 2 AS doubled FROM input WHERE amount > 10
output: {{ location: {output}, partition_by: [region], compression: zstd(1) }}
rejects: {{ location: {rejects}, max_ratio: 0.01 }}
aggregate: {{ group_by: [region], measures: [{{ name: n, fn: count }}, {{ name: total, fn: sum, column: amount }}] }}
queue: {{ max_receive_count: 3 }}
"""


def runtime_emulator(env):
    """cargo-lambda's Runtime + Invoke API only; the functions are our built binaries."""
    port = free_port()
    log = open(f"{WORK}/cargo-lambda.log", "w")
    p = subprocess.Popen([CARGO_LAMBDA, "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", str(port), "--timeout", "900"],
                         stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    procs.append(p)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return port
        except OSError:
            time.sleep(0.1)
    fail("cargo lambda watch did not start: " + open(f"{WORK}/cargo-lambda.log").read())


def start_function(name, port, env):
    e = dict(env)
    e.update({
        # cargo-lambda routes a function's Runtime API calls by the path after /.rt/.
        "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{port}/.rt/{name}",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"e2e-{name}",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
    })
    log = open(f"{WORK}/{name}.log", "w")
    p = subprocess.Popen([f"{BIN}/{name}"], stdout=log, stderr=subprocess.STDOUT, env=e)
    procs.append(p)
    return p


def invoke(port, name, payload):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/2015-03-31/functions/{name}/invocations",
                                 data=json.dumps(payload).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        fail(f"{name} returned HTTP {e.code}: {e.read().decode()[:2000]}")


def main():
    os.makedirs(WORK, exist_ok=True)
    make_input(WORK)
    for b in ("e2e-input", "e2e-output", "e2e-work"):
        s3.create_bucket(Bucket=b)
    events_q = sqs.create_queue(QueueName="e2e-events")["QueueUrl"]
    events_arn = sqs.get_queue_attributes(QueueUrl=events_q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    dlq = sqs.create_queue(QueueName="e2e-chunks-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    chunks = sqs.create_queue(QueueName="e2e-chunks", Attributes={
        "VisibilityTimeout": "60",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})})["QueueUrl"]
    s3.put_bucket_notification_configuration(Bucket="e2e-input", NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": events_arn, "Events": ["s3:ObjectCreated:*"],
                                 "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "raw/"}]}}}]})
    spec = SPEC.format(input="s3://e2e-input/raw/", output="s3://e2e-output/orders/", rejects="s3://e2e-output/rejects/")
    s3.put_object(Bucket="e2e-work", Key="specs/default.yaml", Body=spec.encode())

    env = dict(os.environ)
    env.update({
        "FANOUT_QUEUE_URL": chunks, "FANOUT_SPEC": "s3://e2e-work/specs/default.yaml", "FANOUT_WORK": "s3://e2e-work/",
        "FANOUT_MAX_RECEIVE_COUNT": "3", "FANOUT_METRICS_NAMESPACE": "FanoutE2E", "RUST_LOG": "info",
    })
    port = runtime_emulator(env)
    # Upload: one object per event. Plan over the last event's object only is not the
    # point here; the spec restricts each job to the objects its event names, so upload
    # everything first and plan one job from a batch of the delivered events.
    for name in sorted(os.listdir(f"{WORK}/in/2026")):
        s3.upload_file(f"{WORK}/in/2026/{name}", "e2e-input", f"raw/2026/{name}")
    records = []
    deadline = time.time() + 30
    while len(records) < 3 and time.time() < deadline:
        for m in sqs.receive_message(QueueUrl=events_q, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            body = json.loads(m["Body"])
            records.extend(body.get("Records", []))
            sqs.delete_message(QueueUrl=events_q, ReceiptHandle=m["ReceiptHandle"])
    if len(records) != 3:
        fail(f"expected 3 S3 event records, got {len(records)}")
    if not any("%20" in r["s3"]["object"]["key"] or "+" in r["s3"]["object"]["key"] for r in records):
        fail("the event keys should be URL-encoded (spaces in the names)")

    for f in ("planner", "worker", "reducer"):
        start_function(f, port, env)
    planned = invoke(port, "planner", {"Records": records})
    job_id, work = planned["job_id"], planned["work"]
    if planned["objects"] != 3 or planned["chunks"] < 4:
        fail(f"unexpected plan {planned}")

    # The event source mapping: batches of up to 10, partial batch responses.
    invocations = 0
    compactions = []
    give_up = time.time() + 240
    while True:
        if time.time() > give_up:
            fail("the job did not settle within 240 s; see the function logs in " + WORK)
        msgs = sqs.receive_message(QueueUrl=chunks, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   AttributeNames=["All"]).get("Messages", [])
        if not msgs:
            status = invoke(port, "reducer", {"action": "status", "job_id": job_id, "work": work})
            if status.get("compaction_due"):
                # The state machine's Compact step: the bins go on the chunk queue.
                started = invoke(port, "reducer", {"action": "compact", "job_id": job_id, "work": work})
                if "errorType" in started or started["bins"] < 1 or started["sent"] != started["bins"]:
                    fail(f"compact: {started}")
                compactions.append(started)
                continue
            if status["settled"]:
                break
            continue
        event = {"Records": [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:e2e-chunks",
            "awsRegion": REGION} for m in msgs]}
        resp = invoke(port, "worker", event)
        invocations += 1
        failed = {f["itemIdentifier"] for f in resp["batchItemFailures"]}
        for m in msgs:
            if m["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=chunks, ReceiptHandle=m["ReceiptHandle"])
    if not status["complete"] or len(compactions) != 1 or status["bins_committed"] != compactions[0]["bins"]:
        fail(f"job not complete, or not compacted once: {status} {compactions}")
    final = invoke(port, "reducer", {"action": "finalize", "job_id": job_id, "work": work})
    if final["outcome"] != "succeeded":
        fail(f"finalize: {final}")

    manifest = json.loads(s3.get_object(Bucket="e2e-work", Key=f"jobs/{job_id}/_manifest.json")["Body"].read())
    counts = manifest["counts"]
    if counts["read"] != 9000 or counts["rejected"] != sum(1 for f in range(3) for i in range(3000) if (f * 10000 + i) % 499 == 0):
        fail(f"counts {counts}")
    s3.head_object(Bucket="e2e-work", Key=f"jobs/{job_id}/_SUCCESS")
    remote = sorted(s3.get_object(Bucket="e2e-output", Key="orders/" + f["key"])["Body"].read() for f in manifest["files"])

    # The same job on the embedded default.
    local_spec = SPEC.format(input=f"{WORK}/in/", output=f"{WORK}/out/", rejects=f"{WORK}/rejects/") + f"work: {WORK}/work/\n"
    with open(f"{WORK}/local.yaml", "w") as fh:
        fh.write(local_spec)
    out = subprocess.run([f"{BIN}/fanout", "run", f"{WORK}/local.yaml"], capture_output=True, text=True)
    if out.returncode != 0:
        fail("fanout run: " + out.stdout + out.stderr)
    local_job = [d for d in os.listdir(f"{WORK}/work/jobs")][0]
    local_manifest = json.load(open(f"{WORK}/work/jobs/{local_job}/_manifest.json"))
    local = sorted(open(f"{WORK}/out/{f['key']}", "rb").read() for f in local_manifest["files"])
    if local_manifest["counts"] != counts:
        fail(f"counts differ: local {local_manifest['counts']} lambda {counts}")
    if local != remote:
        fail(f"Parquet differs between Lambda ({len(remote)} files) and the embedded run ({len(local)} files)")
    # The manifest references the aggregate table; the two tables must be the same bytes.
    remote_agg = s3.get_object(Bucket="e2e-work", Key=manifest["aggregate"]["parquet"]["key"])["Body"].read()
    local_agg = open(f"{WORK}/work/{local_manifest['aggregate']['parquet']['key']}", "rb").read()
    if local_agg != remote_agg or local_manifest["aggregate"]["spec"] != manifest["aggregate"]["spec"]:
        fail("aggregates differ")
    print(f"OK: {planned['chunks']} chunks through {invocations} worker invocations; "
          f"{len(remote)} Parquet files byte-identical to the embedded run")


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
