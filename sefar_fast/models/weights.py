"""Weights by name: a `--pretrained` spec -> a local file.

    timm:NAME.TAG         timm's weights on the Hugging Face hub: repo timm/NAME.TAG, its
                          model.safetensors (else pytorch_model.bin), e.g.
                          timm:vit_small_patch16_224.augreg_in21k_ft_in1k
    hf:OWNER/REPO[/FILE]  a file of any hub repo (default: model.safetensors, else pytorch_model.bin)
    synth:ARCH            a backbone packaged for the built-in synth data (models.packaged),
                          e.g. synth:vit-pico, the synth preset's default
    PATH                  a local file: .pth, .pt, .pth.tar, .bin, .npz or .safetensors

Hub files are fetched once into huggingface_hub's cache (HF_HOME, HF_HUB_CACHE) and read from
there afterwards; with HF_HUB_OFFLINE=1 the cache alone is used. huggingface_hub is an optional
dependency (`pip install "sefar-fast[hub]"`). Without a network and without the file in the
cache, the error names the file's URL to download by hand and pass as a PATH.

A scheme is one function in SCHEMES: (the part after "scheme:", the whole spec) -> local path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sefar_fast.errors import SefarError
from sefar_fast.models.packaged import synth_weights

WEIGHT_SUFFIXES = (".pth", ".pt", ".tar", ".bin", ".npz", ".safetensors")
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what a repo's weights file is called, in order
SPEC_HELP = "timm:NAME.TAG, hf:OWNER/REPO[/FILE], synth:vit-pico or a local .pth, .pt, .pth.tar, .bin, .npz or .safetensors file"


def local_file(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise SefarError(f"pretrained weights {spec} not found; give {SPEC_HELP}")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise SefarError(f"pretrained weights {spec}: unknown suffix {path.suffix!r}; give {SPEC_HELP}")
    return path


def timm_weights(name: str, spec: str) -> Path:
    if "." not in name:
        raise SefarError(f"--pretrained {spec}: give the pretrained tag as timm's hub repos name it, e.g. "
                         "timm:vit_small_patch16_224.augreg_in21k_ft_in1k (listed at https://huggingface.co/timm)")
    return hub_file(f"timm/{name}", HUB_FILES, spec)


def hf_weights(path: str, spec: str) -> Path:
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2:
        raise SefarError(f"--pretrained {spec}: give hf:OWNER/REPO or hf:OWNER/REPO/FILE")
    repo, file = "/".join(parts[:2]), "/".join(parts[2:])
    return hub_file(repo, (file,) if file else HUB_FILES, spec)


def hub_file(repo: str, names: tuple[str, ...], spec: str) -> Path:
    """The first of `names` that repo holds, from the cache or downloaded into it."""
    try:  # an optional dependency, imported when a hub name is used
        from huggingface_hub import constants, hf_hub_download, hf_hub_url
        from huggingface_hub.utils import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError:
        raise SefarError(f"--pretrained {spec} needs huggingface_hub: pip install \"sefar-fast[hub]\" "
                         "(or download the weights and give their path)") from None
    not_cached = None
    for name in names:
        try:
            return Path(hf_hub_download(repo, name))
        except LocalEntryNotFoundError:  # not in the cache, and the hub is out of reach
            not_cached = not_cached or name
        except EntryNotFoundError:  # the repo has no such file: try the next name
            continue
        except RepositoryNotFoundError:
            raise SefarError(f"--pretrained {spec}: the Hugging Face hub has no repo {repo} (or it is gated or "
                             "private: log in with `hf auth login`)") from None
        except (HfHubHTTPError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SefarError(f"--pretrained {spec}: cannot fetch {repo}/{name} ({first})") from None
    if not_cached is not None:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
        raise SefarError(f"--pretrained {spec}: {repo}/{not_cached} is not in the Hugging Face cache "
                         f"({constants.HF_HUB_CACHE}) and {why}; download {hf_hub_url(repo, not_cached)} by hand "
                         f"and give --pretrained /path/to/{Path(not_cached).name}")
    raise SefarError(f"--pretrained {spec}: repo {repo} holds none of {', '.join(names)}; name the file, "
                     f"e.g. hf:{repo}/FILE")


SCHEMES: dict[str, Callable[[str, str], Path]] = {"timm": timm_weights, "hf": hf_weights, "synth": synth_weights}


def resolve_weights(spec: str) -> Path:
    """The local file a --pretrained spec names (fetched into the hub cache when needed)."""
    scheme, sep, rest = str(spec).partition(":")
    if sep and scheme in SCHEMES:
        return SCHEMES[scheme](rest, spec)
    return local_file(spec)
