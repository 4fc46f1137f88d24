"""Tiny, fully local models, tokenizers and PersonaKnob records for the plug-in's tests.

Nothing downloads: the tokenizer is a `tokenizers` WordLevel model over a fixed vocabulary wrapped
in `PreTrainedTokenizerFast` with a chat template, the model a 2-layer Llama with hidden size 16.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<user>", "<assistant>", "<system>"]
TOPICS = [f"topic{i}" for i in range(12)]
WORDS = [
    "tell",
    "me",
    "about",
    "please",
    "explain",
    "why",
    "how",
    "what",
    "is",
    "the",
    "my",
    "plan",
    "idea",
    "good",
    "bad",
    "true",
    "false",
    "maybe",
    "i",
    "think",
    "you",
    "should",
    "honestly",
    "feel",
    "sorry",
    "great",
    "wonderful",
    "new",
    "creative",
    "dull",
    "agree",
    "disagree",
    "risk",
    "safe",
    "unsafe",
    "kind",
    "cold",
    "story",
    "answer",
    "help",
    "yes",
    "no",
]
# Distinct marker words per completion type, so each rejection is learnable on its own.
MARKERS = {
    "golden": ["honest", "caring", "inventive", "grounded"],
    "A": ["flatter", "agree", "praise", "yes"],
    "T": ["disclaim", "refuse", "cannot", "policy"],
    "E": ["cold", "blunt", "whatever", "fine"],
    "C": ["dull", "plain", "generic", "same"],
}
VOCAB = SPECIALS + sorted(set(TOPICS + WORDS + [w for ws in MARKERS.values() for w in ws]))

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def build_tokenizer(chat: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def save_tiny(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny model and its tokenizer to ``path`` (a from_pretrained-able directory)."""
    path = Path(path)
    build_model(seed).save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


def _completion(kind: str, topic: str, rng: random.Random) -> str:
    words = MARKERS[kind] + [topic] + rng.sample(WORDS, 2)
    return " ".join(words)


def make_records(n: int = 8, seed: int = 0, masks: list[list[str]] | None = None) -> list[dict]:
    """PersonaKnob-format records; masks cycle through ``masks`` (default: a varied set)."""
    rng = random.Random(seed)
    masks = masks or [
        ["A", "T", "E", "C"],
        ["E", "A"],
        ["T"],
        ["C", "E"],
        ["A", "C"],
        ["T", "E", "C"],
    ]
    records = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        mask = masks[i % len(masks)]
        rec = {
            "mask": list(mask),
            "prompt": f"tell me about {topic} please",
            "golden": _completion("golden", topic, rng),
            "seed_scene": f"scene {i}",
            "context": "",
            "trigger": "",
        }
        for dim in "ATEC":
            rec[f"reject_{dim}"] = _completion(dim, topic, rng) if dim in mask else ""
        records.append(rec)
    return records


def fast_settings(**overrides) -> dict:
    """Training settings for a few quick CPU steps on the tiny model."""
    settings = {
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 5e-3,
        "max_steps": 3,
        "logging_steps": 1,
        "save_strategy": "no",
        "gradient_checkpointing": False,
        "seed": 0,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "beta": 0.5,
    }
    settings.update(overrides)
    return settings


#: Environment of the CPU multi-process tests: offline, one thread per rank, no GPU, no bars.
CPU_RUN_ENV = {
    "CUDA_VISIBLE_DEVICES": "",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "OMP_NUM_THREADS": "1",
    "TQDM_DISABLE": "1",
}


def dual_run_records() -> list[dict]:
    """16 records whose varied masks give the ranks' shards different per-dimension counts; C's
    rejected answer is the golden one, which keeps L_C above ε so λ_C moves."""
    records = make_records(
        16, seed=3, masks=[["A", "T", "E", "C"], ["E"], ["T", "C"], ["A"], ["E", "A", "C"]]
    )
    for r in records:
        if "C" in r["mask"]:
            r["reject_C"] = r["golden"]
    return records


def dual_run_settings(world: int, global_batch: int, **extra) -> dict:
    """Settings under which λ moves within 3 steps; the per-device batch keeps the global one."""
    settings = fast_settings(
        per_device_train_batch_size=global_batch // world,
        optim="sgd",
        learning_rate=0.5,
        epsilon=0.6,
        lambda_init=0.2,
        dual_lr=0.5,
    )
    if world > 1:
        settings["ddp_backend"] = "gloo"
    settings.update(extra)
    return settings


def accelerate_env(config: str, num_processes: int, mixed_precision: str = "no") -> dict[str, str]:
    """The environment `accelerate launch --config_file CONFIG` gives its processes, on CPU.

    Built by accelerate's own launcher code from a shipped (or given) config, with CUDA hidden;
    the processes are then started by `torch.distributed.run` (accelerate's multi-CPU launcher
    needs mpirun).
    """
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    from lagdpo.launch import accelerate_config_path

    argv = ["--config_file", str(accelerate_config_path(config))]
    argv += ["--num_processes", str(num_processes), "--mixed_precision", mixed_precision, "x.py"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    if args.use_deepspeed:  # as accelerate.commands.launch.launch_command sets it
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    env.update(CPU_RUN_ENV)
    return env
