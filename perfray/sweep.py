"""``python -m perfray.sweep [--config FILE] [--results-dir DIR] [--run-id ID] [--set key=value ...]``: the main
job, the same as ``perfray sweep`` (the driver is ``perfray.driver``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from perfray.cli import main as cli_main

    return cli_main(["sweep", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
