import sys

from sed.cli import main

sys.exit(main())
