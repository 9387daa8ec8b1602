"""evroute: a local event router and broker for CloudEvents.

Knative Eventing's Broker/Trigger fan-out in one process, one SQLite file and one routes.yaml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evroute.cloudevent import CloudEvent, make_event
    from evroute.errors import EvrouteError
    from evroute.store import Store

__all__ = ["CloudEvent", "EvrouteError", "Store", "make_event"]
__version__ = "0.1.0"

# The names above are loaded when first used: every `evroute` command imports this package,
# and a single `evroute publish` needs none of them.
_LAZY = {
    "CloudEvent": "evroute.cloudevent",
    "make_event": "evroute.cloudevent",
    "EvrouteError": "evroute.errors",
    "Store": "evroute.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'evroute' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
