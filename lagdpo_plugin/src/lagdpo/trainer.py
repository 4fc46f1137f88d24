"""Multi-negative DPO trainers on TRL 1.16's `DPOTrainer`.

`MultiNegDPOTrainer` replaces the pairwise data path of `DPOTrainer` (tokenisation, collation,
reference log-probs, loss) by the multi-negative one: a batch of B records is forwarded once as
``[chosen_0..chosen_{B-1}; active rejections]`` and turned into per-dimension DPO losses L_k. The
subclasses only choose how the L_k are combined and what happens after each optimizer step:

* `MultiNegDPOTrainer` — mean_k L_k.
* `LagDPOTrainer`      — mean_k L_k + Σ λ_k (L_k − ε_k); projected dual ascent on λ per step.
* `PCGradDPOTrainer`   — PCGrad weights from the K×K Gram matrix of per-dimension gradients.
* `SafeRLHFDPOTrainer` — Peer primary, Dignity constrained, one multiplier.
* `MODPOTrainer`       — margin-adjusted loss with rewards of the other dimensions.

Exact global reduction. L_k is a mean over the records of the *optimizer step* (all micro-batches
of gradient accumulation, all processes) where k is active. Before the step, `get_batch_samples`
counts the active records per dimension across micro-batches and all-reduces the counts N_k; each
micro-batch then contributes Σ_b ℓ_bk / N_k (times the world size, which data parallelism averages
away). The sum of the micro-batch gradients is then exactly the gradient of the global objective,
so a 2-process run equals a 1-process run with the same global batch, and the losses fed to the
dual update are the global L_k on every rank.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import TrainerCallback
from trl import DPOTrainer

from . import losses as L
from .config import LagDPOConfig
from .data import MultiNegCollator, load_personaknob, tokenize_personaknob
from .dimensions import DIGNITY, DIMENSIONS, PEER
from .errors import ConfigError, DataError

__all__ = [
    "DUAL_STATE_FILE",
    "TRAINERS",
    "LagDPOTrainer",
    "MODPOTrainer",
    "MultiNegDPOTrainer",
    "PCGradDPOTrainer",
    "SafeRLHFDPOTrainer",
    "check_pcgrad_sharding",
]

K = len(DIMENSIONS)
DUAL_STATE_FILE = "lagdpo_state.json"
HISTORY_COLUMNS = ("step", "dimension", "loss", "lambda")


class _StepEndCallback(TrainerCallback):
    """Runs the trainer's end-of-step hook after every optimizer step, on every process."""

    def __init__(self, trainer: MultiNegDPOTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._end_optimizer_step()


class MultiNegDPOTrainer(DPOTrainer):
    """Multi-Neg DPO: minimise the (weighted) mean of the per-dimension DPO losses."""

    method = "multineg-dpo"
    # Each micro-batch loss is already divided by the global per-dimension counts of the step.
    loss_is_scaled_for_ga = True
    _tag_names: ClassVar[list[str]] = ["trl", "dpo", "lagdpo"]

    def __init__(
        self,
        model,
        ref_model=None,
        args: LagDPOConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
        **kwargs: Any,
    ):
        if args is None:
            args = LagDPOConfig(output_dir="lagdpo-output", method=self.method)
        if processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required.")
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._lag_args = args
        self._weights = torch.tensor(args.weights(), dtype=torch.float64)
        active = args.active_dimensions or list(DIMENSIONS)
        self._active = torch.tensor([d in active for d in DIMENSIONS], dtype=torch.bool)
        collator = MultiNegCollator(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length)
        # Per-step accumulators and history (filled on every rank identically).
        self._acc_sums = torch.zeros(K, dtype=torch.float64)
        self._step_counts: torch.Tensor | None = None
        self._step_micro_batches = 1
        self.history: list[dict[str, Any]] = []
        super().__init__(
            model=model,
            ref_model=ref_model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
            **kwargs,
        )
        self.add_callback(_StepEndCallback(self))
        self._init_duals()

    # ------------------------------------------------------------------ data
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" in dataset.column_names:
            return dataset
        if "dim_mask" not in dataset.column_names:
            dataset = load_personaknob(dataset)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        active = [d in (args.active_dimensions or DIMENSIONS) for d in DIMENSIONS]

        def restrict(example):
            return {"dim_mask": [bool(m and a) for m, a in zip(example["dim_mask"], active)]}

        if not all(active):
            dataset = dataset.map(
                restrict, desc=f"Restricting {dataset_name} to {args.active_dimensions}"
            )
            dataset = dataset.filter(lambda ex: any(ex["dim_mask"]))
            if len(dataset) == 0:
                raise DataError(
                    f"no {dataset_name} record has an active dimension among {args.active_dimensions}."
                )
        if "modpo_rewards" in dataset.column_names:
            dataset = dataset.map(
                lambda ex: {"modpo_rewards": _reward_table(ex["modpo_rewards"], ex["dim_mask"])}
            )

        def tokenize(example):
            return tokenize_personaknob(
                example,
                tokenizer,
                use_chat_template=args.use_chat_template,
                system_prompt=args.system_prompt,
            )

        dataset = dataset.map(tokenize, desc=f"Tokenizing {dataset_name} dataset")
        if args.max_length is not None:
            dataset = dataset.filter(lambda ex: len(ex["prompt_ids"]) < args.max_length)
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = [
                "prompt_ids",
                "chosen_ids",
                "rejected_ids",
                "dim_mask",
                "ref_logps",
                "modpo_rewards",
            ]

    # ------------------------------------------------------------------ log-probabilities
    def _sequence_logps(self, model, inputs, **extra) -> torch.Tensor:
        """Summed completion log-probabilities of every row of the batch, shape (B + R,)."""
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            fused_lm_head=True,
            use_cache=False,
            **extra,
        )
        seq_len = completion_mask.size(1) - 1
        # summed in float32: under FSDP's bf16 parameters the per-token log-probs are bf16, and a
        # bf16 sum over a completion loses more than a typical DPO margin
        return outputs.log_probs[:, -seq_len:].float().sum(dim=1)

    @staticmethod
    def _unpack(logps: torch.Tensor, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Split row log-probs into chosen (B,) and a (B, K) matrix of rejections (0 where inactive)."""
        b = inputs["dim_mask"].shape[0]
        chosen = logps[:b]
        rejected = logps.new_zeros((b, K))
        rejected = rejected.index_put(
            (inputs["rejected_record"], inputs["rejected_dim"]), logps[b:]
        )
        return chosen, rejected

    def _reference_logps(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        if "ref_logps" in inputs:
            ref = inputs["ref_logps"]
            return ref[:, 0], ref[:, 1:]
        return self._unpack(self.compute_ref_log_probs(None, inputs), inputs)

    def compute_ref_log_probs(self, model, inputs):
        """Reference log-probs of every row; (B + R,). Uses the ref model, or the PEFT base model."""
        return self._frozen_logps(model, inputs, reference=True)

    def _frozen_logps(self, model, inputs, reference: bool) -> torch.Tensor:
        """Row log-probs without gradients; ``reference``: with a PEFT policy and no separate
        reference model, the adapter is switched off (as in TRL) whichever wrapper is passed."""
        from accelerate.utils import is_peft_model
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import use_adapter

        ctx = contextlib.nullcontext()
        if model is None:
            model = self.ref_model if self.ref_model is not None else self.model
        if reference and self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            ctx = use_adapter(
                unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None
            )
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            ctx,
            self.accelerator.autocast(),
        ):
            return self._sequence_logps(model, inputs)

    def _precompute_reference(self):
        """The model that precomputes reference log-probs, chosen as TRL 1.16 chooses it.

        Before `train` the policy is not prepared yet: under DeepSpeed (no separate reference) it
        is wrapped once in an inference engine that places (ZeRO-1/2) or gathers (ZeRO-3) its
        parameters; otherwise the reference (prepared by TRL) or the policy is used as it is.
        """
        if self.ref_model is None and self.is_deepspeed_enabled:
            if getattr(self, "_precompute_engine", None) is None:
                from trl.models import prepare_deepspeed

                self._precompute_engine = prepare_deepspeed(self.model, self.accelerator)
            return self._precompute_engine
        return self.ref_model if self.ref_model is not None else self.model

    def _prepare_frozen(self, model):
        """Prepare a frozen scoring model like TRL prepares its reference (sharded where the policy is)."""
        if self.is_deepspeed_enabled:
            from trl.models import prepare_deepspeed

            return prepare_deepspeed(model, self.accelerator)
        if self.is_fsdp_enabled:
            from trl.models import prepare_fsdp

            return prepare_fsdp(model, self.accelerator)
        return model.to(self.accelerator.device).eval()

    def _row_table(self, dataset, batch_size: int, model, reference: bool = True) -> torch.Tensor:
        """Summed log-probs of chosen and every rejection under ``model``: (N, K + 1), 0 where inactive.

        As TRL's precompute: the records are sharded across processes by the prepared data
        loader, each rank scores its share, and the rows are gathered back in dataset order, so
        every rank holds the whole table.
        """
        from torch.utils.data import DataLoader

        loader = DataLoader(
            dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids", "dim_mask"]),
            batch_size=batch_size,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            shuffle=False,
        )
        rows = []
        for batch in self.accelerator.prepare(loader):
            logps = self._frozen_logps(model, batch, reference=reference).float()
            chosen, rejected = self._unpack(logps, batch)
            table = torch.cat([chosen.unsqueeze(1), rejected], dim=1)
            rows.append(self.accelerator.gather_for_metrics(table).cpu())
        table = torch.cat(rows) if rows else torch.zeros(0, K + 1)
        if len(table) != len(dataset):
            raise RuntimeError(
                f"gathered {len(table)} rows of log-probs for {len(dataset)} records."
            )
        return table

    def _precompute_ref_logps(self, dataset, name, batch_size):
        """Reference log-probs of chosen and every rejection, once, as a ``ref_logps`` column (K + 1 per record)."""
        table = self._row_table(dataset, batch_size, self._precompute_reference())
        if "ref_logps" in dataset.column_names:
            dataset = dataset.remove_columns("ref_logps")
        return dataset.add_column("ref_logps", table.tolist())

    # ------------------------------------------------------------------ step bookkeeping
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = torch.zeros(K, dtype=torch.float64)
        for batch in batch_samples:
            counts += batch["dim_mask"].to("cpu").sum(dim=0).to(torch.float64)
        self._step_counts = self._all_reduce(counts)
        self._step_micro_batches = max(1, len(batch_samples))
        return batch_samples, num_items

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes (every rank calls it; the result is identical everywhere)."""
        if self.accelerator.num_processes == 1:
            return tensor
        reduced = self.accelerator.reduce(tensor.to(self.accelerator.device), reduction="sum")
        return reduced.to("cpu", torch.float64)

    def _end_optimizer_step(self):
        if self._step_counts is None:
            return
        sums = self._all_reduce(self._acc_sums.clone())
        dim_losses, present = L.reduce_dimension_losses(sums, self._step_counts)
        step = self.state.global_step
        for name, value in self.step_metrics(dim_losses, present).items():
            self._metrics["train"][name].append(value)
        self.update_duals(dim_losses, present, step)
        for k, dim in enumerate(DIMENSIONS):
            if present[k]:
                self._metrics["train"][f"loss_{dim}"].append(float(dim_losses[k]))
        for name, value in self.dual_metrics().items():
            self._metrics["train"][name].append(value)
        self._acc_sums.zero_()
        self._step_counts = None

    # ------------------------------------------------------------------ hooks for subclasses
    def _init_duals(self):
        pass

    def loss_coefficients(self, present: torch.Tensor) -> torch.Tensor:
        """Weight of each per-dimension term in the primal loss (constant w.r.t. the parameters)."""
        return L._normalised_weights(present, self._weights, self._weights)

    def combine(self, terms: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        coef = self.loss_coefficients(present).to(terms)
        return (coef * terms).sum()

    def pair_losses(self, chosen, rejected, ref_chosen, ref_rejected, mask, inputs) -> torch.Tensor:
        return L.dimension_pair_losses(chosen, rejected, ref_chosen, ref_rejected, mask, self.beta)

    def update_duals(self, dim_losses: torch.Tensor, present: torch.Tensor, step: int) -> None:
        pass

    def step_metrics(self, dim_losses: torch.Tensor, present: torch.Tensor) -> dict[str, float]:
        """Objective values of the finished step (before the dual update), logged with it."""
        return {}

    def dual_metrics(self) -> dict[str, float]:
        return {}

    def dual_state_dict(self) -> dict[str, Any]:
        return {"method": self.method, "history": self.history}

    def load_dual_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        mask = inputs["dim_mask"] & self._active.to(inputs["dim_mask"].device)
        logps = self._sequence_logps(model, inputs)
        chosen, rejected = self._unpack(logps, inputs)
        ref_chosen, ref_rejected = self._reference_logps(inputs)
        ref_chosen, ref_rejected = ref_chosen.to(chosen), ref_rejected.to(chosen)
        pair = self.pair_losses(chosen, rejected, ref_chosen, ref_rejected, mask, inputs)
        sums, counts = L.dimension_loss_sums(pair, mask)

        training = mode == "train" and self._step_counts is not None
        if training:
            global_counts = self._step_counts.to(sums.device, sums.dtype)
            scale = float(self.accelerator.num_processes)
            self._acc_sums += sums.detach().to("cpu", torch.float64)
        else:
            global_counts, scale = counts, 1.0
        present = (global_counts > 0).to("cpu")
        terms = scale * sums / global_counts.clamp(min=1)
        loss = self.combine(terms, present)

        # Metrics (local values, gathered like TRL does)
        with torch.no_grad():
            delta = self.beta * L.pair_logratio_margins(chosen, rejected, ref_chosen, ref_rejected)
            m = mask.bool()
            margins = self.accelerator.gather_for_metrics(
                delta[m].detach().float().mean().reshape(1)
            )
            acc = self.accelerator.gather_for_metrics((delta[m] > 0).float().mean().reshape(1))
            self._metrics[mode]["rewards/margins"].append(margins.nanmean().item())
            self._metrics[mode]["rewards/accuracies"].append(acc.nanmean().item())
            if mode == "eval":
                dim_losses, eval_present = L.reduce_dimension_losses(sums.detach(), counts)
                for k, dim in enumerate(DIMENSIONS):
                    if eval_present[k]:
                        self._metrics[mode][f"loss_{dim}"].append(float(dim_losses[k]))
            if mode == "train":
                n_tokens = (
                    self.accelerator.gather_for_metrics(inputs["attention_mask"].sum().reshape(1))
                    .sum()
                    .item()
                )
                self._total_train_tokens += n_tokens
                self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        if return_outputs:
            return loss, {"logps": logps.detach()}
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, return_outputs=False)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = (
                Path(self._get_output_dir(trial=trial))
                / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            folder.mkdir(parents=True, exist_ok=True)
            (folder / DUAL_STATE_FILE).write_text(json.dumps(self.dual_state_dict(), indent=1))

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint is not None and resume_from_checkpoint is not False:
            path = resume_from_checkpoint
            if path is True:
                from transformers.trainer_utils import get_last_checkpoint

                path = get_last_checkpoint(self.args.output_dir)
                if path is None:
                    raise ConfigError(
                        f"no checkpoint found in output_dir {self.args.output_dir!r} to resume from."
                    )
            self._restore_dual_state(Path(path))
            resume_from_checkpoint = str(path)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _restore_dual_state(self, checkpoint: Path) -> None:
        """Load the multipliers saved with ``checkpoint`` on the main process and broadcast them.

        Only the main process reads the file (it wrote it), so ranks on other nodes need no
        shared filesystem. A multiplier method whose checkpoint lacks the state fails on every
        rank at once rather than silently restarting λ from its initial value.
        """
        from accelerate.utils import broadcast_object_list

        state = [None]
        if self.accelerator.is_main_process:
            state_file = checkpoint / DUAL_STATE_FILE
            if state_file.exists():
                state = [json.loads(state_file.read_text())]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(state, from_process=0)
        if state[0] is not None:
            self.load_dual_state_dict(state[0])
        elif self.method in ("lagdpo", "safe-rlhf"):
            raise ConfigError(
                f"cannot resume {self.method}: {str(checkpoint / DUAL_STATE_FILE)!r} is missing on "
                "the main process, so the multipliers λ cannot be restored; resume from a "
                "checkpoint written by lagdpo, or start a new run without --resume."
            )

    def save_lambda_history(self, path: str | os.PathLike) -> Path:
        """Write the multiplier history as CSV with columns step, dimension, loss, lambda."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS)
            writer.writeheader()
            for row in self.history:
                writer.writerow({key: row[key] for key in HISTORY_COLUMNS})
        return path


def _reward_table(value, dim_mask) -> list[list[float]]:
    """Normalise a record's ``modpo_rewards`` to a (K + 1) × K table: rows golden, reject_A..C; columns reward model A..C.

    Accepted forms: that nested list, or a mapping {"golden": {dim: r}, "reject_A": {dim: r}, …}
    (JSON text allowed). Inactive rejections may be omitted.
    """
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict):
        keys = ["golden"] + [f"reject_{d}" for d in DIMENSIONS]
        table = []
        for row_index, key in enumerate(keys):
            row = value.get(key)
            if row is None:
                if row_index == 0 or dim_mask[row_index - 1]:
                    raise DataError(f"modpo_rewards lacks rewards for {key!r}.")
                row = {}
            table.append([float(row.get(d, 0.0)) for d in DIMENSIONS])
        return table
    table = [[float(x) for x in row] for row in value]
    if len(table) != K + 1 or any(len(row) != K for row in table):
        raise DataError(f"modpo_rewards must be a {K + 1}×{K} table (golden, reject_A..C × A..C).")
    return table


class LagDPOTrainer(MultiNegDPOTrainer):
    """Lag-DPO: mean_k L_k + Σ_k λ_k (L_k − ε_k), λ updated once per optimizer step.

    The loss it returns (and TRL logs as ``loss``) is that Lagrangian, −Σ λ_k ε_k included (a
    constant in the parameters, spread over the micro-batches of the step). Each step also logs
    ``lagrangian`` (the same value, from the all-reduced L_k), ``weighted_dpo_loss`` (Σ_k w_k L_k,
    w normalised), ``loss_A`` … ``loss_C`` (L_k) and ``lambda_A`` … (λ after the step's update;
    the step's Lagrangian uses λ before it).
    """

    method = "lagdpo"

    def combine(self, terms, present):
        loss = super().combine(terms, present)
        offset = -torch.where(present, self.lambdas * self.epsilons, 0.0).sum()
        if self.model.training and self._step_counts is not None:
            offset = offset / self._step_micro_batches  # the micro-batch losses sum to the step's
        return loss + offset.to(loss)

    def step_metrics(self, dim_losses, present):
        weights = self._weights
        return {
            "lagrangian": float(
                L.lagrangian_loss(dim_losses, self.lambdas, self.epsilons, present, weights)
            ),
            "weighted_dpo_loss": float(L.multineg_dpo_loss(dim_losses, present, weights)),
        }

    def _init_duals(self):
        args = self._lag_args
        self.lambdas = torch.full((K,), float(args.lambda_init), dtype=torch.float64)
        self.epsilons = torch.tensor(args.epsilons(), dtype=torch.float64)

    def loss_coefficients(self, present):
        return L.lagrangian_coefficients(self.lambdas, present, self._weights)

    def update_duals(self, dim_losses, present, step):
        args = self._lag_args
        self.lambdas = L.dual_update(
            self.lambdas,
            dim_losses,
            self.epsilons,
            args.dual_lr,
            present=present,
            lambda_max=args.lambda_max,
        )
        for k, dim in enumerate(DIMENSIONS):
            if present[k]:
                self.history.append(
                    {
                        "step": step,
                        "dimension": dim,
                        "loss": float(dim_losses[k]),
                        "lambda": float(self.lambdas[k]),
                    }
                )

    def dual_metrics(self):
        return {f"lambda_{dim}": float(self.lambdas[k]) for k, dim in enumerate(DIMENSIONS)}

    def dual_state_dict(self):
        return {**super().dual_state_dict(), "lambdas": self.lambdas.tolist()}

    def load_dual_state_dict(self, state):
        super().load_dual_state_dict(state)
        if "lambdas" in state:
            self.lambdas = torch.tensor(state["lambdas"], dtype=torch.float64)


def check_pcgrad_sharding(engine: str | None, zero_stage: int | None, is_peft: bool) -> None:
    """Refuse PCGrad on sharded full-model parameters (ZeRO-3 or FSDP) unless they are an adapter.

    PCGrad keeps one flattened full gradient per dimension and all-reduces the K × P float64
    matrix every micro-batch: with P the full model that defeats the sharding (and needs the
    parameters gathered); with a LoRA adapter P is small.
    """
    sharded = engine == "fsdp" or (engine == "deepspeed" and zero_stage == 3)
    if sharded and not is_peft:
        what = "FSDP" if engine == "fsdp" else "DeepSpeed ZeRO-3"
        raise ConfigError(
            f"pcgrad-dpo under {what} would hold {K} full gradients of the sharded model and "
            f"all-reduce a {K} × parameters matrix every micro-batch: train a LoRA adapter "
            "(use_peft: true, e.g. --config paper-lora) or use the ddp-lora or zero2 config."
        )


class PCGradDPOTrainer(MultiNegDPOTrainer):
    """PCGrad-DPO: project conflicting per-dimension gradients (Yu et al. 2020).

    The projection runs on the K×K Gram matrix of the per-dimension gradients (see
    `losses.pcgrad_weights`), then one backward of the weighted sum. Under data parallelism the
    per-dimension gradients are averaged across processes before the Gram matrix is formed, so
    every rank projects the global gradients and derives the same weights. The projection is per
    micro-batch; the K extra backward passes and the (K × parameters) buffer make it best suited
    to LoRA or small models.
    """

    method = "pcgrad-dpo"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from accelerate.utils import is_peft_model

        engine = (
            "deepspeed" if self.is_deepspeed_enabled else "fsdp" if self.is_fsdp_enabled else None
        )
        stage = None
        if engine == "deepspeed":
            stage = self.accelerator.state.deepspeed_plugin.zero_stage
        check_pcgrad_sharding(engine, stage, is_peft_model(self.model))

    def combine(self, terms, present):
        if not self.model.training:
            return super().combine(terms, present)
        params = [p for p in self.model.parameters() if p.requires_grad]
        flat = []
        for k in range(K):
            if not present[k] or not terms[k].requires_grad:
                flat.append(None)
                continue
            grads = torch.autograd.grad(terms[k], params, retain_graph=True, allow_unused=True)
            flat.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads, params)
                    ]
                )
            )
        ref = next(f for f in flat if f is not None)
        stacked = torch.stack([f if f is not None else torch.zeros_like(ref) for f in flat]).to(
            torch.float64
        )
        if self.accelerator.num_processes > 1:
            stacked = self.accelerator.reduce(stacked, reduction="mean")
        gram = stacked @ stacked.T
        orders = None
        if self._lag_args.pcgrad_shuffle:
            gen = torch.Generator().manual_seed(
                int(self.args.seed) * 1_000_003 + int(self.state.global_step)
            )
            orders = [torch.randperm(K, generator=gen).tolist() for _ in range(K)]
        w = L.pcgrad_weights(
            gram.cpu(), present=present, orders=orders, reduction=self._lag_args.pcgrad_reduction
        )
        base = self._weights * K / self._weights.sum()  # dimension weights, 1 each when uniform
        return ((w * base).to(terms) * terms).sum()


class SafeRLHFDPOTrainer(MultiNegDPOTrainer):
    """Safe-RLHF style: Peer (E, C) primary, Dignity (A, T) ≤ threshold, one multiplier.

    Primal loss (L_Peer + λ L_Dignity) / (1 + λ). After each step the constraint cost is smoothed
    by a moving average and λ updated (log-parametrised by default, as in Safe-RLHF).
    """

    method = "safe-rlhf"

    def _init_duals(self):
        self.lam = torch.tensor(float(self._lag_args.safe_rlhf_lambda_init), dtype=torch.float64)
        self.cost_ema: float | None = None
        self._primary = torch.tensor([d in PEER for d in DIMENSIONS])

    def loss_coefficients(self, present):
        return L.safe_rlhf_coefficients(present, self._primary, self.lam)

    def update_duals(self, dim_losses, present, step):
        args = self._lag_args
        dignity = [DIMENSIONS.index(d) for d in DIGNITY if present[DIMENSIONS.index(d)]]
        if not dignity:
            return
        cost = float(sum(dim_losses[i] for i in dignity) / len(dignity))
        mom = args.safe_rlhf_cost_momentum
        self.cost_ema = cost if self.cost_ema is None else mom * self.cost_ema + (1 - mom) * cost
        self.lam = L.safe_rlhf_lambda_update(
            self.lam,
            self.cost_ema,
            args.safe_rlhf_threshold,
            args.safe_rlhf_lambda_lr,
            log_parametrised=args.safe_rlhf_log_lambda,
            lambda_max=args.lambda_max,
        )
        self.history.append(
            {"step": step, "dimension": "dignity", "loss": cost, "lambda": float(self.lam)}
        )

    def dual_metrics(self):
        return {"lambda_dignity": float(self.lam)}

    def dual_state_dict(self):
        return {**super().dual_state_dict(), "lambda": float(self.lam), "cost_ema": self.cost_ema}

    def load_dual_state_dict(self, state):
        super().load_dual_state_dict(state)
        if "lambda" in state:
            self.lam = torch.tensor(state["lambda"], dtype=torch.float64)
            self.cost_ema = state.get("cost_ema")


class MODPOTrainer(MultiNegDPOTrainer):
    """MODPO: each pair (y_w, y_k) is a DPO pair for dimension k whose margin carries the other
    dimensions' rewards: −log σ((1/w_k)[β Δ_bk − Σ_{j≠k} w_j (r_j(y_w) − r_j(y_k))]).

    Rewards come from a ``modpo_rewards`` column in the data or are computed once before training
    from ``modpo_reward_models`` (implicit reward β·(log π_j − log π_ref) of each completion).
    """

    method = "modpo"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "modpo_rewards" not in self.train_dataset.column_names:
            if not self._lag_args.modpo_reward_models:
                raise ConfigError(
                    "MODPO needs margins: add a `modpo_rewards` column to the data or set `modpo_reward_models` "
                    "({dim: path of a causal LM}) in the config."
                )
            self.train_dataset = self._add_model_rewards(self.train_dataset)
            if self.eval_dataset is not None and not isinstance(self.eval_dataset, dict):
                self.eval_dataset = self._add_model_rewards(self.eval_dataset)

    def _add_model_rewards(self, dataset):
        """``modpo_rewards`` = β (log π_j − log π_ref) of every completion, for each reward model j.

        Sharded and gathered like the reference precompute; each reward model is loaded from its
        path (partitioned at load under ZeRO-3) and prepared like TRL prepares a reference.
        """
        from trl.trainer.utils import add_fused_lm_head, create_model_from_path

        batch_size = self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
        if "ref_logps" in dataset.column_names:
            ref = torch.tensor(dataset["ref_logps"], dtype=torch.float32)
        else:
            ref = self._row_table(dataset, batch_size, self._precompute_reference())
        rewards = torch.zeros(len(dataset), K + 1, K)
        for j, dim in enumerate(DIMENSIONS):
            path = self._lag_args.modpo_reward_models.get(dim)
            if path is None:
                continue  # no reward model: that objective contributes no margin
            # device_map=None: _prepare_frozen places it (TRL's default "auto" on a GPU is
            # refused by ZeRO-3 and would spread the model over every GPU of each rank)
            reward_model = create_model_from_path(
                str(path), dtype=self.model.dtype, device_map=None
            ).eval()
            add_fused_lm_head(reward_model)
            reward_model = self._prepare_frozen(reward_model)
            scores = self._row_table(dataset, batch_size, reward_model, reference=False)
            rewards[:, :, j] = self.beta * (scores - ref)
            del reward_model
        return dataset.add_column("modpo_rewards", rewards.tolist())

    def pair_losses(self, chosen, rejected, ref_chosen, ref_rejected, mask, inputs):
        table = inputs["modpo_rewards"].to(chosen)  # (B, K+1, K)
        w = (self._weights / self._weights.sum()).to(chosen)
        margins = L.modpo_combined_margins(table[:, 0, :], table[:, 1:, :], w)
        return L.modpo_pair_losses(
            chosen, rejected, ref_chosen, ref_rejected, mask, self.beta, margins, w
        )

    def loss_coefficients(self, present):
        # The objective weights already sit inside each pair loss (1/w_k); dimensions are averaged uniformly.
        return L._normalised_weights(present, None, self._weights)


TRAINERS: dict[str, type[MultiNegDPOTrainer]] = {
    "multineg-dpo": MultiNegDPOTrainer,
    "lagdpo": LagDPOTrainer,
    "pcgrad-dpo": PCGradDPOTrainer,
    "safe-rlhf": SafeRLHFDPOTrainer,
    "modpo": MODPOTrainer,
    "sacpo": MultiNegDPOTrainer,  # each SACPO stage is Multi-Neg DPO on one group (see lagdpo.sacpo)
}
