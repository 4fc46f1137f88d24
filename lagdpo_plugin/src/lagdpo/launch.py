"""Launching `lagdpo train` on several processes through `accelerate launch`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .errors import ConfigError

__all__ = [
    "ACCELERATE_CONFIG_DIR",
    "accelerate_config_path",
    "launch_command",
    "list_accelerate_configs",
]

ACCELERATE_CONFIG_DIR = Path(__file__).parent / "configs" / "accelerate"


def list_accelerate_configs() -> list[str]:
    return sorted(p.stem for p in ACCELERATE_CONFIG_DIR.glob("*.yaml"))


def accelerate_config_path(name: str) -> Path:
    """A shipped accelerate config by name (``ddp-lora``, ``zero2``, ``zero3``, ``fsdp``, …) or a file path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml", ".json") and path.exists():
        return path
    stem = name.removesuffix(".yaml")
    shipped = ACCELERATE_CONFIG_DIR / f"{stem}.yaml"
    if not shipped.exists():
        raise ConfigError(
            f"no accelerate config {name!r}; shipped ones: {', '.join(list_accelerate_configs())} (or give a file path)."
        )
    return shipped


def launch_command(
    accelerate_config: str, num_processes: int | None, train_args: list[str]
) -> list[str]:
    """The `accelerate launch … -m lagdpo.cli train …` command line for the given train arguments."""
    exe = shutil.which("accelerate")
    head = [exe, "launch"] if exe else [sys.executable, "-m", "accelerate.commands.launch"]
    cmd = head + ["--config_file", str(accelerate_config_path(accelerate_config))]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    return cmd + ["-m", "lagdpo.cli", "train", *train_args]
