"""``python -m clm_cli …`` is ``clm …``."""

import sys

from clm_cli.main import main

sys.exit(main())
