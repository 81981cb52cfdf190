import sys

from lt_kit.cli import main

sys.exit(main())
