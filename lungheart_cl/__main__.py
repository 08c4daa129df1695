import sys

from lungheart_cl.cli import main

sys.exit(main())
