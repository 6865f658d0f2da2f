"""The job state machine of template.yaml, checked statically and run in moto.

cfn-lint and sam validate do not look inside the ASL (a wrong Next or state Type passes
them), so the definition is taken from the template, given its DefinitionSubstitutions
and created in moto's Step Functions with execution on. moto's lambda:invoke answers
each invocation with the next canned result queued through
/moto-api/static/lambda-simple/response, so the real Task states run (Parameters,
ResultSelector, ResultPath, Catch) with the planner's and the reducer's contract outputs.

moto: FANOUT_MOTO_ENDPOINT (started by infra/check-template.sh), or one started here on a
free 127.0.0.1 port when that is unset.
"""
import json
import os
import socket
import subprocess
import sys
import time
import unittest
import urllib.request

import boto3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cfn_template as ct  # noqa: E402

REGION = "us-east-1"
PLANNER = "arn:aws:lambda:us-east-1:123456789012:function:fanout-planner"
REDUCER = "arn:aws:lambda:us-east-1:123456789012:function:fanout-reducer"
SUBSTITUTIONS = {"PlannerArn": PLANNER, "ReducerArn": REDUCER, "PollIntervalSeconds": 0, "MaxPolls": 5}
LAMBDA_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}
WORK = "s3://fanout-work-123456789012/"

_moto_proc = None
_endpoint = None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setUpModule():
    global _moto_proc, _endpoint
    _endpoint = os.environ.get("FANOUT_MOTO_ENDPOINT")
    if not _endpoint:
        port = _free_port()
        server = os.path.join(os.path.dirname(sys.executable), "moto_server")
        # MOTO_PORT: moto's Step Functions calls Lambda through its own HTTP port.
        env = dict(os.environ, MOTO_PORT=str(port))
        _moto_proc = subprocess.Popen(
            [server, "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(_endpoint + "/moto-api/", timeout=2).read()
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def tearDownModule():
    if _moto_proc is not None:
        _moto_proc.terminate()
        _moto_proc.wait(timeout=10)


def _post(path, body):
    req = urllib.request.Request(
        _endpoint + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    return urllib.request.urlopen(req, timeout=30).read()


def status(planned, committed, failed=0, dead=0, failed_chunks=(), job_id="orders-1", lost=0, stranded=0):
    """A reducer status answer, as the Lambda contract states it. `lost`: chunks whose
    worker was killed on their last receive (dead-lettered without a failure record);
    `stranded`: chunks without records left with no message to deliver them."""
    pending = planned - committed - failed - dead - lost - stranded
    return {
        "job_id": job_id,
        "planned": planned,
        "committed": committed,
        "pending": pending,
        "failed": failed,
        "dead_lettered": dead,
        "lost": lost,
        "stranded": stranded,
        "failed_chunks": list(failed_chunks),
        # Settled: nothing can move any more (no chunk queued, running or retryable).
        "settled": pending == 0 and failed == 0,
        "complete": committed == planned,
        "compaction_due": False,
    }


def compaction_due(planned):
    """Every chunk committed, the compaction stage not started: not complete, not settled."""
    return {**status(planned, planned), "complete": False, "settled": False, "compaction_due": True}


COMPACTED = {"job_id": "orders-1", "bins": 2, "merged_files": 6, "kept_files": 1, "sent": 2}


PLAN = {"job_id": "orders-1", "work": WORK, "chunks": 3}
FINALIZED = {"job_id": "orders-1", "outcome": "succeeded", "rows_read": 100, "rows_written": 97, "rows_rejected": 3, "files": 4}


class Run:
    """One finished execution: its description and history."""

    def __init__(self, description, events):
        self.status = description["status"]
        self.output = json.loads(description["output"]) if description.get("output") else None
        self.error = description.get("error")
        self.cause = description.get("cause")
        self.events = events

    def states(self):
        return [e["stateEnteredEventDetails"]["name"] for e in self.events if "stateEnteredEventDetails" in e]

    def calls(self):
        """(function, payload) of every Lambda invocation, in order."""
        out = []
        for e in self.events:
            if e["type"] == "TaskScheduled":
                p = json.loads(e["taskScheduledEventDetails"]["parameters"])
                out.append((p["FunctionName"], p["Payload"]))
        return out


class StaticDefinitionTest(unittest.TestCase):
    """What moto does not check before running: every transition and substitution."""

    def setUp(self):
        self.definition, self.subs = ct.state_machine(ct.load())
        self.states = self.definition["States"]

    def targets(self, state):
        out = []
        if "Next" in state:
            out.append(state["Next"])
        if "Default" in state:
            out.append(state["Default"])
        out += [c["Next"] for c in state.get("Choices", [])]
        out += [c["Next"] for c in state.get("Catch", [])]
        return out

    def test_every_transition_names_a_state(self):
        self.assertIn(self.definition["StartAt"], self.states)
        for name, state in self.states.items():
            for target in self.targets(state):
                self.assertIn(target, self.states, f"{name} -> {target}: no such state")

    def test_every_state_is_reachable_and_every_path_ends(self):
        seen, todo = set(), [self.definition["StartAt"]]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += self.targets(self.states[name])
        self.assertEqual(set(self.states), seen, "unreachable states")
        for name, state in self.states.items():
            terminal = state["Type"] in ("Succeed", "Fail") or state.get("End") is True
            self.assertTrue(terminal or self.targets(state), f"{name} has no Next and does not end")
            self.assertFalse(terminal and "Next" in state, f"{name} ends but has a Next")

    def test_substitutions_match_placeholders(self):
        used = set(ct.PLACEHOLDER.findall(json.dumps(self.definition)))
        self.assertEqual(used, set(self.subs), "DefinitionSubstitutions and ${...} placeholders differ")
        self.assertEqual(set(SUBSTITUTIONS), set(self.subs))

    def test_every_task_retries_lambda_errors_and_catches_into_the_fail_state(self):
        tasks = {n: s for n, s in self.states.items() if s["Type"] == "Task"}
        self.assertEqual({"Plan", "Status", "Compact", "Finalize"}, set(tasks))
        fails = [n for n, s in self.states.items() if s["Type"] == "Fail"]
        self.assertEqual(["JobFailed"], fails)
        for name, task in tasks.items():
            self.assertEqual("arn:aws:states:::lambda:invoke", task["Resource"], name)
            retried = {e for r in task["Retry"] for e in r["ErrorEquals"]}
            self.assertEqual(LAMBDA_ERRORS, retried, name)
            # The planner's NoInput (nothing left to plan) ends the execution without a
            # job, as a success; every other error fails it.
            expected = [["NoInput"], ["States.ALL"]] if name == "Plan" else [["States.ALL"]]
            self.assertEqual(expected, [c["ErrorEquals"] for c in task["Catch"]], name)
            self.assertEqual("JobFailed", task["Catch"][-1]["Next"], name)
            self.assertTrue(all(c["ResultPath"] == "$.failure" for c in task["Catch"]), name)
        self.assertEqual("NothingToDo", self.states["Plan"]["Catch"][0]["Next"])
        self.assertEqual("NoJob", self.states["NothingToDo"]["Next"])
        self.assertEqual("Succeed", self.states["NoJob"]["Type"])
        self.assertEqual("$.failure.Error", self.states["JobFailed"]["ErrorPath"])
        self.assertEqual("$.failure.Cause", self.states["JobFailed"]["CausePath"])

    def test_planner_gets_the_whole_execution_input(self):
        self.assertEqual("$", self.states["Plan"]["Parameters"]["Payload.$"])

    def test_nothing_planned_ends_the_execution_before_any_job_state(self):
        (choice,) = self.states["Planned"]["Choices"]
        self.assertEqual(("$.plan.answer.nothing_planned", True, "NothingPlanned"), (choice["Variable"], choice["IsPresent"], choice["Next"]))
        self.assertEqual("Succeed", self.states["NothingPlanned"]["Type"])
        self.assertEqual("PollJob", self.states["Planned"]["Default"])


class ExecutionTest(unittest.TestCase):
    """The definition run in moto, with canned planner and reducer answers."""

    @classmethod
    def setUpClass(cls):
        cls.sfn = boto3.client(
            "stepfunctions",
            endpoint_url=_endpoint,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        cls.definition, _ = ct.state_machine(ct.load())

    def setUp(self):
        _post("/moto-api/reset", {})
        _post("/moto-api/config", {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}})

    def run_job(self, answers, execution_input, definition=None, **subs):
        text = definition if definition is not None else ct.substitute(self.definition, {**SUBSTITUTIONS, **subs})
        arn = self.sfn.create_state_machine(
            name=f"jobs-{self.id().rsplit('.', 1)[-1][:40]}",
            definition=text,
            roleArn="arn:aws:iam::123456789012:role/fanout-jobs",
        )["stateMachineArn"]
        if answers:
            results = [a if isinstance(a, str) else json.dumps(a) for a in answers]
            _post("/moto-api/static/lambda-simple/response", {"results": results, "region": REGION})
        execution = self.sfn.start_execution(stateMachineArn=arn, input=json.dumps(execution_input))["executionArn"]
        deadline = time.time() + 60
        while True:
            d = self.sfn.describe_execution(executionArn=execution)
            if d["status"] != "RUNNING":
                break
            if time.time() > deadline:
                self.fail(f"execution still running: {d}")
            time.sleep(0.1)
        events = self.sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
        return Run(d, events)

    def test_upload_event_runs_the_job_to_success(self):
        event_path = os.path.join(ct.ROOT, "events", "eventbridge-object-created.json")
        if os.path.exists(event_path):
            with open(event_path, encoding="utf-8") as f:
                event = json.load(f)
        else:
            event = {"detail-type": "Object Created", "source": "aws.s3", "detail": {"bucket": {"name": "in"}, "object": {"key": "k"}}}
        run = self.run_job([PLAN, status(3, 1), status(3, 3), FINALIZED], event)
        self.assertEqual("SUCCEEDED", run.status, (run.error, run.cause))
        self.assertEqual(FINALIZED, run.output)
        self.assertEqual(
            [
                "Start", "Plan", "Planned", "PollJob", "Wait", "Status", "Settled", "CountPoll",
                "Wait", "Status", "Settled", "Finalize", "Outcome", "Succeeded",
            ],
            run.states(),
        )
        probe = {"job_id": "orders-1", "work": WORK}
        self.assertEqual(
            [
                (PLANNER, event),
                (REDUCER, {"action": "status", **probe}),
                (REDUCER, {"action": "status", **probe}),
                (REDUCER, {"action": "finalize", **probe}),
            ],
            run.calls(),
        )

    def test_a_job_with_a_compaction_stage_compacts_then_polls_then_finalizes(self):
        run = self.run_job([PLAN, compaction_due(3), COMPACTED, {**status(3, 3), "bins": 2, "bins_committed": 2}, FINALIZED], {"spec": {}})
        self.assertEqual("SUCCEEDED", run.status, (run.error, run.cause))
        self.assertEqual(FINALIZED, run.output)
        self.assertEqual(
            [
                "Start", "Plan", "Planned", "PollJob", "Wait", "Status", "Settled", "Compact", "CountPoll",
                "Wait", "Status", "Settled", "Finalize", "Outcome", "Succeeded",
            ],
            run.states(),
        )
        probe = {"job_id": "orders-1", "work": WORK}
        self.assertEqual(
            [
                (REDUCER, {"action": "status", **probe}),
                (REDUCER, {"action": "compact", **probe}),
                (REDUCER, {"action": "status", **probe}),
                (REDUCER, {"action": "finalize", **probe}),
            ],
            run.calls()[1:],
        )

    def test_drain_that_finds_nothing_ends_without_a_job(self):
        # The schedule's input; the planner found no new object on the arrivals queue.
        start = {"drain": "arrivals", "drain_id": "2026-12-01T10:05:00Z"}
        nothing = {
            "nothing_planned": True,
            "reason": "no object arrived under s3://in/raw/ since the last drain: no job planned",
            "drain": {"messages": 0, "unreadable": 0, "not_selected": 0, "missing": 0, "duplicates": 0, "left_for_next": 0},
        }
        run = self.run_job([nothing], start)
        self.assertEqual("SUCCEEDED", run.status, (run.error, run.cause))
        self.assertEqual(["Start", "Plan", "Planned", "NothingPlanned"], run.states())
        self.assertEqual(nothing, run.output, "the execution's output says why there is no job")
        self.assertEqual([(PLANNER, start)], run.calls(), "no status, no finalize: no empty succeeded job")

    def test_drain_that_plans_a_job_runs_it_to_success(self):
        start = {"drain": "arrivals", "drain_id": "2026-12-01T10:10:00Z"}
        drained = {**PLAN, "sent": 3, "objects": 2, "drain": {"messages": 3, "unreadable": 0, "not_selected": 0, "missing": 0, "duplicates": 1, "left_for_next": 0}}
        run = self.run_job([drained, status(3, 3), FINALIZED], start)
        self.assertEqual("SUCCEEDED", run.status, (run.error, run.cause))
        self.assertEqual(FINALIZED, run.output)
        self.assertEqual(["Start", "Plan", "Planned", "PollJob", "Wait", "Status", "Settled", "Finalize", "Outcome", "Succeeded"], run.states())
        probe = {"job_id": "orders-1", "work": WORK}
        self.assertEqual(
            [(PLANNER, start), (REDUCER, {"action": "status", **probe}), (REDUCER, {"action": "finalize", **probe})],
            run.calls(),
        )

    def test_started_by_hand_with_a_spec_location(self):
        start = {"spec_location": WORK + "specs/orders.yaml"}
        run = self.run_job([PLAN, status(3, 3), FINALIZED], start)
        self.assertEqual("SUCCEEDED", run.status, (run.error, run.cause))
        self.assertEqual((PLANNER, start), run.calls()[0])
        self.assertEqual(3, len(run.calls()))

    def test_settled_incomplete_job_fails_naming_its_chunks(self):
        failed = status(4, 2, dead=2, failed_chunks=["0000000000000000000a", "0000000000000000000c"])
        self.assertTrue(failed["settled"])
        run = self.run_job([PLAN, status(4, 1), failed], {"spec": {"name": "orders"}})
        self.assertEqual("FAILED", run.status)
        self.assertEqual("fanout.ChunksFailed", run.error)
        self.assertIn("0000000000000000000a", run.cause)
        self.assertIn("0000000000000000000c", run.cause)
        self.assertIn("2 of 4 chunks committed", run.cause)
        self.assertIn("2 dead-lettered", run.cause)
        self.assertNotIn("Finalize", run.states())
        self.assertEqual("JobFailed", run.states()[-1])

    def test_job_whose_only_unfinished_chunk_is_lost_fails_naming_it(self):
        # A worker killed (out of memory, timed out) on the last receive writes no failure
        # record; the reducer reports the chunk lost and the job settled.
        lost = status(3, 2, lost=1, failed_chunks=["0000000000000000000b lost on attempt 3, the last: dead-lettered"])
        self.assertTrue(lost["settled"])
        run = self.run_job([PLAN, status(3, 2), lost], {"spec": {"name": "orders"}})
        self.assertEqual("FAILED", run.status)
        self.assertEqual("fanout.ChunksFailed", run.error)
        self.assertIn("0000000000000000000b lost on attempt 3", run.cause)
        self.assertIn("2 of 3 chunks committed, 0 failed, 0 dead-lettered, 1 lost, 0 stranded", run.cause)
        self.assertNotIn("Finalize", run.states())
        self.assertEqual("JobFailed", run.states()[-1])

    def test_job_whose_chunks_are_stranded_fails_naming_them(self):
        # The chunk queue is empty and the dead-letter queue is not: the chunks without
        # records have no message left, and the reducer reports them stranded.
        stranded = status(3, 1, stranded=2, failed_chunks=["0000000000000000000b stranded: no record", "0000000000000000000c stranded: no record"])
        self.assertTrue(stranded["settled"])
        run = self.run_job([PLAN, status(3, 1), stranded], {"spec": {"name": "orders"}})
        self.assertEqual("FAILED", run.status)
        self.assertEqual("fanout.ChunksFailed", run.error)
        self.assertIn("0000000000000000000c stranded", run.cause)
        self.assertIn("1 of 3 chunks committed, 0 failed, 0 dead-lettered, 0 lost, 2 stranded", run.cause)
        self.assertNotIn("Finalize", run.states())

    def test_finalize_outcome_failed_fails_the_execution(self):
        rejected = {**FINALIZED, "outcome": "failed", "rows_rejected": 60, "rows_written": 40}
        run = self.run_job([PLAN, status(3, 3), rejected], {"spec": {}})
        self.assertEqual("FAILED", run.status)
        self.assertEqual("fanout.JobFailed", run.error)
        self.assertIn("outcome failed", run.cause)
        self.assertIn("60 rejected", run.cause)

    def test_poll_limit_fails_after_max_polls_checks(self):
        run = self.run_job([PLAN] + [status(3, 1)] * 3, {"spec": {}}, MaxPolls=3)
        self.assertEqual("FAILED", run.status)
        self.assertEqual("fanout.PollLimit", run.error)
        self.assertEqual(3, run.states().count("Status"))
        self.assertIn("after 3 status checks", run.cause)
        self.assertIn(WORK, run.cause)

    def test_resume_skips_planning(self):
        start = {"resume": {"job_id": "orders-1", "work": WORK}}
        run = self.run_job([status(3, 3), FINALIZED], start)
        self.assertEqual("SUCCEEDED", run.status, (run.error, run.cause))
        self.assertNotIn("Plan", run.states())
        self.assertEqual((REDUCER, {"action": "status", "job_id": "orders-1", "work": WORK}), run.calls()[0])

    def test_lambda_function_error_is_caught_into_the_fail_state(self):
        # moto answers a result over Lambda's 6 MB limit with a function error
        # (Function.ResponseSizeTooLarge): the one function error it can produce.
        oversize = json.dumps({"padding": "x" * 6_100_000})
        run = self.run_job([oversize], {"spec": {}})
        self.assertEqual("FAILED", run.status)
        self.assertEqual("Function.ResponseSizeTooLarge", run.error)
        self.assertEqual(["Start", "Plan", "JobFailed"], run.states())

    def test_planner_answer_without_job_id_stops_the_execution(self):
        run = self.run_job([{"work": WORK, "chunks": 1}], {"spec": {}})
        self.assertEqual("FAILED", run.status)
        self.assertNotIn("Wait", run.states())

    def test_harness_notices_broken_definitions(self):
        """A broken transition or state type must not pass: creation or the run fails."""
        good = json.loads(ct.substitute(self.definition, SUBSTITUTIONS))
        mutations = {
            "Next to a missing state": lambda d: d["States"]["Wait"].__setitem__("Next", "Nowhere"),
            "unknown state type": lambda d: d["States"]["CountPoll"].__setitem__("Type", "Paas"),
            "Choice default to a missing state": lambda d: d["States"]["Settled"].__setitem__("Default", "Nowhere"),
            "Finalize skipped": lambda d: next(
                c for c in d["States"]["Settled"]["Choices"] if c.get("Variable") == "$.status.report.complete"
            ).__setitem__("Next", "Succeeded"),
        }
        for what, mutate in mutations.items():
            with self.subTest(what):
                self.setUp()
                broken = json.loads(json.dumps(good))
                mutate(broken)
                try:
                    run = self.run_job([PLAN, status(3, 1), status(3, 3), FINALIZED], {"spec": {}}, definition=json.dumps(broken))
                except self.sfn.exceptions.ClientError:
                    continue  # rejected when created
                except Exception as e:  # botocore raises modelled errors as their own classes
                    if "CreateStateMachine" in str(e):
                        continue
                    raise
                self.assertFalse(
                    run.status == "SUCCEEDED" and run.output == FINALIZED,
                    f"{what}: the broken definition still succeeded",
                )


if __name__ == "__main__":
    unittest.main(verbosity=2)
