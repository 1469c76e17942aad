"""``python -m headsweep ...`` is the ``headsweep`` command."""
import sys

from headsweep.orchestrator.cli import main

sys.exit(main())
