"""lagdpo: Lag-DPO (Lagrangian multi-negative DPO) and its baselines on TRL.

Heavy modules (trl, transformers) load on first use of a trainer, so ``import lagdpo`` and the
loss functions stay light.
"""

from __future__ import annotations

from . import losses
from .dimensions import DIGNITY, DIMENSIONS, PEER
from .errors import ConfigError, DataError, LagDPOError

__version__ = "0.1.0"

__all__ = [
    "DIGNITY",
    "DIMENSIONS",
    "PEER",
    "ConfigError",
    "DataError",
    "LagDPOConfig",
    "LagDPOError",
    "LagDPOTrainer",
    "MODPOTrainer",
    "MultiNegDPOTrainer",
    "PCGradDPOTrainer",
    "PersonaSFTTrainer",
    "SafeRLHFDPOTrainer",
    "ablate",
    "load_personaknob",
    "losses",
    "train",
]

_LAZY = {
    "LagDPOConfig": "config",
    "MultiNegDPOTrainer": "trainer",
    "LagDPOTrainer": "trainer",
    "PCGradDPOTrainer": "trainer",
    "SafeRLHFDPOTrainer": "trainer",
    "MODPOTrainer": "trainer",
    "PersonaSFTTrainer": "sft",
    "load_personaknob": "data",
    "train": "training",
    "ablate": "training",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'lagdpo' has no attribute {name!r}")
