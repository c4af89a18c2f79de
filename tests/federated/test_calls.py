"""The engine's call policy for partner jobs in this process: concurrency, timeouts, retries, failures as data."""

import threading
import time

from molfed.errors import MolfedError
from molfed.federated.calls import CallPolicy, call_each


def test_results_and_failures_come_back_by_name_in_order():
    def boom():
        raise ValueError("bad")

    results, failures = call_each({"a": lambda: 1, "b": boom, "c": lambda: 3})
    assert results == {"a": 1, "c": 3}
    assert [(f.partner, f.reason) for f in failures] == [("b", "ValueError: bad")]


def test_jobs_run_concurrently():
    barrier = threading.Barrier(3, timeout=5)  # only passes if all three jobs are running at once
    results, failures = call_each({n: (lambda: barrier.wait() >= 0) for n in "abc"})
    assert results == {"a": True, "b": True, "c": True} and not failures


def test_a_job_past_its_timeout_is_interrupted_and_counted_as_failed():
    stopped = threading.Event()

    def stall():
        try:
            while True:
                time.sleep(0.01)
        finally:
            stopped.set()

    start = time.monotonic()
    results, failures = call_each({"slow": stall, "fast": lambda: "ok"}, CallPolicy(timeout_s=0.3))
    assert results == {"fast": "ok"}
    assert failures[0].partner == "slow" and failures[0].reason == "timed out after 0.3 s"
    assert stopped.wait(2) and time.monotonic() - start < 3  # the stalled thread was interrupted, not left running


def test_retries_until_success_but_never_for_a_user_mistake():
    calls = {"flaky": 0, "mistake": 0}

    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise RuntimeError("outage")
        return "ok"

    def mistake():
        calls["mistake"] += 1
        raise MolfedError("bad library")

    policy = CallPolicy(retries=2, retry_if=lambda e: not isinstance(e, MolfedError))
    errors = {}
    results, failures = call_each({"flaky": flaky, "mistake": mistake}, policy, errors=errors)
    assert results == {"flaky": "ok"} and calls == {"flaky": 3, "mistake": 1}
    assert failures[0].reason == "MolfedError: bad library" and isinstance(errors["mistake"], MolfedError)


def test_a_job_failing_every_attempt_says_how_many():
    results, failures = call_each({"x": lambda: 1 / 0}, CallPolicy(retries=1))
    assert not results and failures[0].reason == "ZeroDivisionError: division by zero (after 2 attempts)"
