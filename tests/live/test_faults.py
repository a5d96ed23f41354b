"""streams.live.faults: the test-only SIGKILL switch does nothing unless armed for that point,
and kills the process at the N-th pass when it is."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from streams.live import faults

PROGRAM = """
import sys
from streams.live.faults import fault_point
for i in range(1, 6):
    fault_point("other_point")
    print(i, flush=True)
    fault_point("before_state_acked")
"""


def run(env_value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if env_value is not None:
        env[faults.ENV] = env_value
    return subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                          text=True, timeout=60)


def test_unset_the_points_do_nothing():
    done = run(None)
    assert done.returncode == 0 and done.stdout.split() == ["1", "2", "3", "4", "5"]


def test_armed_it_sigkills_the_process_at_the_first_pass():
    done = run("before_state_acked")
    assert done.returncode == -signal.SIGKILL and done.stdout.split() == ["1"]


def test_armed_with_a_count_it_sigkills_at_the_nth_pass():
    done = run("before_state_acked:3")
    assert done.returncode == -signal.SIGKILL and done.stdout.split() == ["1", "2", "3"]


@pytest.mark.parametrize("value", ["", "before_state_acked:0", "before_state_acked:x",
                                   "after_state_acked_before_send"])
def test_a_malformed_or_other_value_does_not_kill(value):
    assert run(value).returncode == 0


def test_the_worker_calls_both_points():
    import inspect
    from streams.live.app import Runtime
    src = inspect.getsource(Runtime)
    for point in faults.POINTS:
        assert f'fault_point("{point}")' in src
