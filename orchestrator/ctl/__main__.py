"""`python -m orchestrator.ctl ...`."""

import sys

from orchestrator.ctl.cli import main

sys.exit(main())
