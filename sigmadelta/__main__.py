"""`python -m sigmadelta` = the `sigmadelta` command."""

import sys

from .cli import main

sys.exit(main())
