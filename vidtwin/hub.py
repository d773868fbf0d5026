"""Sharing VidTwin models on the Hugging Face Hub.

References:

- `hf://OWNER/NAME` is the repo's model: this project's format (`config.json` + `model.safetensors`)
  when the repo holds it, otherwise the official Lightning file
  (`checkpoints/vidtwin_structure_7_7_8_dynamics_7_8.ckpt`, as in `microsoft/vidtwin`);
- `hf://OWNER/NAME/path/in/repo.ckpt` names one file;
- `@REVISION` after the name pins a branch, tag or commit: `hf://OWNER/NAME@v1.0[/file]`.

`VidTwin.from_pretrained("OWNER/NAME[@REVISION]")` takes the same repo ids. Files come through
huggingface_hub's cache; with `HF_HUB_OFFLINE=1` only cached files are used.

`VidTwinHubMixin` builds on huggingface_hub's `ModelHubMixin`: its `push_to_hub` (repo creation,
upload), model-card metadata and template machinery. Saving and loading are ours: the mixin's
loaders accept any subset of the keys, where this project refuses a missing, unexpected or
mis-shaped key, and its saver writes files in place, where ours writes each file atomically.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional, Tuple, Union

from huggingface_hub import ModelHubMixin

from .atomic_io import atomic_path, atomic_write_text
from .errors import UserError
from .state_dict_io import CONFIG_FILE, WEIGHTS_FILE, CheckpointError

HF_PREFIX = "hf://"
OFFICIAL_REPO_ID = "microsoft/vidtwin"
OFFICIAL_CHECKPOINT_FILE = "checkpoints/vidtwin_structure_7_7_8_dynamics_7_8.ckpt"
FORMAT_NAME = "vidtwin"
FORMAT_VERSION = 1
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
def download_checkpoint(repo_id: str = OFFICIAL_REPO_ID, filename: str = OFFICIAL_CHECKPOINT_FILE,
                        revision: Optional[str] = None, cache_dir: Optional[str] = None) -> Path:
    """Return the local path of `filename` in `repo_id`, downloading it into the cache if needed."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, cache_dir=cache_dir))
    except Exception as error:  # the hub raises many network and lookup error types
        at = f" at revision {revision}" if revision else ""
        raise HubDownloadError(
            f"cannot get {filename} from the Hugging Face repo {repo_id}{at}: {type(error).__name__}: {error}. "
            "Check the network, or download the file yourself and pass its local path"
        ) from None


def _download_pretrained_dir(repo_id: str, revision: Optional[str], cache_dir: Optional[str]) -> Optional[Path]:
    """The cached snapshot folder holding the repo's `config.json` + `model.safetensors`, or None
    when the repo (or, offline, the cache) has no `config.json`."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    try:
        config = Path(hf_hub_download(repo_id=repo_id, filename=CONFIG_FILE, revision=revision, cache_dir=cache_dir))
    except EntryNotFoundError:  # not in the repo, or (offline) not in the cache: try the official file
        return None
    except Exception:  # network, authentication, unknown repo: the official-file attempt reports it
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
    except HubDownloadError as error:
        raise HubDownloadError(f"{error} (nor does the repo offer {CONFIG_FILE} + {WEIGHTS_FILE})") from None


def resolve_hub_reference(reference: str) -> Path:
    """The local path (a file, or a `save_pretrained` folder) that `hf://...` refers to."""
    return resolve_repo(*parse_hub_reference(reference))


# ---------------------------------------------------------------------------- our format
def write_pretrained(model, directory: Union[str, Path]) -> Path:
    """Write `config.json` + `model.safetensors` of `model` (a VidTwin); each file appears only when complete."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as temp:
        save_file(weights, str(temp), metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
    config = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "autoencoder": model.config.to_dict()}
    atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2))
    return directory


def read_pretrained_config_dict(directory: Union[str, Path]) -> dict:
    """The `autoencoder` settings stored in a `save_pretrained` folder's `config.json`."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}; expected a save_pretrained directory")
    try:
        values = json.loads(path.read_text())
        return dict(values["autoencoder"])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} is not a VidTwin config: {error}") from None


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

With the VidTwin code installed (from a clone: `pip install -e .`):

```python
from vidtwin import VidTwin

model = VidTwin.from_pretrained("{{ repo_id }}")     # strict: every key must match the config
latents = model.encode(video)          # video: (B, 3, {{ frames }}, {{ height }}, {{ width }}) in [-1, 1]
reconstruction = model.decode(latents)
```

or from the command line: `python inference.py reconstruct --ckpt hf://{{ repo_id }} --input clip.mp4 --output out/`.

## Config

```json
{{ config_json }}
```
"""


class VidTwinHubMixin(ModelHubMixin, library_name="vidtwin", tags=["video", "autoencoder", "vidtwin"],
                      model_card_template=MODEL_CARD):
    """`save_pretrained`, `push_to_hub` and `from_pretrained` for VidTwin, in this project's format.

    `save_pretrained(dir)` writes `config.json`, `model.safetensors` and a model card (`README.md`,
    kept if the folder already has one); `push_to_hub("owner/name")` uploads the same files through
    huggingface_hub's `ModelHubMixin`.
    """

    def save_pretrained(self, save_directory: Union[str, Path], *, config=None, repo_id: Optional[str] = None,
                        push_to_hub: bool = False, model_card_kwargs: Optional[dict] = None, **push_to_hub_kwargs):
        """Write `config.json`, `model.safetensors` and the model card `README.md` (kept when the
        folder already has one) into `save_directory`, each file complete or absent. With
        `push_to_hub=True` also upload them to `repo_id` (default: the folder's name).

        Replaces `ModelHubMixin.save_pretrained`, whose files are written in place; `config`
        (the mixin's) is not used: the config is the model's own.
        """
        directory = write_pretrained(self, save_directory)
        card = directory / "README.md"
        card_kwargs = {"repo_id": repo_id or "OWNER/NAME", **(model_card_kwargs or {})}
        if not card.exists():
            atomic_write_text(card, str(self.generate_model_card(**card_kwargs)))
        if push_to_hub:
            return self.push_to_hub(repo_id or directory.name, model_card_kwargs=model_card_kwargs, **push_to_hub_kwargs)
        return None

    def generate_model_card(self, *args, **kwargs):
        """The model card: the config, the latent shapes and compression, and how to load it."""
        from huggingface_hub import ModelCard

        config = self.config
        rows = [(name, shape, math.prod(shape)) for name, shape in config.latent_shapes().items()]
        latent_total = sum(values for _, _, values in rows)
        input_values = config.in_channels * math.prod(config.input_size)
        frames, height, width = config.input_size
        fields = dict(
            clip=f"{config.in_channels} x {frames} x {height} x {width}", frames=frames, height=height, width=width,
            latent_rows="\n".join(f"| {n} | {' x '.join(map(str, s))} | {v:,} |" for n, s, v in rows),
            latent_total=f"{latent_total:,}", input_values=f"{input_values:,}",
            percent=f"{100 * latent_total / input_values:.3f}", ratio=f"{input_values / latent_total:.0f}",
            config_json=json.dumps(config.to_dict(), indent=2), repo_id=kwargs.pop("repo_id", "OWNER/NAME"),
        )
        info = self._hub_mixin_info
        return ModelCard.from_template(card_data=info.model_card_data, template_str=info.model_card_template,
                                       **{**fields, **kwargs})

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload `config.json`, `model.safetensors` and the model card to the Hub repo `repo_id`
        (created if needed) through `ModelHubMixin.push_to_hub`, which saves into a temporary folder
        with `save_pretrained`. Keyword arguments are the mixin's (`private`, `token`, `branch`,
        `commit_message`, ...). Returns the URL of the commit."""
        card_kwargs = {"repo_id": repo_id, **(kwargs.pop("model_card_kwargs", None) or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=card_kwargs, **kwargs)

    @classmethod
    def from_checkpoint(cls, config=None, ckpt=None, device="cpu", allow_unsafe_pickle: bool = False,
                        ema: Optional[bool] = None):
        """Build a model in eval mode and load `ckpt` strictly; `vidtwin.load_model` documents the arguments."""
        from .config import ConfigError, autoencoder_config_from
        from .state_dict_io import (load_autoencoder_state_dict, read_checkpoint_state_dict,
                                    resolve_checkpoint_path, split_state_dict)

        ckpt_path = resolve_checkpoint_path(ckpt) if ckpt is not None else None
        if config is None:
            if ckpt_path is None or not ckpt_path.is_dir():
                raise ConfigError("a config is needed unless the checkpoint is a save_pretrained directory")
            try:
                model_config = cls.config_class.from_dict(read_pretrained_config_dict(ckpt_path))
            except (TypeError, ValueError) as error:
                raise CheckpointError(f"{ckpt_path / CONFIG_FILE} is not a VidTwin config: {error}") from None
        else:
            model_config = autoencoder_config_from(config)
        model = cls(model_config)
        if ckpt_path is not None:
            state = read_checkpoint_state_dict(ckpt_path, allow_unsafe_pickle=allow_unsafe_pickle, use_ema=ema)
            autoencoder_state, _, other = split_state_dict(state)
            # Training-only `loss.*` tensors are skipped; anything else unknown is an error.
            autoencoder_state.update(other)
            try:
                load_autoencoder_state_dict(model, autoencoder_state)
            except CheckpointError as error:
                raise CheckpointError(f"{ckpt}: {error}") from None
        return model.to(device).eval()

    @classmethod
    def from_pretrained(cls, name_or_path, device="cpu", config=None, allow_unsafe_pickle: bool = False,
                        revision: Optional[str] = None, cache_dir: Optional[str] = None):
        """Load a `save_pretrained` folder, a Hub repo id (`owner/name`, `owner/name@revision`) or
        an `hf://` reference, with strict key checking, in eval mode on `device`.

        A Hub repo in this project's format loads with its own `config.json`; a repo that holds the
        official Lightning file loads it with `config` (default: the published architecture).
        """
        local = Path(str(name_or_path))
        if local.is_dir():
            path = local
        elif is_hub_reference(str(name_or_path)) or is_repo_id(str(name_or_path)):
            repo_id, pinned, filename = parse_hub_reference(str(name_or_path))
            path = resolve_repo(repo_id, revision or pinned, filename, cache_dir)
        else:
            raise CheckpointError(f"{name_or_path} is neither a save_pretrained directory nor a Hub repo id (owner/name)")
        if config is None and not path.is_dir():
            config = cls.config_class()  # the official file of a repo: the published architecture
        return cls.from_checkpoint(config, path, device=device, allow_unsafe_pickle=allow_unsafe_pickle)


__all__ = [
    "HubDownloadError", "VidTwinHubMixin", "OFFICIAL_REPO_ID", "OFFICIAL_CHECKPOINT_FILE", "download_checkpoint",
    "is_hub_reference", "is_repo_id", "parse_hub_reference", "resolve_hub_reference", "resolve_repo",
]
