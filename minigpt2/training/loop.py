"""The training loop, in the order nanoGPT's train.py runs it: a model (a checkpoint to fine-tune, or a shape
to train from scratch), its data, AdamW with its schedule, then step after step: the learning rate of the
step, micro-batches whose gradients add up, clipping, the update; the val loss every eval_every steps, a
checkpoint every save_every steps and at the end, a JSONL row for every step.

    trainer = train(TrainConfig("notes.txt", model="gpt2", steps=200, out="out"))
    trainer = resume("out")                           # from its newest checkpoint, bit for bit
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..checkpoint import CheckpointError
from ..loading import LoadOptions
from ..model import GPT2Config
from ..scoring import score
from . import checkpoints, data, distributed, track
from .build import build, check_resumed_shape, sizes
from .compiling import StepModule
from .config import TrainConfig, autocast_dtype, default_lr
from .optim import Schedule, adamw, clip, micro_steps
from .progress import Progress, plot_log


class Trainer:
    """A run set up from its config (and, resuming, its checkpoint): call fit() to train."""

    def __init__(self, config: TrainConfig, resume_from: Path | None = None):
        lr = default_lr(config)
        min_lr = config.min_lr if config.min_lr is not None else lr / 10
        self.source = data.source(config.data, config.dataset_config, config.dataset_split, config.text_field)
        self.config = c = replace(config, data=str(self.source), lr=lr, min_lr=min_lr)
        self.device = distributed.setup(LoadOptions(device=c.device).device)
        distributed.check_batch_size(c.batch_size)
        state = checkpoints.read_state(resume_from) if resume_from else None
        self.out = Path(c.out)
        self._check_out(state)
        torch.manual_seed(c.seed)
        self.built = build(c, self.source, resume_from, self.device)
        self.model, self.tokenizer, self.vocab = self.built.model, self.built.tokenizer, self.built.vocab
        self.block_size = self.built.block_size
        with distributed.main_first():  # rank 0 tokenizes into the cache, the others read it there
            self._build_data()
        self.probes = track.probes(c, self.tokenizer, self.model.config, self.block_size)
        self.schedule = Schedule(c.lr, c.min_lr, c.warmup, c.steps, c.schedule)
        self.micro = micro_steps(c.tokens_per_step, c.batch_size, self.block_size)
        parallel = distributed.wrap(self.model, self.device, c.fsdp)
        if distributed.size() > 1:  # each rank its own dropout masks; the init was the same on every rank
            torch.manual_seed(c.seed + distributed.rank())
        self.optimizer = adamw(self.model, lr=c.lr, weight_decay=c.weight_decay, betas=(c.beta1, c.beta2))
        self.amp = autocast_dtype(c.dtype, self.device, c.fsdp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp is torch.float16 else None
        self.step, self.history = 0, []
        # What train_step runs: the wrapped model, or its compiled self (a resume keeps the run's choice).
        self.step_module = StepModule(parallel, self.device, c.compile, state.get("compiled") if state else None)
        if state:
            self._restore(state)
        self.log_path = Path(c.log) if c.log else self.out / "log.jsonl"

    def _check_out(self, state: dict | None) -> None:
        """A new run never writes over checkpoints, and a resume never continues behind later ones."""
        found = checkpoints.checkpoints(self.out) if self.out.is_dir() else []
        later = [p for p in found if state is None or int(p.name[5:]) > state["step"]]
        if later and state is None:
            raise CheckpointError(
                f"{self.out} holds checkpoints already ({later[-1].name}); continue with --resume {self.out}, "
                "or give another --out"
            )
        if later:
            raise CheckpointError(
                f"{self.out} holds checkpoints after step {state['step']} ({later[-1].name}); resume from the "
                "newest, or give another --out"
            )

    def _build_data(self) -> None:
        c = self.config
        B, T = c.batch_size, self.block_size
        if c.instructions:
            examples = data.read_instructions(Path(c.data), self.tokenizer, T)
            held = round(len(examples) * c.val_fraction)
            if c.val_fraction and not held:
                raise ValueError(f"{c.data}: {len(examples)} examples leave none for the val split; give more")
            self.data_key = hashlib.sha256(Path(c.data).read_bytes()).hexdigest()[:16]
            pad = self.tokenizer.eos_token_id if self.tokenizer.pad_token_id is None else self.tokenizer.pad_token_id
            self.batches = data.Examples(examples[: len(examples) - held], B, c.seed, pad)
            val = data.Examples(examples[len(examples) - held :], B, c.seed, pad) if held else None
        else:
            fingerprint = self.vocab.fingerprint if self.vocab else _files_hash(self.built.tokenizer_files)
            train, val_shards, self.data_key = data.token_streams(self.source, self.tokenizer, fingerprint)
            train, val_split = (train, val_shards) if val_shards else data.split(train, c.val_fraction)
            data.check_fits(train, T, "train")
            if val_shards or c.val_fraction:
                data.check_fits(val_split, T, "val")
            self.batches = data.Windows(train, T, B, c.seed)
            val = data.Windows(val_split, T, B, c.seed) if val_split else None
        self.val_batches = val.fixed(c.eval_batches) if val else []

    def _restore(self, state: dict) -> None:
        if state["data_key"] != self.data_key:
            raise CheckpointError(
                f"the data at {self.config.data} is not what the checkpoint was trained on (its content changed); "
                "resume with the same data"
            )
        distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.batches.load_state_dict(state["data"])  # the same on every rank: each draws the whole batch
        if len(state["rng"]) == distributed.size():  # else each rank keeps its new seed's
            rng = state["rng"][distributed.rank()]
            torch.set_rng_state(rng["torch"])
            if rng["cuda"]:
                torch.cuda.set_rng_state_all(rng["cuda"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]

    def fit(self) -> list[dict]:
        """Train up to config.steps; returns (and appends to history) the log row of every step."""
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        board = self.out / "tensorboard" if c.tensorboard else None
        main = distributed.is_main()  # only rank 0 shows and logs the run; every rank has the same rows
        progress = Progress(self.log_path, c.steps, c.log_every, self.step, board) if main else contextlib.nullcontext()
        with progress:
            while self.step < c.steps:
                row = self.train_step()
                last = self.step == c.steps
                if self.val_batches and (self.step % c.eval_every == 0 or last):
                    row["val_loss"] = self.evaluate()
                if c.sample_every and self.step % c.sample_every == 0:
                    row["sample"] = self.sample()
                for probe in self.probes:  # on every rank, as evaluate()
                    if self.step % probe.every == 0 or last:
                        row |= probe(self.model)
                if main:
                    progress.record(row)
                self.history.append(row)
                if self.step % c.save_every == 0 or last:
                    self.save()
        if c.plot and main:
            plot_log(self.log_path, self.out / "loss.png")
        return self.history

    def train_step(self) -> dict:
        """One optimizer step: its learning rate, the micro-batches' gradients added up, clipping, the update."""
        started = time.perf_counter()
        lr = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        loss, tokens = torch.zeros((), device=self.device), 0
        for i in range(self.micro):
            x, y = next(self.batches)
            tokens += x.numel()  # the whole batch's, over every rank
            x, y, weight = distributed.share(x, y)
            x, y = x.to(self.device), y.to(self.device)
            with distributed.gradient_sync(self.step_module.eager, last=i == self.micro - 1):
                with self._autocast():
                    # The mean over the step's micro-batches (and over the ranks: share()'s weight).
                    micro_loss = self.step_module(x, labels=y).loss * weight / self.micro
                (self.scaler.scale(micro_loss) if self.scaler else micro_loss).backward()
            loss += micro_loss.detach()
        loss = distributed.mean(loss.item())  # the whole batch's
        if not math.isfinite(loss):
            raise ValueError(
                f"the loss is {loss} at step {self.step + 1}; the run stops (its checkpoints are kept): "
                "lower --lr, or train in float32 or bfloat16"
            )
        if self.scaler:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients
        grad_norm = clip(self.model, self.config.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        seconds = time.perf_counter() - started
        row = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens / seconds}
        return row | self.step_module.timed(seconds)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()

    def evaluate(self) -> float:
        """The mean loss over every counted token of the fixed val batches, as the model's loss counts them."""
        self.model.eval()
        nll, counted = 0.0, 0
        for x, y in self.val_batches:
            x, y, _ = distributed.share(x, y)  # each rank its rows; their sums are added up below
            with self._autocast():
                logprobs = score(self.model, x.to(self.device))  # [B, T-1]: log p(token t | before t)
            mask = (y[:, 1:] != data.IGNORE).to(self.device)
            nll -= logprobs.double().mul(mask).sum().item()
            counted += int(mask.sum())
        nll, counted = distributed.all_sum(nll, counted)
        self.model.train()
        return nll / counted

    def sample(self) -> str:
        """Seeded text from the start token: the same draws at every sample, so the change is the model's."""
        start = self.tokenizer.eos_token_id if self.tokenizer.bos_token_id is None else self.tokenizer.bos_token_id
        self.model.eval()
        ids = torch.tensor([[start]], device=self.device)
        tokens = min(self.config.sample_tokens, self.model.config.n_positions - 1)
        out = self.model.generate(ids, max_new_tokens=tokens, do_sample=True, seed=self.config.seed)
        self.model.train()
        return self.tokenizer.decode(out[0, 1:].tolist())

    def save(self) -> Path | None:
        """This step's checkpoint, written by rank 0; on the others None, once it is complete."""
        c, model = self.config, self.model
        config_json = checkpoints.hf_config(model.config, self.built.base_config, self.tokenizer.bos_token_id)
        generation = {"bos_token_id": config_json["bos_token_id"], "eos_token_id": config_json["eos_token_id"]}
        rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
        }
        state = {
            "step": self.step,
            "config": dataclasses.asdict(c),
            "shape": dataclasses.asdict(model.config),
            "optimizer": distributed.optimizer_state(model, self.optimizer),
            "rng": distributed.gather(rng),  # every rank's
            "data": self.batches.state_dict(),
            "data_key": self.data_key,
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "compiled": self.step_module.chosen,  # --compile's choice, or None before it is made
        }
        weights = distributed.full_weights(model)  # every rank takes part in gathering FSDP2's shards
        write_tokenizer = (
            self.vocab.save if self.vocab else checkpoints.copy_tokenizer_files(self.built.tokenizer_files)
        )
        saved = None
        if distributed.is_main():
            saved = checkpoints.save(
                self.out,
                self.step,
                model=model,
                weights=weights,
                adapter_config=self.built.adapter_config,
                config_json=config_json,
                generation_json=generation,
                write_tokenizer=write_tokenizer,
                state=state,
                keep=c.keep,
            )
        distributed.barrier()  # no rank goes on before the checkpoint is complete
        return saved


def train(config: TrainConfig) -> Trainer:
    """Set up the run and train it to the end; the trainer holds the model, the history and the last save."""
    trainer = Trainer(config)
    trainer.fit()
    return trainer


def resume(path, **overrides) -> Trainer:
    """Continue the run of a checkpoint (OUT/step-N, or OUT for its newest), to its steps or to `steps=`.
    overrides change the run's config (steps, eval_every, out, ...); the same as before continue bit for bit."""
    folder = checkpoints.find(path)
    state = checkpoints.read_state(folder)
    saved = GPT2Config(**state["shape"])
    check_resumed_shape(folder, saved, overrides)
    if overrides.get("model"):
        raise ValueError("give --resume or --model, not both: a resumed run continues its own model")
    # How the processes share the model is this launch's, not the run's: --fsdp is given again or not.
    config = TrainConfig(**{**state["config"], "out": str(folder.parent), "fsdp": False, **overrides})
    trainer = Trainer(config, resume_from=folder)
    if sizes(trainer.model.config) != sizes(saved):
        raise CheckpointError(f"{folder}'s weights are not the shape its {checkpoints.STATE_FILE} was saved with")
    trainer.fit()
    return trainer


def _files_hash(files: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].read_bytes())
    return digest.hexdigest()
