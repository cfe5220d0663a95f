"""``python -m lhc.cli ...``: the ``lhc`` command without its console script."""

import sys

from lhc.cli import main

sys.exit(main())
