"""Allow ``python -m convlog``."""

from convlog.cli import main

main()
