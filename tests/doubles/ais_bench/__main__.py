"""``python -m ais_bench`` for the test double (see __init__.py)."""

import sys

from ais_bench import main

sys.exit(main())
