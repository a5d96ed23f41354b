"""How the worker stops itself: exit codes a supervisor (the demo, systemd, Kubernetes) sees."""
from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("settlewatch.worker")

EXIT_UNSAFE = 70  # exit status when the worker stops itself rather than risk skipping input


def _die(message: str, *args: Any) -> None:
    """Exit now, without acking or committing: the next worker reads the batch again."""
    log.critical(message + "; exiting without commit so that nothing is skipped", *args)
    logging.shutdown()
    os._exit(EXIT_UNSAFE)


