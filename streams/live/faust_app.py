"""The faust entry point: `faust -A streams.live.faust_app worker`.

faust asks this module for `app`; it is built on first access from the same options as
`settlewatch worker`, read from the SETTLEWATCH_* variables (streams.live.command).
"""
from __future__ import annotations

from typing import Any

_app: Any = None


def __getattr__(name: str) -> Any:
    if name == "app":
        global _app
        if _app is None:
            from streams.live.app import create_app
            from streams.live.command import config_from_environment
            _app = create_app(config_from_environment())
        return _app
    raise AttributeError(name)
