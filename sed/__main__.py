import sys

from sed.cli.main import main

sys.exit(main())
