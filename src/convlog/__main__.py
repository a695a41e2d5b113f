"""Allow ``python -m convlog``."""

from convlog.cli.commands import main

main()
