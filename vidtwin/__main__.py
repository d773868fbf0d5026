"""``python -m vidtwin COMMAND ...``: the same as the ``vidtwin`` command."""

import sys

from vidtwin.cli import main

sys.exit(main())
