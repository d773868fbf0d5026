"""The one base class of the errors that this package raises for bad user input.

Every module defines its own, more specific error (``ConfigError``, ``LatentFileError``, ...) as a
subclass of :class:`UserError`, so that the command-line layer (``vidtwin.cli.convention``) reports all
of them in one line with exit code 2 without knowing or importing them. Keep this module free of
imports: every layer of the package depends on it.
"""


class UserError(Exception):
    """A problem with what the user gave (arguments, config, paths, files): one line, exit 2."""


class PartialFailure(Exception):
    """Part of the work failed and was reported already; the message is the summary (exit 1)."""
