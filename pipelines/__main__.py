"""CLI: python -m pipelines {compile,run,submit,schedule,runs} (see pipelines.cli)."""

import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main())
