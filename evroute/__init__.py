"""evroute: a local event router and broker for CloudEvents.

Knative Eventing's Broker/Trigger fan-out in one process, one SQLite file and one routes.yaml.
"""

from evroute.cloudevent import CloudEvent, make_event
from evroute.errors import EvrouteError
from evroute.store import Store

__all__ = ["CloudEvent", "EvrouteError", "Store", "make_event"]
__version__ = "0.1.0"
