"""The ``sipflow`` command line.

Every user error ends with a one-paragraph message on stderr and a non-zero
exit status (2 for bad input/pipeline/output, 3 when a reconstruction fails);
``--debug`` shows the traceback instead. :func:`main` is the entry point; the
commands live by concern in :mod:`._commands` (one scan or result) and
:mod:`._facility` (batch, watch, serve), the parser in :mod:`._parser`.
"""

from ._main import main
from ._parser import build_parser

__all__ = ["build_parser", "main"]
