import sys

from headsweep.orchestrator.cli import main

sys.exit(main())
