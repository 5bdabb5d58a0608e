import sys

from avmatch.cli import main

sys.exit(main())
