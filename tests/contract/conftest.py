"""The contract suite's fixtures: ``store`` (one fresh store of each kind) and ``receivers``."""

from contract.stores import receivers, store  # noqa: F401 (fixtures)
