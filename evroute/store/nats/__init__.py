"""The JetStream store: evroute's routes, commands and guarantees on a NATS cluster.

Nothing here is imported unless a command is pointed at ``nats://…``: the package pulls in
nats-py. The mapping (SPEC section 10), one module per concept:

=====================  ===========================================================================
``names``              brokers, routes and buckets to stream / subject / consumer / KV names
``connection``         the URL, credentials, connecting (one ``Error:`` line when unreachable)
``wire``               the CloudEvents NATS binding (structured JSON) and ``Nats-Msg-Id``
``streams``            a stream per broker; append with dedup; reading the log back
``consumers``          a durable pull consumer per route; the pull loop; ack / NAK / TERM
``deadletters``        records in stream ``EVROUTE_DLQ``; list, replay, purge
``outcomes``           the recent delivery outcomes in stream ``EVROUTE_OUTCOMES`` (``tail``, the console)
``kv``                 the routes file in KV ``EVROUTE_ROUTES``; worker heartbeats in ``EVROUTE_WORKERS``
``store``              :class:`NatsStore`, the seam's two halves over the modules above
=====================  ===========================================================================
"""

from evroute.store.nats.store import NatsStore, open_store

__all__ = ["NatsStore", "open_store"]
