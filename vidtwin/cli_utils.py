"""Small helpers shared by the command-line scripts: one-line user errors and logging setup."""

from __future__ import annotations

import logging
import sys
from typing import Callable, NoReturn

USER_ERROR_EXIT = 2


def fail(message: str, code: int = USER_ERROR_EXIT) -> NoReturn:
    """Print `error: message` to stderr and exit; for user errors, where a traceback would not help."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_cli(main: Callable[[], int], user_errors: tuple) -> None:
    """Run `main`, turning the listed exception types into one-line errors with exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = main()
    except user_errors as error:
        fail(str(error))
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    raise SystemExit(code or 0)
