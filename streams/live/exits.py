"""How the worker stops itself: exit codes a supervisor (the demo, systemd, Kubernetes) sees.

- EXIT_UNSAFE (70): a batch could not be made durable (a failed send, a bug outside the
  reconciler). The process exits at once, without acking or committing: the next worker reads
  the batch again.
- EXIT_RESTART (75, EX_TEMPFAIL): the input reached the agent with a hole (faust lost records
  after a rebalance, see streams.live.faust_compat). Nothing past the hole was acked; a new
  process reads again from the committed offset. The supervisor restarts on any non-zero exit.
- A requested stop (SIGTERM, Ctrl-C) exits 0, within STOP_GRACE_S even when the broker has
  gone away (arm_stop_deadline).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any

log = logging.getLogger("settlewatch.worker")

EXIT_UNSAFE = 70  # exit status when the worker stops itself rather than risk skipping input
EXIT_RESTART = 75  # the input arrived with a hole: start again from the committed offsets
STOP_GRACE_S = 4.0  # a requested stop takes at most this long, whatever the broker does


def _die(message: str, *args: Any, code: int = EXIT_UNSAFE) -> None:
    """Exit now, without acking or committing: the next worker reads the batch again."""
    log.critical(message + "; exiting without commit so that nothing is skipped", *args)
    logging.shutdown()
    os._exit(code)


def exit_for_restart(reason: str) -> None:
    """Exit with EXIT_RESTART for the supervisor to start the worker again."""
    _die("%s; exiting for a restart from the committed offsets", reason, code=EXIT_RESTART)


_deadline: threading.Timer | None = None


def arm_stop_deadline(grace_s: float = STOP_GRACE_S) -> None:
    """From now on the process ends within `grace_s`: a stop that waits on a broker that has
    gone away (consumer commit, producer flush, group leave) is cut short with exit status 0.
    Safe, because the worker acks a batch only once its state is on the broker: what was not
    committed is read again by the next worker. Idempotent."""
    global _deadline
    if _deadline is not None:
        return

    def expire() -> None:
        log.warning("stop took longer than %.0fs (is the broker gone?); exiting now: nothing "
                    "unsaved was acknowledged", grace_s)
        logging.shutdown()
        os._exit(0)

    _deadline = threading.Timer(grace_s, expire)
    _deadline.daemon = True
    _deadline.start()
