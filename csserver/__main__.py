"""`python -m csserver`: the same as the `csserver` command."""

import sys

from csserver.cli import main

sys.exit(main())
