"""The Hugging Face Hub: references, downloads through its cache, uploads, and the model card.

References:

- `hf://OWNER/NAME` is the repo's model: this project's format (`config.json` + `model.safetensors`)
  when the repo holds it, otherwise the official Lightning file
  (`checkpoints/vidtwin_structure_7_7_8_dynamics_7_8.ckpt`, as in `microsoft/vidtwin`);
- `hf://OWNER/NAME/path/in/repo.ckpt` names one file;
- `@REVISION` after the name pins a branch, tag or commit: `hf://OWNER/NAME@v1.0[/file]`.

`VidTwin.from_pretrained("OWNER/NAME[@REVISION]")` takes the same repo ids. Files come through
huggingface_hub's cache; with `HF_HUB_OFFLINE=1` only cached files are used.

Nothing here builds a model: `vidtwin.pretrained` turns the files into models and models into
files, and uses this module for the Hub's side of both.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional, Tuple, Union

from .errors import UserError
from .hints import Verbatim, command

# The two files of a save_pretrained folder, on disk and in a Hub repo.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

HF_PREFIX = "hf://"
OFFICIAL_REPO_ID = "microsoft/vidtwin"
OFFICIAL_CHECKPOINT_FILE = "checkpoints/vidtwin_structure_7_7_8_dynamics_7_8.ckpt"
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+(@[^/\s]+)?")


class HubDownloadError(RuntimeError, UserError):
    """The checkpoint could not be fetched from the Hub (or found in its cache when offline)."""


# ---------------------------------------------------------------------------- references
def is_hub_reference(value) -> bool:
    return isinstance(value, str) and value.startswith(HF_PREFIX)


def is_repo_id(value) -> bool:
    """True for `owner/name` or `owner/name@revision` (what `from_pretrained` takes for the Hub)."""
    return isinstance(value, str) and _REPO_ID.fullmatch(value) is not None


def parse_hub_reference(reference: str) -> Tuple[str, Optional[str], Optional[str]]:
    """`hf://owner/name[@revision][/path/in/repo]` -> (repo_id, revision or None, filename or None)."""
    parts = reference[len(HF_PREFIX):].strip("/").split("/") if is_hub_reference(reference) else reference.split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise HubDownloadError(f"{reference!r} is not of the form hf://owner/name[@revision][/file]")
    name, _, revision = parts[1].partition("@")
    if not name or (parts[1].endswith("@") and not revision):
        raise HubDownloadError(f"{reference!r} is not of the form hf://owner/name[@revision][/file]")
    return f"{parts[0]}/{name}", revision or None, "/".join(parts[2:]) or None


# ---------------------------------------------------------------------------- downloads
def _offline() -> bool:
    """Whether huggingface_hub runs offline (``HF_HUB_OFFLINE=1``): only cached files can be had."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _where(repo_id: str, revision: Optional[str]) -> str:
    return f"the Hugging Face repo {repo_id}" + (f" at revision {revision}" if revision else "")


def _not_available(wanted: str, repo_id: str, revision: Optional[str], cache_dir: Optional[str], error=None) -> str:
    """Why ``wanted`` (file names, in words) of a repo cannot be had, and what to do, in one sentence."""
    if _offline():
        from huggingface_hub import constants

        cache = cache_dir or constants.HF_HUB_CACHE
        return (f"offline mode is on (HF_HUB_OFFLINE=1) and the Hugging Face cache {cache} holds no {wanted} of "
                f"{_where(repo_id, revision)}; download it where there is a network, or pass a local file or "
                "save_pretrained folder instead")
    cause = f": {type(error).__name__}: {error}" if error is not None else ""
    return (f"cannot get {wanted} from {_where(repo_id, revision)}{cause}. "
            "Check the network and the repo name, or download the file yourself and pass its local path")


def download_checkpoint(repo_id: str = OFFICIAL_REPO_ID, filename: str = OFFICIAL_CHECKPOINT_FILE,
                        revision: Optional[str] = None, cache_dir: Optional[str] = None) -> Path:
    """Return the local path of `filename` in `repo_id`, downloading it into the cache if needed."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, cache_dir=cache_dir))
    except Exception as error:  # the hub raises many network and lookup error types
        raise HubDownloadError(_not_available(filename, repo_id, revision, cache_dir, error)) from None


def _download_pretrained_dir(repo_id: str, revision: Optional[str], cache_dir: Optional[str]) -> Optional[Path]:
    """The cached snapshot folder holding the repo's `config.json` + `model.safetensors`, or None
    when the repo (or, offline, the cache) has no `config.json`."""
    from huggingface_hub import hf_hub_download

    try:
        config = Path(hf_hub_download(repo_id=repo_id, filename=CONFIG_FILE, revision=revision, cache_dir=cache_dir))
    except Exception:  # not in the repo or the cache, network, unknown repo: the caller tries the official file
        return None
    weights = download_checkpoint(repo_id, WEIGHTS_FILE, revision, cache_dir)
    if weights.parent != config.parent:  # both come from one snapshot folder of the cache
        raise HubDownloadError(f"{repo_id}: {CONFIG_FILE} and {WEIGHTS_FILE} came from different revisions")
    return config.parent


def resolve_repo(repo_id: str, revision: Optional[str] = None, filename: Optional[str] = None,
                 cache_dir: Optional[str] = None) -> Path:
    """A local path for a repo's model: the named file, else a `save_pretrained` folder (this
    project's format), else the official Lightning file."""
    if filename is not None:
        return download_checkpoint(repo_id, filename, revision, cache_dir)
    pretrained = _download_pretrained_dir(repo_id, revision, cache_dir)
    if pretrained is not None:
        return pretrained
    try:
        return download_checkpoint(repo_id, OFFICIAL_CHECKPOINT_FILE, revision, cache_dir)
    except HubDownloadError:
        wanted = f"{CONFIG_FILE} + {WEIGHTS_FILE} (a save_pretrained model) and no {OFFICIAL_CHECKPOINT_FILE}"
        raise HubDownloadError(_not_available(wanted, repo_id, revision, cache_dir)) from None


def resolve_hub_reference(reference: str) -> Path:
    """The local path (a file, or a `save_pretrained` folder) that `hf://...` refers to."""
    return resolve_repo(*parse_hub_reference(reference))


# ---------------------------------------------------------------------------- uploads
MODEL_CARD = """---
{{ card_data }}
---

# VidTwin video autoencoder

A [VidTwin](https://arxiv.org/abs/2412.17726) video autoencoder: each clip of
{{ clip }} (channels x frames x height x width, values in [-1, 1]) becomes a *structure* latent and
two *dynamics* latents.

| latent | shape per clip | values |
| --- | --- | --- |
{{ latent_rows }}
| total | | {{ latent_total }} |

Compression: {{ latent_total }} numbers for {{ input_values }} input values, {{ percent }}% ({{ ratio }}x fewer).

## Load

With the `vidtwin` package installed:

```python
from vidtwin import VidTwin

model = VidTwin.from_pretrained("{{ repo_id }}")     # strict: every key must match the config
latents = model.encode(video)          # video: (B, 3, {{ frames }}, {{ height }}, {{ width }}) in [-1, 1]
reconstruction = model.decode(latents)
```

or from the command line: `RECONSTRUCT_COMMAND`.

## Config

```json
{{ config_json }}
```
"""
MODEL_CARD = MODEL_CARD.replace("RECONSTRUCT_COMMAND", command(
    "reconstruct", "--ckpt", Verbatim("hf://{{ repo_id }}"), "--input", "clip.mp4", "--output", "out/"))
CARD_TAGS = ["video", "autoencoder", "vidtwin"]


def model_card(config, repo_id: str = "OWNER/NAME", **fields) -> str:
    """The model card (`README.md`) of a model with this `VidTwinConfig`: its latent shapes and
    compression, how to load it, and the config. ``fields`` override the template's values."""
    rows = [(name, shape, math.prod(shape)) for name, shape in config.latent_shapes().items()]
    latent_total = sum(values for _, _, values in rows)
    input_values = config.in_channels * math.prod(config.input_size)
    frames, height, width = config.input_size
    values = dict(
        clip=f"{config.in_channels} x {frames} x {height} x {width}", frames=frames, height=height, width=width,
        latent_rows="\n".join(f"| {n} | {' x '.join(map(str, s))} | {v:,} |" for n, s, v in rows),
        latent_total=f"{latent_total:,}", input_values=f"{input_values:,}",
        percent=f"{100 * latent_total / input_values:.3f}", ratio=f"{input_values / latent_total:.0f}",
        config_json=json.dumps(config.to_dict(), indent=2), repo_id=repo_id,
    )
    return render_model_card(MODEL_CARD, CARD_TAGS, values, fields)


def render_model_card(template: str, tags, values: dict, fields: dict) -> str:
    """A model card from a Jinja ``template`` with ``{{ card_data }}`` for the metadata; ``fields``
    override ``values``. Every model's card (``PretrainedModel.model_card``) goes through here."""
    from huggingface_hub import ModelCard, ModelCardData

    card_data = ModelCardData(library_name="vidtwin", tags=list(tags))
    return str(ModelCard.from_template(card_data=card_data, template_str=template, **{**values, **fields}))


def upload_folder(folder: Union[str, Path], repo_id: str, *, commit_message: str = "Upload VidTwin model",
                  private: Optional[bool] = None, token: Optional[str] = None, branch: Optional[str] = None,
                  create_pr: bool = False, **upload_kwargs) -> str:
    """Create the Hub repo `repo_id` if needed and upload the files of `folder` in one commit;
    returns the URL of the commit. ``upload_kwargs`` go to `HfApi.upload_folder`."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    return api.upload_folder(repo_id=repo_id, folder_path=Path(folder), commit_message=commit_message,
                             revision=branch, create_pr=create_pr, **upload_kwargs)


__all__ = [
    "HubDownloadError", "OFFICIAL_REPO_ID", "OFFICIAL_CHECKPOINT_FILE", "download_checkpoint", "is_hub_reference",
    "is_repo_id", "model_card", "parse_hub_reference", "render_model_card", "resolve_hub_reference", "resolve_repo",
    "upload_folder",
]
