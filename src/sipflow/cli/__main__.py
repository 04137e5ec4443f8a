"""``python -m sipflow.cli``: the sipflow command."""

import sys

from ._main import main

sys.exit(main())
