"""Launching `lagdpo train` on several processes through `accelerate launch`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .errors import ConfigError

__all__ = [
    "ACCELERATE_CONFIG_DIR",
    "accelerate_config_path",
    "check_before_launch",
    "check_engine_installed",
    "launch_command",
    "list_accelerate_configs",
]

ACCELERATE_CONFIG_DIR = Path(__file__).parent / "configs" / "accelerate"
# distributed_type of an accelerate config → (module it needs, lagdpo-plugin extra that installs it)
ENGINES = {"DEEPSPEED": ("deepspeed", "deepspeed")}


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


def _read_config(path: Path) -> dict:
    import json

    import yaml

    text = path.read_text()
    loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return loaded if isinstance(loaded, dict) else {}


def check_engine_installed(accelerate_config: str) -> None:
    """One line naming the extra to install when the config's engine (DeepSpeed) is missing."""
    import importlib.util

    path = accelerate_config_path(accelerate_config)
    kind = str(_read_config(path).get("distributed_type", "")).upper()
    if kind in ENGINES:
        module, extra = ENGINES[kind]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"--accelerate-config {accelerate_config}: {module} is not installed (this config "
                f"runs on {kind.title()}); install it with `pip install 'lagdpo-plugin[{extra}]'`."
            )


def check_before_launch(accelerate_config: str, method: str, settings: dict) -> None:
    """Refuse in the launching process, once, what every rank would refuse after starting: a
    missing engine package, and PCGrad on parameters the config shards (ZeRO-3, FSDP)."""
    check_engine_installed(accelerate_config)
    if method != "pcgrad-dpo":
        return
    from .config import coerce_settings
    from .trainer import check_pcgrad_sharding

    conf = _read_config(accelerate_config_path(accelerate_config))
    kind = str(conf.get("distributed_type", "")).upper()
    engine = {"DEEPSPEED": "deepspeed", "FSDP": "fsdp"}.get(kind)
    stage = (conf.get("deepspeed_config") or {}).get("zero_stage")
    use_peft = coerce_settings({"use_peft": settings.get("use_peft", False)})["use_peft"]
    check_pcgrad_sharding(engine, None if stage in (None, "auto") else int(stage), bool(use_peft))


def launch_command(
    accelerate_config: str,
    num_processes: int | None,
    train_args: list[str],
    mixed_precision: str | None = None,
) -> list[str]:
    """The `accelerate launch … -m lagdpo.cli train …` command line for the given train arguments.

    ``mixed_precision`` ("bf16" or "no"), from the training settings' ``bf16``, overrides the
    accelerate config's so that both agree (see `lagdpo.training._agree_mixed_precision`).
    """
    exe = shutil.which("accelerate")
    head = [exe, "launch"] if exe else [sys.executable, "-m", "accelerate.commands.launch"]
    cmd = head + ["--config_file", str(accelerate_config_path(accelerate_config))]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    if mixed_precision is not None:
        cmd += ["--mixed_precision", mixed_precision]
    return cmd + ["-m", "lagdpo.cli", "train", *train_args]
