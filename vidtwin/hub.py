"""Downloads of the published checkpoint from the Hugging Face Hub (cached by huggingface_hub).

`hf://OWNER/NAME` means the published VidTwin checkpoint file of that repo;
`hf://OWNER/NAME/path/in/repo.ckpt` names a file explicitly. Offline, with `HF_HUB_OFFLINE=1`, files
already in the cache are used without any network access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

HF_PREFIX = "hf://"
OFFICIAL_REPO_ID = "microsoft/vidtwin"
OFFICIAL_CHECKPOINT_FILE = "checkpoints/vidtwin_structure_7_7_8_dynamics_7_8.ckpt"


class HubDownloadError(RuntimeError):
    """The checkpoint could not be fetched from the Hub (or found in its cache when offline)."""


def is_hub_reference(value) -> bool:
    return isinstance(value, str) and value.startswith(HF_PREFIX)


def parse_hub_reference(reference: str) -> Tuple[str, str]:
    """`hf://owner/name[/path/in/repo]` -> (repo_id, filename)."""
    parts = reference[len(HF_PREFIX):].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise HubDownloadError(f"{reference!r} is not of the form hf://owner/name[/file]")
    repo_id = "/".join(parts[:2])
    filename = "/".join(parts[2:]) or OFFICIAL_CHECKPOINT_FILE
    return repo_id, filename


def download_checkpoint(repo_id: str = OFFICIAL_REPO_ID, filename: str = OFFICIAL_CHECKPOINT_FILE,
                        revision: Optional[str] = None, cache_dir: Optional[str] = None) -> Path:
    """Return the local path of `filename` in `repo_id`, downloading it into the cache if needed."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - a declared dependency
        raise HubDownloadError("huggingface_hub is not installed: pip install huggingface_hub") from None
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, cache_dir=cache_dir))
    except Exception as error:  # the hub raises many network and lookup error types
        raise HubDownloadError(
            f"cannot get {filename} from the Hugging Face repo {repo_id}: {type(error).__name__}: {error}. "
            "Check the network, or download the file yourself and pass its local path"
        ) from None


def resolve_hub_reference(reference: str) -> Path:
    repo_id, filename = parse_hub_reference(reference)
    return download_checkpoint(repo_id, filename)
