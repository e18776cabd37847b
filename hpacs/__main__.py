import sys

from hpacs.cli import main

sys.exit(main())
