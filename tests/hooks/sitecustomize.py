"""Pauses that tests put into the service processes they start, at the moments they want to kill a worker or
delete an agent. Python imports this module at start-up because the tests put this folder on PYTHONPATH
(tests.topology, tests/workers/conftest.py); it changes nothing unless one of its variables is set:

- LIFELONG_TEST_LEARN_COMMIT_DELAY_S: seconds a learner pauses inside its commit, its agent's lock held;
- LIFELONG_TEST_FORGET_EVENT_DELAY_S: seconds a forget's replay pauses before each event it re-learns.
"""

import functools
import os
import time


def _delayed(function, seconds: float, *, after: bool):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if not after:
            time.sleep(seconds)
        result = function(*args, **kwargs)
        if after:
            time.sleep(seconds)
        return result

    return wrapper


_commit_delay = float(os.environ.get("LIFELONG_TEST_LEARN_COMMIT_DELAY_S") or 0)
_event_delay = float(os.environ.get("LIFELONG_TEST_FORGET_EVENT_DELAY_S") or 0)
if _commit_delay:
    import learner.learn

    # The commit takes the agent's lock first thing in its transaction: the pause holds it.
    learner.learn.lock_agent = _delayed(learner.learn.lock_agent, _commit_delay, after=True)
if _event_delay:
    import learner.replay

    learner.replay.learn_events = _delayed(learner.replay.learn_events, _event_delay, after=False)
