import sys

from knowpack.cli import main

sys.exit(main())
