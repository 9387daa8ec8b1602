"""The worker: per-route dispatchers, the retry scheduler, and the process around them."""
