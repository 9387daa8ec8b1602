"""Event sources that run inside the worker: Knative PingSource (:mod:`evroute.sources.ping`)."""
