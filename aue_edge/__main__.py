import sys

from aue_edge.cli import main

sys.exit(main())
