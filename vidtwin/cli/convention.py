"""The one command-line convention of every entry point (every `vidtwin` command, and the benchmark scripts).

- A user error (bad arguments, config, paths, inputs) prints ``PROG: error: MESSAGE`` on one line
  of stderr and exits with 2, without a traceback. Only subclasses of
  :class:`vidtwin.errors.UserError` count as user errors: each is raised by this package for bad input.
- A failure of the work itself that is not a bug (some videos of a folder failed, training
  stopped on a NaN loss) prints its summary and exits with 1.
- Any other exception is a bug: its traceback is printed, then ``PROG: internal error: ...``,
  and the exit code is 1. It is never worded as a user error.
- ``--debug`` (on every entry point) also prints the traceback of user errors and failures.
- Ctrl-C prints ``PROG: interrupted`` and exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Callable, NoReturn

from ..errors import PartialFailure, UserError

EXIT_OK = 0
EXIT_FAILURE = 1  # the work failed (partly, or by a bug); the summary or traceback says which
EXIT_USER_ERROR = 2  # what the user gave cannot be used; argparse uses the same code
EXIT_INTERRUPTED = 130


def one_line(error: object) -> str:
    """An error message on one line (some libraries put details on following lines)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def print_error(prog: str, message: object) -> None:
    """``PROG: error: MESSAGE`` on stderr, on one line."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)


def fail(prog: str, message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print ``PROG: error: message`` and exit; for errors found outside :func:`run_main`."""
    print_error(prog, message)
    raise SystemExit(code)


def add_debug_flag(parser: argparse.ArgumentParser, in_subcommand: bool = False) -> None:
    """``--debug``: show the traceback of every error. On a subcommand it keeps the main parser's value."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if in_subcommand else False,
                        help="show the full traceback of any error")


def run_main(prog: str, main: Callable[[], int | None], debug: bool = False,
             failure_types: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``main`` under the convention above and return the exit code.

    failure_types: exceptions that mean the work failed without being a bug or a user error
    (reported in one line with exit code 1, like :class:`PartialFailure`), e.g. an unreadable
    video met during training, which is a user error before the work starts.
    """
    def report(error: BaseException, code: int) -> int:
        if debug:
            traceback.print_exc()
        print_error(prog, error)
        return code

    try:
        return main() or EXIT_OK
    except (PartialFailure, *failure_types) as error:  # before user errors: the caller's choice wins
        return report(error, EXIT_FAILURE)
    except UserError as error:
        return report(error, EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug: the traceback is what a report needs
        traceback.print_exc()
        print(f"{prog}: internal error: {type(error).__name__}: {one_line(error)} "
              "(this is a bug, not a problem with the input; please report it with the traceback above)",
              file=sys.stderr)
        return EXIT_FAILURE


def run_cli(main: Callable[[list[str] | None], int | None], prog: str, argv: list[str] | None = None) -> NoReturn:
    """Entry point of a script whose ``main(argv)`` parses its own arguments: run it and exit.

    ``--debug`` is read from ``argv`` before ``main`` parses it, so that errors raised while
    parsing the rest are covered too.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    raise SystemExit(run_main(prog, lambda: main(argv), debug="--debug" in argv))
