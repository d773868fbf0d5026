"""The commands that the library tells a user to run next, spelled as an installed package runs them.

Run summaries, resume hints, error messages and model cards all name a next command. Every such
command is built by :func:`command`, so each one names the ``vidtwin`` program that ``pip install
vidtwin`` puts on the PATH, never a file that exists only in a clone (``python train.py``)::

    command("train", "--resume", run_dir)          # vidtwin train --resume logs/run
    command("demo check-world", run_dir)           # vidtwin demo check-world logs/run

Arguments are shell-quoted where they need it; wrap a template placeholder in :class:`Verbatim`
to keep it as written.
"""

from __future__ import annotations

import shlex

PROGRAM = "vidtwin"


class Verbatim(str):
    """An argument written into the command as it is: a placeholder such as ``START.mp4``, or a
    template field (``hf://{{ repo_id }}``) that is filled in later."""


def command(subcommand: str, *arguments: object) -> str:
    """``vidtwin SUBCOMMAND ARGUMENTS...`` as one line a user can paste into a shell.

    subcommand: the command's words, e.g. ``"reconstruct"`` or ``"demo check-world"``.
    arguments: options and values; paths are converted with ``str`` and quoted where needed.
    """
    words = [PROGRAM, *subcommand.split()]
    for argument in arguments:
        words.append(argument if isinstance(argument, Verbatim) else shlex.quote(str(argument)))
    return " ".join(words)


__all__ = ["PROGRAM", "Verbatim", "command"]
