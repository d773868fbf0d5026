"""Where the ``vidtwin`` commands read and write: input lists, output names, and the checks that keep data safe.

Rules, all checked before any model is loaded or any file is written:

- An output never resolves to an input: not the same path, not the same path written another
  way (``./a/../a``), not through a symbolic or hard link (``cross --output`` equal to
  ``--structure`` or ``--dynamics`` included). Inputs are compared by resolved path and by file
  identity (``st_dev``, ``st_ino``), gathered once in :class:`InputFiles`; a command whose input is
  a set (a folder, a CSV list) names every file of it, so that no flag makes one of them an output.
- An existing file is only replaced with ``--overwrite``; ``--overwrite`` never makes an input
  replaceable. "Ours" is not guessed from a file's
  name or contents: every existing output needs the flag, whoever wrote it.
- In directory mode every input gets its own output name: inputs whose stems collide
  (``a.mp4`` and ``a.mkv``) keep their extension in the name (``a.mkv_reconstructed.mp4``), and
  with ``--recursive`` the sub-folders of the input folder are kept under the output folder.
- Two runs never write one output at once: each output name is claimed when its work starts
  (:func:`claim_outputs`), and a run that finds it claimed stops in one line.
- Directory mode never reads its own results back: the output folder may not be the input
  folder, an output folder inside the input folder is skipped when listing it, and hidden files
  (the temporary files of a killed write among them) are never inputs.
"""

from __future__ import annotations

import os
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable

from vidtwin.atomic_io import ClaimHeld, atomic_write_text, claimed

from vidtwin.data.folders import list_video_files
from vidtwin.data.video_io import VIDEO_EXTENSIONS, WRITABLE_VIDEO_EXTENSIONS, is_video_file
from vidtwin.inference.options import InferenceError

LATENT_SUFFIX = ".safetensors"


def _real(path: Path) -> str:
    """The path with every symbolic link and ``..`` resolved (the file need not exist)."""
    return os.path.realpath(path)


def collect_inputs(path: str, recursive: bool = False, output: str | None = None) -> tuple[list[Path], bool]:
    """``([videos], is_directory)``; a directory yields its video files (top level, or all with ``recursive``).

    ``output``: the output folder of directory mode; it may not be the input folder, and is
    skipped when it lies inside it.
    """
    source = Path(path)
    if not source.exists():
        raise InferenceError(f"input {source} does not exist")
    if source.is_dir():
        skip = Path(output) if output is not None else None
        if skip is not None and _real(skip) == _real(source):
            raise InferenceError(
                f"--output {output} is the input folder: its results would be read back as inputs; choose another folder"
            )
        videos = [Path(p) for p in list_video_files(source, recursive, skip)]
        if not videos:
            where = "or its sub-folders " if recursive else ""
            raise InferenceError(
                f"input directory {source} {where}contains no video files ({', '.join(VIDEO_EXTENSIONS[:5])}, ...)"
            )
        return videos, True
    if not is_video_file(source):
        raise InferenceError(f"input {source} is not a video file (expected {', '.join(VIDEO_EXTENSIONS)})")
    return [source], False


def prepare_output(path: Path) -> Path:
    """Create the output's folder and check it can be written, before any work is done."""
    if path.is_dir():
        raise InferenceError(f"output {path} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InferenceError(f"cannot write output {path}: cannot create {path.parent} ({error.strerror or error})") from None
    if not os.access(path.parent, os.W_OK):
        raise InferenceError(f"cannot write output {path}: {path.parent} is not writable")
    return path


def check_writable_folder(folder: Path) -> None:
    """Check that ``folder`` can be created or written, without creating it (a failed run leaves nothing)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InferenceError(f"cannot write to {folder}: {existing} is not a directory")
    if not os.access(existing, os.W_OK):
        raise InferenceError(f"cannot write to {folder}: {existing} is not writable")


def check_video_output(path: str | os.PathLike) -> Path:
    """``path`` as a Path, if its extension names a container that ``write_video`` can write."""
    path = Path(path)
    if path.suffix.lower() not in WRITABLE_VIDEO_EXTENSIONS:
        kind = "cannot hold H.264 video" if path.suffix.lower() in VIDEO_EXTENSIONS else "is not a video file name"
        raise InferenceError(
            f"output {path} {kind}; name it .mp4 (or {', '.join(WRITABLE_VIDEO_EXTENSIONS[1:])})"
        )
    return path


def unique_output_names(inputs: list[Path], root: Path, tag: str, suffix: str) -> list[Path]:
    """Output paths relative to the output folder, one per input, all different.

    ``<relative folder>/<stem><tag><suffix>``; inputs of one folder whose stems collide keep
    their extension: ``<name with extension><tag><suffix>``.
    """
    relative = [p.relative_to(root) for p in inputs]
    stems = Counter(r.with_suffix("") for r in relative)
    names = [r.parent / (f"{r.name}{tag}{suffix}" if stems[r.with_suffix("")] > 1 else f"{r.stem}{tag}{suffix}")
             for r in relative]
    repeated = [str(n) for n, count in Counter(names).items() if count > 1]
    if repeated:
        raise InferenceError(f"two inputs would both be written to {repeated[0]}; rename one of them")
    return names


def output_paths(inputs: list[Path], is_directory: bool, output: str, suffix: str, tag: str,
                 input_root: Path | None = None) -> list[Path]:
    """One output per input: ``output`` itself for one input named like a file, else files under ``output/``."""
    target = Path(output)
    names_a_file = target.suffix.lower() in ((suffix,) if suffix == LATENT_SUFFIX else VIDEO_EXTENSIONS)
    if not is_directory and names_a_file:
        return [prepare_output(target if suffix == LATENT_SUFFIX else check_video_output(target))]
    if target.exists() and not target.is_dir():
        raise InferenceError(f"output {target} must be a directory (or a {suffix} file name for a single input)")
    root = input_root if input_root is not None else inputs[0].parent
    return [prepare_output(target / name) for name in unique_output_names(inputs, root, tag, suffix)]


def side_by_side_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}_side_by_side{path.suffix}")


def file_identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the file ``path`` names, links followed; None when there is none.

    Two names with one identity are one file: a hard link, a symbolic link, or the same path
    spelled another way, whatever its spelling.
    """
    try:
        status = os.stat(path)
    except (OSError, ValueError):  # ValueError: a name with a NUL byte
        return None
    return status.st_dev, status.st_ino


def files_under(folder: str | os.PathLike) -> list[Path]:
    """Every file below ``folder`` (links to files included; linked folders are not entered)."""
    return [Path(root) / name for root, _, names in os.walk(folder) for name in names]


class InputFiles:
    """The files a command reads, indexed by resolved path and by file identity.

    Built once from every input (videos, lists, models, statistics), so that checking each output
    costs two look-ups, not one comparison per input: an FVD set can hold thousands of videos.
    """

    def __init__(self, sources: Iterable[str | os.PathLike] = ()):
        self._by_path: dict[str, Path] = {}
        self._by_identity: dict[tuple[int, int], Path] = {}
        self.add(sources)

    def add(self, sources: Iterable[str | os.PathLike]) -> "InputFiles":
        """Add input files (a folder counts as itself; see :meth:`add_folder` for its files)."""
        for source in sources:
            source = Path(source)
            self._by_path.setdefault(_real(source), source)
            identity = file_identity(source)
            if identity is not None:
                self._by_identity.setdefault(identity, source)
        return self

    def add_folder(self, folder: str | os.PathLike) -> "InputFiles":
        """``folder`` and every file below it: for inputs such as a model folder, read as a whole."""
        self.add([folder])
        if Path(folder).is_dir():
            self.add(files_under(folder))
        return self

    def find(self, target: str | os.PathLike) -> Path | None:
        """The input that ``target`` is (by resolved path, then by file identity), or None."""
        found = self._by_path.get(_real(target))
        if found is None:
            identity = file_identity(target)
            found = self._by_identity.get(identity) if identity is not None else None
        return found


def check_targets(targets: Iterable[Path], sources: Iterable[str | os.PathLike] | InputFiles, overwrite: bool) -> None:
    """Refuse, before any work, an output that is an input, or that exists without ``overwrite``.

    sources: every file the command reads (videos, latent files, a CSV list), or an
    :class:`InputFiles` of them.
    """
    targets = [Path(t) for t in targets]
    inputs = sources if isinstance(sources, InputFiles) else InputFiles(sources)
    existing = []
    for target in targets:
        source = inputs.find(target)
        if source is not None:
            raise InferenceError(
                f"output {target} is the input {source}: writing it would destroy the input; choose another output"
            )
        if target.exists() or target.is_symlink():
            existing.append(target)
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise InferenceError(f"output {existing[0]} already exists{more}; pass --overwrite to replace it")


def claim_outputs(claims: ExitStack, targets: Iterable[Path], sources: Iterable[str | os.PathLike] | InputFiles,
                  overwrite: bool) -> None:
    """Claim every target for this process until ``claims`` closes, after :func:`check_targets`.

    A target claimed by another run (a ``vidtwin`` command writing the same output) is one
    InferenceError naming that run. The targets are checked again once claimed: a run that
    finished between the first check and the claim has written its output by then.
    """
    targets = list(targets)
    sources = sources if isinstance(sources, InputFiles) else InputFiles(sources)
    check_targets(targets, sources, overwrite)
    for target in targets:
        try:
            claims.enter_context(claimed(target))
        except ClaimHeld as held:
            raise InferenceError(
                f"output {target} is being written by another run ({held.holder or 'holder unknown'}, claim file "
                f"{held.claim.name}); wait for it to end or choose another output"
            ) from None
        except OSError as error:
            raise InferenceError(f"cannot write output {target}: {error.strerror or error}") from None
    check_targets(targets, sources, overwrite)


def claim_file_outputs(claims: ExitStack, targets: Iterable[str | os.PathLike],
                       sources: Iterable[str | os.PathLike] | InputFiles, overwrite: bool) -> list[Path]:
    """The rules above for outputs named as files by the user (a report, statistics): checked, then claimed.

    Each target may not be a folder, nor an input, nor exist without ``overwrite``; its folder is
    created (as :func:`prepare_output` does) and the name claimed until ``claims`` closes.
    """
    targets = [Path(t) for t in targets]
    for target in targets:
        if target.is_dir():
            raise InferenceError(f"output {target} is a directory; give a file name")
        check_writable_folder(target.parent)
    inputs = sources if isinstance(sources, InputFiles) else InputFiles(sources)
    check_targets(targets, inputs, overwrite)  # before any folder is created
    for target in targets:
        prepare_output(target)
    claim_outputs(claims, targets, inputs, overwrite)
    return targets


def write_text_output(path: str | os.PathLike, text: str, what: str = "output") -> None:
    """Write ``text`` to ``path`` atomically: a failed write (a full disk) leaves the old file or none,
    and is one InferenceError that says so."""
    try:
        atomic_write_text(path, text)
    except OSError as error:
        raise InferenceError(f"cannot write {what} {path}: {error.strerror or error}; it was not written") from None
