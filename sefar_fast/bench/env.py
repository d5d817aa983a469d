"""What a benchmark record was measured on: card, driver, library versions, date.

Numbers only compare within one card and one software stack, so every record
carries them. `result_stem()` names result files timm-style, one per card and
date: ``<card>-<date>-<what>.json`` (e.g. ``nvidia-h100-80gb-hbm3-2026-11-30-bench-vit-b.json``).

    python -m sefar_fast.bench.env          # prints the record as JSON
    python -m sefar_fast.bench.env --stem   # prints <card>-<date> for file names
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata

import torch

import sefar_fast


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _module_version(module: str) -> str | None:
    try:
        mod = __import__(module, fromlist=["__version__"])
    except Exception:  # noqa: BLE001 - a missing or broken optional library is simply "not there"
        return None
    return getattr(mod, "__version__", None)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()
    return line[0].strip() if out.returncode == 0 and line else None


def card_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name with its usable core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{_cpu_name()} ({cores} cores)"


def slug(text: str) -> str:
    """Lower-case file-name form: runs of anything but letters and digits become one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


def result_stem(device: torch.device) -> str:
    """``<card>-<date>``; the first part of every result file name of this card today."""
    name = card_name(device)
    if device.type == "cpu":
        name = "cpu-" + re.sub(r"\(.*\)", "", name)
    return f"{slug(name)}-{today()}"


def environment(device: torch.device) -> dict:
    """Card, driver and versions, as flat plainly named fields."""
    cuda = device.type == "cuda"
    props = torch.cuda.get_device_properties(device) if cuda else None
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": str(device),
        "card": card_name(device),
        "card_memory_gib": round(props.total_memory / 2**30, 2) if props else None,
        "driver": _nvidia_driver() if cuda else None,
        "cuda": torch.version.cuda,
        "sefar": sefar_fast.__version__,
        "torch": torch.__version__,
        "triton": _module_version("triton") or _dist_version("triton"),
        "dali": _module_version("nvidia.dali") or _dist_version("nvidia-dali-cuda130", "nvidia-dali-cuda120"),
        "numpy": _module_version("numpy"),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if "--stem" in argv:
        print(result_stem(device))
    else:
        print(json.dumps(environment(device), indent=2))


if __name__ == "__main__":
    main()
