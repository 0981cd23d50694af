"""`python -m edge --config FILE`: the same as `smartbin run --config FILE`."""

import sys

from edge.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
