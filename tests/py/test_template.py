"""Properties of template.yaml that the linters do not check: least-privilege IAM, the
queue/worker timing rule, the Lambda contract (environment, event source), storage
settings, alarms and the dashboard.

Reads the template with our own loader (cfn_template.load); needs PyYAML only.
"""
import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cfn_template as ct  # noqa: E402
from cfn_template import as_list, branches  # noqa: E402

T = ct.load()
RES = T["Resources"]
PARAMS = T["Parameters"]
BUCKETS = ("InputBucket", "OutputBucket", "RejectsBucket", "WorkBucket")
QUEUES = ("ChunkQueue", "ChunkDeadLetterQueue", "ArrivalsQueue", "ArrivalsDeadLetterQueue")
FUNCTIONS = {"PlannerFunction": "planner", "WorkerFunction": "worker", "ReducerFunction": "reducer"}
OBJECT_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
BUCKET_ACTIONS = {"s3:ListBucket"}
LAMBDA_ERRORS = {"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException", "Lambda.TooManyRequestsException"}
# Every metric fanout emits (docs/metrics.md): the dashboard shows each one per job.
METRICS = [
    "RowsRead", "RowsRejected", "RowsWritten", "BytesRead", "BytesWritten",
    "ChunksCommitted", "ChunksFailed", "ChunksDuplicate", "ChunkDuration", "FilesWritten",
    "JobCost", "JobLambdaGbSeconds", "JobDuration",
    "BinsCommitted", "BinsFailed", "BinDuration",
]


def default(name):
    return PARAMS[name]["Default"]


def resource_name(resource):
    """A statement's resource reduced to 'Logical', 'Logical/prefix*' or '*'; anything else
    (a hand-written ARN, a wildcard pattern) is refused: it is not scoped to a resource
    of this stack."""
    if resource == "*":
        return "*"
    if isinstance(resource, dict):
        if "Fn::GetAtt" in resource and resource["Fn::GetAtt"][1] == "Arn":
            return resource["Fn::GetAtt"][0]
        if "Ref" in resource:
            return resource["Ref"]
        if "Fn::Sub" in resource and isinstance(resource["Fn::Sub"], str):
            # The Glue catalog, the one database and table the parameters name.
            g = re.fullmatch(
                r"arn:\$\{AWS::Partition\}:glue:\$\{AWS::Region\}:\$\{AWS::AccountId\}:(catalog|database/\$\{GlueDatabase\}|table/\$\{GlueDatabase\}/\$\{GlueTable\})",
                resource["Fn::Sub"],
            )
            if g:
                return "glue:" + g.group(1).replace("${", "").replace("}", "")
            m = re.fullmatch(r"\$\{([A-Za-z0-9]+)\.Arn\}(/[A-Za-z0-9_/-]*\*?)", resource["Fn::Sub"])
            if m:
                return m.group(1) + m.group(2)
    raise AssertionError(f"resource not scoped to a resource of this stack: {resource!r}")


def statements(document):
    return [s for st in as_list(document["Statement"]) for s in branches(st)]


def identity_policies():
    """(owner, statement) of every role and IAM policy statement."""
    out = []
    for name, r in ct.resources(T, "AWS::IAM::Role").items():
        for p in r["Properties"].get("Policies", []):
            out += [(name, s) for s in statements(p["PolicyDocument"])]
    for name, r in ct.resources(T, "AWS::IAM::Policy").items():
        out += [(name, s) for s in statements(r["Properties"]["PolicyDocument"])]
    return out


def resource_policies():
    out = []
    for type_, key in (("AWS::S3::BucketPolicy", "PolicyDocument"), ("AWS::SQS::QueuePolicy", "PolicyDocument"), ("AWS::KMS::Key", "KeyPolicy")):
        for name, r in ct.resources(T, type_).items():
            out += [(name, s) for s in statements(r["Properties"][key])]
    return out


def grants(role):
    """{(action, resource)} of one role's inline policies."""
    out = set()
    for owner, s in identity_policies():
        if owner == role:
            assert s["Effect"] == "Allow", (role, s)
            for a in as_list(s["Action"]):
                for r in as_list(s["Resource"]):
                    out.add((a, resource_name(r)))
    return out


def env(function):
    merged = dict(T["Globals"]["Function"]["Environment"]["Variables"])
    merged.update(RES[function]["Properties"].get("Environment", {}).get("Variables", {}))
    return merged


class IamTest(unittest.TestCase):
    def test_no_wildcard_actions(self):
        for owner, s in identity_policies():
            for a in as_list(s["Action"]):
                self.assertNotIn("*", a, f"{owner}: wildcard action {a} in an identity policy")
        for owner, s in resource_policies():
            for a in as_list(s["Action"]):
                if s["Effect"] == "Allow":
                    self.assertFalse(a == "*" or a.endswith(":*"), f"{owner}: Allow of {a}")
                else:
                    # A Deny names the whole service on purpose: it must hold for every action.
                    self.assertTrue(a == "s3:*" or a == "sqs:*", f"{owner}: Deny of {a}")

    def test_star_resources_only_where_aws_offers_nothing_narrower(self):
        listed = T["Metadata"]["WildcardResources"]
        seen = set()
        for owner, s in identity_policies() + resource_policies():
            if "*" in as_list(s.get("Resource", [])):
                self.assertIn(s.get("Sid"), listed, f"{owner}: Resource '*' in a statement not justified in Metadata.WildcardResources")
                seen.add(s["Sid"])
        self.assertEqual(set(listed), seen, "Metadata.WildcardResources lists statements that no longer exist")

    def test_every_resource_is_a_resource_of_this_stack(self):
        for owner, s in identity_policies():
            for r in as_list(s["Resource"]):
                resource_name(r)  # raises when not scoped

    def test_s3_statements_are_scoped_to_a_bucket_and_prefix(self):
        for owner, s in identity_policies():
            actions = set(as_list(s["Action"]))
            s3 = {a for a in actions if a.startswith("s3:")}
            if not s3:
                continue
            self.assertTrue(s3 <= OBJECT_ACTIONS | BUCKET_ACTIONS, f"{owner}: unexpected S3 actions {s3}")
            self.assertFalse(s3 & OBJECT_ACTIONS and s3 & BUCKET_ACTIONS, f"{owner}: bucket and object actions in one statement")
            for r in map(resource_name, as_list(s["Resource"])):
                bucket, _, prefix = r.partition("/")
                self.assertIn(bucket, BUCKETS, f"{owner}: S3 statement on {r}")
                if s3 & OBJECT_ACTIONS:
                    self.assertTrue(prefix.endswith("*"), f"{owner}: object actions on the bucket ARN {r}")
                    if bucket == "WorkBucket":
                        self.assertIn(prefix, ("jobs/*", "specs/*", "lookups/*", "arrivals/*", "ledger/*"), f"{owner}: work bucket objects without a prefix: {r}")
                else:
                    self.assertEqual("", prefix, f"{owner}: ListBucket on an object ARN {r}")
                    if bucket == "WorkBucket":
                        # A prefix condition would make GET/HEAD of a missing record 403, not 404.
                        self.assertIsNone(s.get("Condition"), f"{owner}: work ListBucket must not carry an s3:prefix condition")

    def test_sqs_statements_are_scoped_to_the_queue(self):
        for owner, s in identity_policies():
            if any(a.startswith("sqs:") for a in as_list(s["Action"])):
                for r in map(resource_name, as_list(s["Resource"])):
                    self.assertIn(r, QUEUES, f"{owner}: SQS statement on {r}")

    def test_put_metric_data_is_limited_to_the_namespace(self):
        found = 0
        for owner, s in identity_policies():
            if "cloudwatch:PutMetricData" in as_list(s["Action"]):
                found += 1
                self.assertEqual(["cloudwatch:PutMetricData"], as_list(s["Action"]), owner)
                self.assertEqual({"StringEquals": {"cloudwatch:namespace": {"Ref": "MetricsNamespace"}}}, s.get("Condition"), owner)
        self.assertEqual(3, found)

    def test_planner_grants(self):
        self.assertEqual(
            {
                ("logs:CreateLogStream", "PlannerLogGroup"), ("logs:PutLogEvents", "PlannerLogGroup"),
                ("s3:ListBucket", "InputBucket"), ("s3:GetObject", "InputBucket/*"),
                ("s3:GetObject", "WorkBucket/specs/*"),
                ("s3:GetObject", "WorkBucket/jobs/*"), ("s3:PutObject", "WorkBucket/jobs/*"),
                # An upload-started job leaves out what the ingestion ledger holds.
                ("s3:GetObject", "WorkBucket/ledger/*"),
                ("s3:ListBucket", "WorkBucket"),
                ("sqs:SendMessage", "ChunkQueue"),
                ("cloudwatch:PutMetricData", "*"),
            },
            grants("PlannerRole"),
        )

    def test_worker_grants(self):
        self.assertEqual(
            {
                ("logs:CreateLogStream", "WorkerLogGroup"), ("logs:PutLogEvents", "WorkerLogGroup"),
                ("s3:GetObject", "InputBucket/*"), ("s3:GetObject", "WorkBucket/lookups/*"),
                ("s3:PutObject", "OutputBucket/*"), ("s3:AbortMultipartUpload", "OutputBucket/*"),
                ("s3:PutObject", "RejectsBucket/*"), ("s3:AbortMultipartUpload", "RejectsBucket/*"),
                ("s3:GetObject", "WorkBucket/jobs/*"), ("s3:PutObject", "WorkBucket/jobs/*"),
                # Staged chunk files of a job with a catalog table are uploaded in parts.
                ("s3:AbortMultipartUpload", "WorkBucket/jobs/*"),
                # Without ListBucket a HeadObject of a missing commit record answers 403, not 404.
                ("s3:ListBucket", "WorkBucket"),
                ("sqs:ReceiveMessage", "ChunkQueue"), ("sqs:DeleteMessage", "ChunkQueue"),
                ("sqs:ChangeMessageVisibility", "ChunkQueue"), ("sqs:GetQueueAttributes", "ChunkQueue"),
                ("cloudwatch:PutMetricData", "*"),
            },
            grants("WorkerRole"),
        )

    def test_reducer_grants(self):
        self.assertEqual(
            {
                ("logs:CreateLogStream", "ReducerLogGroup"), ("logs:PutLogEvents", "ReducerLogGroup"),
                ("s3:ListBucket", "WorkBucket"),
                ("s3:GetObject", "WorkBucket/jobs/*"), ("s3:PutObject", "WorkBucket/jobs/*"), ("s3:DeleteObject", "WorkBucket/jobs/*"),
                # Finalize appends to the ingestion ledger (never deletes from it).
                ("s3:GetObject", "WorkBucket/ledger/*"), ("s3:PutObject", "WorkBucket/ledger/*"),
                # A job with no input rows plans its SQL, lookups included, for its aggregate's columns.
                ("s3:GetObject", "WorkBucket/lookups/*"),
                # Status reports the dead-letter queue's depth, and stranded chunks when the
                # chunk queue is empty beside it.
                ("sqs:GetQueueAttributes", "ChunkQueue"), ("sqs:GetQueueAttributes", "ChunkDeadLetterQueue"),
                # The Compact step queues the compaction stage's bins on the chunk queue.
                ("sqs:SendMessage", "ChunkQueue"),
                # Finalize HEADs every file the manifest lists (ListBucket: 404, not 403, for
                # a missing one) and publishes staged files (CopyObject into the output).
                ("s3:ListBucket", "OutputBucket"), ("s3:ListBucket", "RejectsBucket"),
                ("s3:GetObject", "OutputBucket/*"), ("s3:PutObject", "OutputBucket/*"),
                ("s3:GetObject", "RejectsBucket/*"),
                ("cloudwatch:PutMetricData", "*"),
            },
            grants("ReducerRole"),
        )

    def test_glue_grants_only_the_named_table_and_only_when_named(self):
        policy = RES["ReducerGluePolicy"]
        self.assertEqual("UseGlue", policy["Condition"])
        self.assertEqual([{"Ref": "ReducerRole"}], policy["Properties"]["Roles"])
        self.assertEqual(
            {
                (a, r)
                for a in ("glue:GetDatabase", "glue:GetTable", "glue:CreateTable", "glue:UpdateTable", "glue:BatchCreatePartition")
                for r in ("glue:catalog", "glue:database/GlueDatabase", "glue:table/GlueDatabase/GlueTable")
            },
            grants("ReducerGluePolicy"),
        )
        self.assertEqual("", default("GlueDatabase"))
        self.assertEqual("", default("GlueTable"))

    def test_state_machine_and_rule_grants(self):
        sm = grants("StateMachineRole")
        self.assertEqual({("lambda:InvokeFunction", "PlannerFunction"), ("lambda:InvokeFunction", "ReducerFunction")}, {g for g in sm if g[1] != "*"})
        self.assertTrue(all(a.startswith("logs:") for a, r in sm if r == "*"))
        self.assertEqual({("states:StartExecution", "JobStateMachine")}, grants("StartJobRole"))

    def test_kms_only_with_a_key(self):
        policy = RES["BucketKeyPolicy"]
        self.assertEqual("UseKms", policy["Condition"])
        self.assertEqual({"Fn::Not": [{"Fn::Equals": [{"Ref": "KmsKeyArn"}, ""]}]}, T["Conditions"]["UseKms"])
        self.assertEqual([{"Ref": "PlannerRole"}, {"Ref": "WorkerRole"}, {"Ref": "ReducerRole"}], policy["Properties"]["Roles"])
        self.assertEqual({("kms:Decrypt", "KmsKeyArn"), ("kms:GenerateDataKey", "KmsKeyArn")}, grants("BucketKeyPolicy"))
        for owner, s in identity_policies():
            if any(a.startswith("kms:") for a in as_list(s["Action"])):
                self.assertEqual("BucketKeyPolicy", owner)

    def test_each_function_has_its_own_role_and_log_group(self):
        for fn, short in FUNCTIONS.items():
            props = RES[fn]["Properties"]
            role = short.capitalize() + "Role"
            self.assertEqual({"Fn::GetAtt": [role, "Arn"]}, props["Role"], fn)
            self.assertEqual({"Ref": short.capitalize() + "LogGroup"}, props["LoggingConfig"]["LogGroup"], fn)
            trust = statements(RES[role]["Properties"]["AssumeRolePolicyDocument"])
            self.assertEqual([{"Service": "lambda.amazonaws.com"}], [s["Principal"] for s in trust], role)

    def test_resource_policies_deny_plain_http(self):
        for bucket in BUCKETS:
            policy = RES[bucket + "Policy"]["Properties"]
            self.assertEqual({"Ref": bucket}, policy["Bucket"])
            deny = [s for s in statements(policy["PolicyDocument"]) if s.get("Sid") == "DenyInsecureTransport"]
            self.assertEqual(1, len(deny), bucket)
            self.assertEqual("Deny", deny[0]["Effect"])
            self.assertEqual({"Bool": {"aws:SecureTransport": "false"}}, deny[0]["Condition"])
            self.assertEqual({bucket, bucket + "/*"}, {resource_name(r) for r in deny[0]["Resource"]})
        for policy, queues in (("ChunkQueuesPolicy", QUEUES[:2]), ("ArrivalsQueuePolicy", QUEUES[2:])):
            qp = RES[policy]["Properties"]
            self.assertEqual([{"Ref": q} for q in queues], qp["Queues"])
            (deny,) = [s for s in statements(qp["PolicyDocument"]) if s["Effect"] == "Deny"]
            self.assertEqual({"Bool": {"aws:SecureTransport": "false"}}, deny["Condition"], policy)
            self.assertEqual(set(queues), {resource_name(r) for r in deny["Resource"]}, policy)


class StorageTest(unittest.TestCase):
    def test_buckets_encrypted_private_and_kms_optional(self):
        for b in BUCKETS:
            props = RES[b]["Properties"]
            (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            cond, kms, s3 = rule["ServerSideEncryptionByDefault"]["Fn::If"]
            self.assertEqual(("UseKms", "aws:kms", {"Ref": "KmsKeyArn"}, "AES256"), (cond, kms["SSEAlgorithm"], kms["KMSMasterKeyID"], s3["SSEAlgorithm"]), b)
            self.assertEqual({"BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"}, {k for k, v in props["PublicAccessBlockConfiguration"].items() if v is True}, b)
            rules = props["LifecycleConfiguration"]["Rules"]
            self.assertTrue(any("AbortIncompleteMultipartUpload" in r for r in rules), f"{b}: incomplete multipart uploads are never aborted")

    def test_lifecycle_and_versioning(self):
        self.assertEqual("Enabled", RES["OutputBucket"]["Properties"]["VersioningConfiguration"]["Status"])
        rejects = RES["RejectsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        self.assertIn({"Ref": "RejectsRetentionDays"}, [r.get("ExpirationInDays") for r in rejects])
        work = RES["WorkBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        jobs = [r for r in work if r.get("Prefix") == "jobs/" or r.get("Filter", {}).get("Prefix") == "jobs/"]
        self.assertEqual([{"Ref": "WorkRetentionDays"}], [r["ExpirationInDays"] for r in jobs])
        # The ingestion ledger (ledger/) must outlive every job record: no expiring rule
        # may reach it (a rule without a prefix reaches every key).
        for r in work:
            if "ExpirationInDays" in r or "Expiration" in r:
                prefix = r.get("Prefix", r.get("Filter", {}).get("Prefix", ""))
                self.assertTrue(prefix and not "ledger/".startswith(prefix), f"{r['Id']} expires the ledger")
        for b in ("InputBucket", "WorkBucket"):
            self.assertTrue(all("ExpirationInDays" not in r or r.get("Prefix") == "jobs/" for r in RES[b]["Properties"]["LifecycleConfiguration"]["Rules"]), f"{b}: user data expires")

    def test_input_bucket_sends_events_to_eventbridge(self):
        nc = RES["InputBucket"]["Properties"]["NotificationConfiguration"]
        self.assertIs(True, nc["EventBridgeConfiguration"]["EventBridgeEnabled"])

    def test_queues(self):
        for q in QUEUES:
            self.assertIs(True, RES[q]["Properties"]["SqsManagedSseEnabled"], q)
        props = RES["ChunkQueue"]["Properties"]
        self.assertEqual({"deadLetterTargetArn": {"Fn::GetAtt": ["ChunkDeadLetterQueue", "Arn"]}, "maxReceiveCount": {"Ref": "MaxReceiveCount"}}, props["RedrivePolicy"])
        self.assertEqual(3, default("MaxReceiveCount"))
        # A message's retention counts from its first enqueue, also in the DLQ.
        self.assertGreater(RES["ChunkDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"], props["MessageRetentionPeriod"])

    def test_visibility_timeout_is_six_times_the_worker_timeout(self):
        vis = RES["ChunkQueue"]["Properties"]["VisibilityTimeout"]
        self.assertEqual({"Fn::FindInMap": ["QueueVisibility", {"Ref": "WorkerTimeout"}, "Seconds"]}, vis)
        table = T["Mappings"]["QueueVisibility"]
        self.assertEqual({str(v) for v in PARAMS["WorkerTimeout"]["AllowedValues"]}, set(table), "a WorkerTimeout without a visibility row")
        for timeout, row in table.items():
            self.assertGreaterEqual(row["Seconds"], 6 * int(timeout), f"visibility for WorkerTimeout {timeout}")
            self.assertLessEqual(row["Seconds"], 43200, "SQS allows at most 12 h")
        self.assertGreaterEqual(table[str(default("WorkerTimeout"))]["Seconds"], 6 * default("WorkerTimeout"))
        self.assertEqual({"Ref": "WorkerTimeout"}, RES["WorkerFunction"]["Properties"]["Timeout"])
        self.assertLessEqual(max(PARAMS["WorkerTimeout"]["AllowedValues"]), 900)


class FunctionsTest(unittest.TestCase):
    def test_build_and_runtime(self):
        g = T["Globals"]["Function"]
        self.assertEqual(("provided.al2023", ["arm64"], "bootstrap", "."), (g["Runtime"], g["Architectures"], g["Handler"], g["CodeUri"]))
        for fn, binary in FUNCTIONS.items():
            meta = RES[fn]["Metadata"]
            self.assertEqual("rust-cargolambda", meta["BuildMethod"], fn)
            self.assertEqual(binary, meta["BuildProperties"]["Binary"], fn)
            cargo = os.path.join(ct.ROOT, "functions", binary, "Cargo.toml")
            if os.path.exists(cargo):
                with open(cargo, encoding="utf-8") as f:
                    self.assertRegex(f.read(), rf'name = "{binary}"', f"{cargo} has no binary {binary}")
            props = RES[fn]["Properties"]
            for key in ("Runtime", "Architectures", "Handler", "CodeUri"):
                self.assertNotIn(key, props, f"{fn}: {key} differs from Globals")
            lc = props["LoggingConfig"]
            self.assertEqual(("JSON", {"Ref": "ApplicationLogLevel"}, {"Ref": "SystemLogLevel"}), (lc["LogFormat"], lc["ApplicationLogLevel"], lc["SystemLogLevel"]), fn)
            self.assertIn("Ref", props["MemorySize"], fn)
            self.assertIn("Ref", props["Timeout"], fn)

    def test_log_level_keeps_embedded_metrics(self):
        # Lambda files lines without a "level" key (EMF metric lines) as INFO.
        self.assertFalse({"WARN", "ERROR", "FATAL"} & set(PARAMS["ApplicationLogLevel"]["AllowedValues"]))

    def test_environment_contract(self):
        common = {"FANOUT_WORK": {"Fn::Sub": "s3://${WorkBucket}/"}, "FANOUT_METRICS_NAMESPACE": {"Ref": "MetricsNamespace"}}
        self.assertEqual("Fanout", default("MetricsNamespace"))
        self.assertEqual(
            {
                **common, "FANOUT_QUEUE_URL": {"Ref": "ChunkQueue"}, "FANOUT_SPEC": {"Fn::Sub": "s3://${WorkBucket}/specs/default.yaml"},
                "FANOUT_INPUT": {"Fn::Sub": "s3://${InputBucket}/"},
                # Event mode (EventModeTest): the queue only when it exists.
                "FANOUT_ARRIVALS_QUEUE_URL": {"Fn::If": ["EventModeEnabled", {"Ref": "ArrivalsQueue"}, {"Ref": "AWS::NoValue"}]},
                "FANOUT_ARRIVALS_MAX_OBJECTS": {"Ref": "ArrivalsMaxObjects"}, "FANOUT_ARRIVALS_MAX_BYTES": {"Ref": "ArrivalsMaxBytes"},
            },
            env("PlannerFunction"),
        )
        self.assertEqual(
            {
                **common,
                "FANOUT_MAX_RECEIVE_COUNT": {"Ref": "MaxReceiveCount"},
                # Recorded with each attempt, so status can tell a killed one (lost).
                "FANOUT_VISIBILITY_TIMEOUT_S": {"Fn::FindInMap": ["QueueVisibility", {"Ref": "WorkerTimeout"}, "Seconds"]},
            },
            env("WorkerFunction"),
        )
        self.assertEqual(
            {
                **common,
                "FANOUT_QUEUE_URL": {"Ref": "ChunkQueue"},
                "FANOUT_DLQ_URL": {"Ref": "ChunkDeadLetterQueue"},
                # The measured cost prices the workers' busy time at their memory.
                "FANOUT_WORKER_MEMORY_MB": {"Ref": "WorkerMemorySize"},
            },
            env("ReducerFunction"),
        )

    def test_worker_event_source(self):
        events = RES["WorkerFunction"]["Properties"]["Events"]
        (source,) = events.values()
        self.assertEqual("SQS", source["Type"])
        p = source["Properties"]
        self.assertEqual({"Fn::GetAtt": ["ChunkQueue", "Arn"]}, p["Queue"])
        self.assertIn("ReportBatchItemFailures", p["FunctionResponseTypes"])
        self.assertEqual({"Ref": "WorkerBatchSize"}, p["BatchSize"])
        self.assertEqual(1, default("WorkerBatchSize"))
        self.assertLessEqual(PARAMS["WorkerBatchSize"]["MaxValue"], 10, "over 10 needs a batching window")
        self.assertEqual({"Ref": "WorkerMaximumConcurrency"}, p["ScalingConfig"]["MaximumConcurrency"])
        self.assertEqual((50, 2), (default("WorkerMaximumConcurrency"), PARAMS["WorkerMaximumConcurrency"]["MinValue"]))
        for fn in ("PlannerFunction", "ReducerFunction"):
            self.assertNotIn("Events", RES[fn]["Properties"], f"{fn} is invoked by Step Functions only")


class OrchestrationTest(unittest.TestCase):
    def test_state_machine_wiring(self):
        props = RES["JobStateMachine"]["Properties"]
        self.assertEqual({"Fn::GetAtt": ["StateMachineRole", "Arn"]}, props["Role"])
        self.assertEqual(
            {"PlannerArn": {"Fn::GetAtt": ["PlannerFunction", "Arn"]}, "ReducerArn": {"Fn::GetAtt": ["ReducerFunction", "Arn"]}, "PollIntervalSeconds": {"Ref": "PollIntervalSeconds"}, "MaxPolls": {"Ref": "MaxPolls"}},
            props["DefinitionSubstitutions"],
        )
        for name, state in props["Definition"]["States"].items():
            if state["Type"] == "Task":
                self.assertEqual(LAMBDA_ERRORS, {e for r in state["Retry"] for e in r["ErrorEquals"]}, name)

    def test_poll_limit_fits_the_execution_history(self):
        # One status check = CountPoll, Wait, Status (a Task: 5 events), Settled: 11 events.
        # A Standard execution holds 25,000 events; keep some for planning and finalizing.
        self.assertLessEqual(PARAMS["MaxPolls"]["MaxValue"] * 11, 25000 - 500)
        self.assertLessEqual(default("MaxPolls"), PARAMS["MaxPolls"]["MaxValue"])

    def test_upload_rule_starts_the_state_machine(self):
        rule = RES["InputObjectCreatedRule"]["Properties"]
        pattern = rule["EventPattern"]
        self.assertEqual((["aws.s3"], ["Object Created"]), (pattern["source"], pattern["detail-type"]))
        self.assertEqual([{"Ref": "InputBucket"}], pattern["detail"]["bucket"]["name"])
        self.assertEqual([{"wildcard": {"Fn::Sub": "${InputPrefix}*${TriggerSuffix}"}}], pattern["detail"]["object"]["key"])
        (target,) = rule["Targets"]
        self.assertEqual(({"Ref": "JobStateMachine"}, {"Fn::GetAtt": ["StartJobRole", "Arn"]}), (target["Arn"], target["RoleArn"]))
        self.assertNotIn("InputTransformer", target, "the execution input must be the whole event")


EVENT_MODE = (
    "ArrivalsQueue", "ArrivalsDeadLetterQueue", "ArrivalsQueuePolicy", "ArrivalsRule", "ArrivalsSchedule",
    "ArrivalsScheduleRole", "PlannerArrivalsPolicy", "ArrivalsDeadLetterAlarm",
)


class EventModeTest(unittest.TestCase):
    """Scheduled micro-batches: S3 events -> EventBridge -> arrivals queue -> schedule -> drain."""

    def test_every_event_mode_resource_is_behind_the_switch(self):
        self.assertEqual("false", default("EventMode"), "deployments that do not ask for it must not get it")
        self.assertEqual({"Fn::Equals": [{"Ref": "EventMode"}, "true"]}, T["Conditions"]["EventModeEnabled"])
        for name in EVENT_MODE:
            self.assertEqual("EventModeEnabled", RES[name].get("Condition"), name)
        for name in ("ArrivalsQueueUrl", "ArrivalsDeadLetterQueueUrl"):
            self.assertEqual("EventModeEnabled", T["Outputs"][name].get("Condition"), name)
        queue_url = env("PlannerFunction")["FANOUT_ARRIVALS_QUEUE_URL"]
        self.assertEqual({"Fn::If": ["EventModeEnabled", {"Ref": "ArrivalsQueue"}, {"Ref": "AWS::NoValue"}]}, queue_url)
        # Not both start modes: a job per upload and the same objects in a drain.
        rule = T["Rules"]["OneStartMode"]
        self.assertEqual({"Fn::Equals": [{"Ref": "EventMode"}, "true"]}, rule["RuleCondition"])
        self.assertEqual([{"Fn::Equals": [{"Ref": "StartOnUpload"}, "false"]}], [a["Assert"] for a in rule["Assertions"]])

    def test_rule_sends_input_bucket_object_created_events_to_the_arrivals_queue(self):
        rule = RES["ArrivalsRule"]["Properties"]
        pattern = rule["EventPattern"]
        self.assertEqual((["aws.s3"], ["Object Created"]), (pattern["source"], pattern["detail-type"]))
        self.assertEqual([{"Ref": "InputBucket"}], pattern["detail"]["bucket"]["name"])
        self.assertEqual([{"prefix": {"Ref": "InputPrefix"}}], pattern["detail"]["object"]["key"])
        (target,) = rule["Targets"]
        self.assertEqual({"Fn::GetAtt": ["ArrivalsQueue", "Arn"]}, target["Arn"])
        self.assertEqual({"Fn::GetAtt": ["ArrivalsDeadLetterQueue", "Arn"]}, target["DeadLetterConfig"]["Arn"])
        self.assertNotIn("InputTransformer", target, "the planner parses the event as EventBridge sends it")
        self.assertTrue(RES["InputBucket"]["Properties"]["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"])

    def test_only_the_rule_may_send_to_the_arrivals_queues(self):
        doc = RES["ArrivalsQueuePolicy"]["Properties"]["PolicyDocument"]
        allows = [s for s in statements(doc) if s["Effect"] == "Allow"]
        self.assertEqual(1, len(allows))
        (allow,) = allows
        self.assertEqual({"Service": "events.amazonaws.com"}, allow["Principal"])
        self.assertEqual(["sqs:SendMessage"], as_list(allow["Action"]))
        self.assertEqual({"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["ArrivalsRule", "Arn"]}}}, allow["Condition"])
        denies = [s for s in statements(doc) if s["Effect"] == "Deny"]
        self.assertEqual([{"Bool": {"aws:SecureTransport": "false"}}], [d["Condition"] for d in denies])

    def test_arrivals_queue_outlasts_a_planner_run_and_redrives_to_its_dlq(self):
        q = RES["ArrivalsQueue"]["Properties"]
        self.assertGreater(q["VisibilityTimeout"], PARAMS["PlannerTimeout"]["MaxValue"],
                           "a drain's messages must stay hidden while any planner may run")
        self.assertEqual({"Fn::GetAtt": ["ArrivalsDeadLetterQueue", "Arn"]}, q["RedrivePolicy"]["deadLetterTargetArn"])
        for name in ("ArrivalsQueue", "ArrivalsDeadLetterQueue"):
            self.assertTrue(RES[name]["Properties"]["SqsManagedSseEnabled"], name)

    def test_schedule_starts_a_drain_named_by_its_time(self):
        sched = RES["ArrivalsSchedule"]["Properties"]
        self.assertEqual({"Ref": "ArrivalsScheduleRate"}, sched["ScheduleExpression"])
        self.assertEqual("rate(5 minutes)", default("ArrivalsScheduleRate"))
        self.assertRegex(default("ArrivalsScheduleRate"), PARAMS["ArrivalsScheduleRate"]["AllowedPattern"])
        self.assertNotRegex("rate(0 minutes)", PARAMS["ArrivalsScheduleRate"]["AllowedPattern"])
        target = sched["Target"]
        self.assertEqual({"Ref": "JobStateMachine"}, target["Arn"])
        self.assertEqual({"drain": "arrivals", "drain_id": "<aws.scheduler.scheduled-time>"}, json.loads(target["Input"]))

    def test_schedule_role_may_only_start_the_state_machine(self):
        self.assertEqual({("states:StartExecution", "JobStateMachine")}, grants("ArrivalsScheduleRole"))
        trust = RES["ArrivalsScheduleRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
        self.assertEqual({"Service": "scheduler.amazonaws.com"}, trust["Principal"])
        arn = trust["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
        self.assertTrue(arn.endswith(":schedule/default/${AWS::StackName}-arrivals"), arn)
        self.assertEqual({"Fn::Sub": "${AWS::StackName}-arrivals"}, RES["ArrivalsSchedule"]["Properties"]["Name"])

    def test_planner_drains_only_the_arrivals_queue(self):
        self.assertEqual(
            {
                ("sqs:ReceiveMessage", "ArrivalsQueue"), ("sqs:DeleteMessage", "ArrivalsQueue"),
                ("sqs:ChangeMessageVisibility", "ArrivalsQueue"), ("sqs:GetQueueAttributes", "ArrivalsQueue"),
                ("s3:GetObject", "WorkBucket/arrivals/*"), ("s3:PutObject", "WorkBucket/arrivals/*"),
                ("s3:DeleteObject", "WorkBucket/arrivals/*"),
                ("s3:GetObject", "WorkBucket/ledger/*"), ("s3:PutObject", "WorkBucket/ledger/*"),
            },
            grants("PlannerArrivalsPolicy"),
        )
        self.assertEqual([{"Ref": "PlannerRole"}], RES["PlannerArrivalsPolicy"]["Properties"]["Roles"])
        planner = env("PlannerFunction")
        self.assertEqual({"Ref": "ArrivalsMaxObjects"}, planner["FANOUT_ARRIVALS_MAX_OBJECTS"])
        self.assertEqual({"Ref": "ArrivalsMaxBytes"}, planner["FANOUT_ARRIVALS_MAX_BYTES"])


class ObservabilityTest(unittest.TestCase):
    def test_alarms_notify_an_encrypted_topic_cloudwatch_can_use(self):
        alarms = {name: a["Properties"] for name, a in ct.resources(T, "AWS::CloudWatch::Alarm").items()}
        expected = {
            "DeadLetterAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"Name": "QueueName", "Value": {"Fn::GetAtt": ["ChunkDeadLetterQueue", "QueueName"]}}),
            "ArrivalsDeadLetterAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"Name": "QueueName", "Value": {"Fn::GetAtt": ["ArrivalsDeadLetterQueue", "QueueName"]}}),
            "WorkerErrorsAlarm": ("AWS/Lambda", "Errors", {"Name": "FunctionName", "Value": {"Ref": "WorkerFunction"}}),
            "WorkerThrottlesAlarm": ("AWS/Lambda", "Throttles", {"Name": "FunctionName", "Value": {"Ref": "WorkerFunction"}}),
            "JobsFailedAlarm": ("AWS/States", "ExecutionsFailed", {"Name": "StateMachineArn", "Value": {"Ref": "JobStateMachine"}}),
        }
        self.assertEqual(set(expected), set(alarms))
        for key, (namespace, metric, dim) in expected.items():
            a = alarms[key]
            self.assertEqual((namespace, metric), (a["Namespace"], a["MetricName"]), key)
            self.assertEqual([dim], a["Dimensions"], key)
            self.assertEqual([{"Ref": "AlarmTopic"}], a["AlarmActions"], key)
            self.assertEqual((0, "GreaterThanThreshold"), (a["Threshold"], a["ComparisonOperator"]), key)
        # alias/aws/sns would silently drop alarm notifications: CloudWatch needs a key grant.
        self.assertEqual({"Ref": "AlarmTopicKey"}, RES["AlarmTopic"]["Properties"]["KmsMasterKeyId"])
        key = statements(RES["AlarmTopicKey"]["Properties"]["KeyPolicy"])
        cw = [s for s in key if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
        self.assertEqual(1, len(cw))
        self.assertIn("aws:SourceAccount", cw[0]["Condition"]["StringEquals"])
        sub = RES["AlarmEmailSubscription"]
        self.assertEqual(("HasAlarmEmail", "email"), (sub["Condition"], sub["Properties"]["Protocol"]))

    def test_dashboard(self):
        body = RES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        # Substitute as Fn::Sub would: a number where the body takes a number, names elsewhere.
        numbers = {"WorkerMaximumConcurrency": "50"}
        text = re.sub(r"\$\{([A-Za-z0-9:]+(?:\.[A-Za-z]+)?)\}", lambda m: numbers.get(m.group(1), "x"), body)
        dash = json.loads(text)
        expressions = [
            m["expression"]
            for w in dash["widgets"] if w["type"] == "metric"
            for line in w["properties"]["metrics"] for m in line if isinstance(m, dict) and "expression" in m
        ]
        for metric in METRICS:
            self.assertTrue(
                any(e.startswith(f'SEARCH(\'{{"x",JobName}} MetricName="{metric}"') for e in expressions),
                f"{metric}: no SEARCH over the namespace with the JobName dimension",
            )
        for needle in ("${ChunkQueue.QueueName}", "${ChunkDeadLetterQueue.QueueName}", "${WorkerFunction}", "ConcurrentExecutions", '"Duration"', '"Errors"', "${MetricsNamespace}"):
            self.assertIn(needle, body)

    def test_metrics_catalogue_matches_the_code_and_the_docs(self):
        # The names the code emits (shared/src/metrics/mod.rs, `metrics::names`), the
        # catalogue in docs/metrics.md and METRICS (on the dashboard, test_dashboard) agree.
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
        with open(os.path.join(root, "shared", "src", "metrics", "mod.rs"), encoding="utf-8") as f:
            code = set(re.findall(r'pub const [A-Z_]+: &str = "([A-Za-z]+)";', f.read()))
        with open(os.path.join(root, "docs", "metrics.md"), encoding="utf-8") as f:
            documented = set(re.findall(r"^\| `([A-Za-z]+)` \|", f.read(), re.M))
        self.assertTrue(code, "no metric names found in shared/src/metrics/mod.rs")
        self.assertEqual(sorted(code), sorted(METRICS), "metrics::names vs METRICS (the dashboard's list)")
        self.assertEqual(sorted(code), sorted(documented & (code | set(METRICS))), "metrics::names vs the catalogue in docs/metrics.md")

    def test_outputs(self):
        self.assertTrue({"InputBucketName", "OutputBucketName", "RejectsBucketName", "WorkBucketName", "ChunkQueueUrl", "ChunkDeadLetterQueueUrl", "StateMachineArn", "DashboardUrl"} <= set(T["Outputs"]))


class HygieneTest(unittest.TestCase):
    def test_every_parameter_has_a_default_and_a_description(self):
        # `sam deploy --guided` then works with no edits.
        for name, p in PARAMS.items():
            self.assertIn("Default", p, name)
            self.assertTrue(p.get("Description"), name)

    def test_checkov_skips_are_justified(self):
        justified = T["Metadata"]["CheckovSkips"]
        used = set()
        for name, r in RES.items():
            for skip in r.get("Metadata", {}).get("checkov", {}).get("skip", []):
                self.assertIn(skip["id"], justified, f"{name}: skip {skip['id']} not justified in Metadata.CheckovSkips")
                self.assertTrue(skip.get("comment"), f"{name}: skip {skip['id']} without a comment")
                used.add(skip["id"])
        self.assertEqual(set(justified), used, "Metadata.CheckovSkips lists unused skips")


if __name__ == "__main__":
    unittest.main(verbosity=2)
