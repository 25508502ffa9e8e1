"""`python -m mailpolicy.cli`: the same as the `mailpolicy` command."""

import sys

from mailpolicy.cli.main import main

sys.exit(main())
