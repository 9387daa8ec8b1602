"""``python -m evroute``."""

from evroute.cli import main

main()
