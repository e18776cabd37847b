"""``python -m benchmarks.suite SCENARIO ...``: the same as ``hpacs bench``."""

import sys

from benchmarks.suite.cli import main

sys.exit(main(prog="python -m benchmarks.suite"))
