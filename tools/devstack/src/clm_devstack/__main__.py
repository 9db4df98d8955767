"""``python -m clm_devstack``."""

import sys

from clm_devstack.cli import main

sys.exit(main())
