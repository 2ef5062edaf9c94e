"""Pre-training recipe: corpus -> shards -> a model of the chosen family trained by the one loop.

Architectures (`arch`: the family written to `out`, an HF directory that transformers loads):
- `bert`: BertForPreTraining (BertForReplacedTokenDetection + a BERT generator with `--objective electra`);
- `roberta`: RobertaForMaskedLM; positions counted from pad_token_id + 1, one token type;
- `albert`: AlbertForPreTraining; one layer shared across depth (num_hidden_groups = inner_group_num = 1),
  embeddings of width min(128, hidden_size) projected to hidden_size, gelu_new;
- `electra`: ElectraForPreTraining (the discriminator) at the top, ElectraForMaskedLM in `generator/`;
  embedding_size = hidden_size from base width up (768), min(128, hidden_size) below, as ELECTRA sizes them.
An arch implies its objective (roberta -> roberta, albert -> albert, electra -> electra); `--objective` may name
that one or be left out. With `--arch bert` (the default) any objective keeps the BERT layout, as before arches.

Objectives (a choice of the recipe, not a copy of the loop):
- `bert`: MLM + NSP, the two losses summed (the paper);
- `roberta`: MLM only, dynamic masking, FULL-SENTENCES packing across documents (Liu et al. 2019);
- `albert`: MLM + SOP, sentence-order prediction on two consecutive segments of one document (Lan et al. 2020),
  through the same two-way head as NSP;
- `electra`: replaced-token detection (Clark et al. 2020) on the same packed data: a small generator (a
  BertForMaskedLM, `generator_overrides`, by default a quarter of the width) fills the masked positions with
  tokens it samples, and the encoder being trained learns to tell, at every real token, whether it was replaced.
  Loss = generator MLM + `rtd_weight` (50, the paper's) x discriminator BCE. Every token teaches the encoder, not
  15 % of them, which is what makes it the compute-efficient objective for short runs. The output directory holds
  the discriminator (a BERT encoder + `discriminator_predictions.*`, what fine-tuning starts from) and
  `generator/`. The samples come from a generator seeded by (seed, step, rank, micro-batch): a resumed run
  repeats them exactly; a run on another number of processes draws others.

The MLM loss is averaged over every masked token of the global batch and the NSP loss over its sequences (see
`train/loop.py`). The MLM head projects onto the vocabulary only at masked positions, and the encoder never
computes padding: together the bulk of the speed-up over `transformers.BertForPreTraining` (benchmarks/).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from bertkit.config import BertConfig
from bertkit.data.pretraining import (InstanceConfig, Masker, MaskingConfig, Schedule, ShardError, ShardSet,
                                      build_shards)
from bertkit.checkpoint import load_state_into, read_state_dict
from bertkit.io import OutputError, atomic_write_text, prepare_output_dir
from bertkit.heads import IGNORE, BertForMaskedLM, BertForPreTraining, BertForReplacedTokenDetection
from bertkit.tokenizer import Tokenizer
from bertkit.train.loop import TrainConfig, refuse_changed_config, require, train

log = logging.getLogger("bertkit.pretrain")


@dataclass
class PretrainConfig:
    corpus: list[str] = field(default_factory=list)
    vocab: str = ""  # a tokenizer directory (from `bertkit vocab`)
    out: str = "runs/pretrain"
    size: str = "mini"
    arch: str = "bert"  # the family written: bert | roberta | electra | albert (see ARCHS)
    objective: str = ""  # bert | roberta | electra | albert; "": the arch's own (see `resolve_objective`)
    format: str = "sentences"  # sentences | paragraphs
    max_seq_length: int = 128
    batch_size: int = 128  # global, summed over ranks and micro-batches
    eval_fraction: float = 0.01  # of the documents, held out for evaluation
    eval_instances: int = 2000
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model_overrides: dict = field(default_factory=dict)  # BertConfig fields, e.g. {"hidden_dropout_prob": 0.0}
    generator_overrides: dict = field(default_factory=dict)  # electra: the generator's BertConfig fields
    rtd_weight: float = 50.0  # electra: weight of the replaced-token-detection loss
    # transfer (train/transfer.py): start from the body of the BERT in `init`, on the vocabulary of `vocab`
    init: str = ""
    embedding_init: str = "mean"  # mean | overlap | random: the new embedding rows (see `init_embeddings`)
    freeze_body_steps: int = 0  # steps that train only the word embeddings and the MLM head

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        d = dict(d)
        masking = MaskingConfig(**d.pop("masking", {}))
        train_cfg = TrainConfig(**d.pop("train", {}))
        return cls(**d, masking=masking, train=train_cfg)

    def validate(self) -> None:
        """Every number in its range (a one-line error naming the flag), before anything is read or written; an
        empty `objective` becomes the arch's own."""
        require("max_seq_length", self.max_seq_length, 8)
        require("batch_size", self.batch_size, 1)
        require("eval_fraction", self.eval_fraction, 0, maximum=1, below=True)
        require("eval_instances", self.eval_instances, 0)
        require("duplication", self.masking.duplication, 0)
        require("rtd_weight", self.rtd_weight, 0)
        require("freeze_body_steps", self.freeze_body_steps, 0)
        self.objective = resolve_objective(self.arch, self.objective)
        if self.init:
            from bertkit.train.transfer import EMBEDDING_INITS

            if self.embedding_init not in EMBEDDING_INITS:
                raise ValueError(f"--embedding-init {self.embedding_init!r}: choose one of "
                                 f"{', '.join(EMBEDDING_INITS)}")
            if self.arch != "bert" or self.objective not in ("bert", "roberta"):
                raise ValueError(f"--init: the transfer recipe trains a BERT by MLM (--objective bert or roberta), "
                                 f"not --arch {self.arch} --objective {self.objective}")
        elif self.freeze_body_steps:
            raise ValueError("--freeze-body-steps: freezes the body of an --init model; give --init")
        self.train.validate()
        if self.batch_size % self.train.grad_accum:
            raise ValueError(f"--batch-size {self.batch_size} is not a multiple of --grad-accum "
                             f"{self.train.grad_accum}")


ARCHS = ("bert", "roberta", "electra", "albert")
OBJECTIVES = ("bert", "roberta", "electra", "albert")
PAIR_HEAD = {"bert": "nsp", "albert": "sop"}  # objectives with a two-way head on the pooled [CLS] -> its name


def resolve_objective(arch: str, objective: str) -> str:
    """The objective a run trains: the one given, or the arch's own ("bert" for the BERT layout)."""
    if arch not in ARCHS:
        raise ValueError(f"--arch {arch!r}: choose one of {', '.join(ARCHS)}")
    if objective and objective not in OBJECTIVES:
        raise ValueError(f"--objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    if arch == "bert":
        return objective or "bert"
    if objective not in ("", arch):
        raise ValueError(f"--objective {objective} does not go with --arch {arch}: that layout trains the {arch} "
                         f"objective (leave --objective out, or use --arch bert for a BERT layout)")
    return arch


class PretrainTask:
    names = ("masked tokens", "sequences")

    def __init__(self, shards: ShardSet, masker: Masker, batch_size: int, objective: str, seed: int,
                 eval_shards: ShardSet | None = None, eval_instances: int = 2000):
        self.shards, self.masker, self.objective = shards, masker, objective
        self.batch_size = batch_size
        self.schedule = Schedule(len(shards), batch_size, seed)
        self.eval_shards, self.eval_instances = eval_shards, eval_instances
        self.frozen: list[torch.nn.Parameter] = []  # held still for the first `frozen_steps` steps (transfer)
        self.frozen_steps = 0

    def before_step(self, model, step: int) -> None:
        """A function of the step alone, so a resumed run freezes and thaws where an uninterrupted one does. A
        frozen parameter gets no gradient, and AdamW leaves a parameter without one untouched (no decay either)."""
        for p in self.frozen:
            p.requires_grad_(step >= self.frozen_steps)

    def micro_batches(self, step: int, rank: int, world: int, accum: int) -> list[dict[str, torch.Tensor]]:
        per = self.batch_size // (world * accum)
        if per * world * accum != self.batch_size or per == 0:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by {world} processes x {accum} "
                             f"accumulation steps")
        instances, epochs = self.schedule.step(step)
        mine = slice(rank * per * accum, (rank + 1) * per * accum)
        instances, epochs = instances[mine], epochs[mine]
        return [self.masker.batch(self.shards, instances[i:i + per], epochs[i:i + per])
                for i in range(0, len(instances), per)]

    def counts(self, batch) -> list[float]:
        return [float((batch["labels"] != IGNORE).sum()), float(len(batch["input_ids"]))]

    def loss(self, model, batch, totals) -> tuple[torch.Tensor, dict[str, float]]:
        pair = PAIR_HEAD.get(self.objective)  # NSP or SOP: the same head and label column, another name
        extra = {"next_sentence_label": batch["next_sentence_label"]} if pair else {}  # an MLM-only model has none
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], labels=batch["labels"],
                    reduction="sum", **extra)
        target = batch["labels"][batch["labels"] != IGNORE]
        loss = out.mlm_loss / totals[0].clamp(min=1)
        stats = {"mlm_loss": float(out.mlm_loss.detach()), "mlm_correct": float((out.logits.argmax(-1) == target).sum())}
        if pair:
            loss = loss + out.nsp_loss / totals[1]
            stats[f"{pair}_loss"] = float(out.nsp_loss.detach())
            stats[f"{pair}_correct"] = float((out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"])
                                             .sum())
        return loss, stats

    def summarize(self, stats: dict[str, float], totals: list[float]) -> dict[str, float]:
        masked, seqs = max(totals[0], 1.0), max(totals[1], 1.0)
        row = {"mlm_loss": stats["mlm_loss"] / masked, "mlm_accuracy": stats["mlm_correct"] / masked}
        pair = PAIR_HEAD.get(self.objective)
        if pair and f"{pair}_loss" in stats:
            row[f"{pair}_loss"] = stats[f"{pair}_loss"] / seqs
            row[f"{pair}_accuracy"] = stats[f"{pair}_correct"] / seqs
        row["loss"] = row["mlm_loss"] + (row.get(f"{pair}_loss", 0.0) if pair else 0.0)
        return row

    def evaluate(self, model) -> dict[str, float]:
        """MLM loss/accuracy and NSP (SOP) accuracy on held-out instances, with a fixed mask (epoch 0)."""
        if self.eval_shards is None or len(self.eval_shards) == 0:
            return {}
        n = min(len(self.eval_shards), self.eval_instances)
        device = next(model.parameters()).device
        totals, stats = [0.0, 0.0], {}
        for i in range(0, n, 64):
            idx = list(range(i, min(n, i + 64)))
            batch = {k: v.to(device) for k, v in self.masker.batch(self.eval_shards, idx, [0] * len(idx)).items()}
            _, s = self.loss(model, batch, torch.ones(2, dtype=torch.float64, device=device))
            for k, v in s.items():
                stats[k] = stats.get(k, 0.0) + v
            totals = [t + c for t, c in zip(totals, self.counts(batch))]
        return self.summarize(stats, totals)


class Electra(torch.nn.Module):
    """Generator and discriminator trained together; saved and loaded as two HF directories (the discriminator at
    the top, the generator in `generator/`)."""

    def __init__(self, discriminator_config: BertConfig, generator_config: BertConfig):
        super().__init__()
        self.generator = BertForMaskedLM(generator_config)
        self.discriminator = BertForReplacedTokenDetection(discriminator_config)

    @property
    def config(self) -> BertConfig:
        return self.discriminator.config

    def save_pretrained(self, path, tokenizer=None) -> None:
        self.discriminator.save_pretrained(path, tokenizer=tokenizer)
        self.generator.save_pretrained(Path(path) / "generator", tokenizer=tokenizer)

    def load_weights(self, path) -> None:
        load_state_into(self.discriminator, read_state_dict(path), str(path))
        load_state_into(self.generator, read_state_dict(Path(path) / "generator"), str(Path(path) / "generator"))


def generator_config(disc: BertConfig, overrides: dict) -> BertConfig:
    """A quarter of the discriminator's width (ELECTRA's choice for small models), as deep, 64-wide heads, of the
    discriminator's family and embedding width."""
    hidden = max(64, disc.hidden_size // 4)
    fields = dict(hidden_size=hidden, num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden)
    fields.update(overrides)
    cfg = BertConfig(**{**disc.to_dict(), **fields})
    cfg.validate("generator_overrides")
    return cfg


class ElectraTask(PretrainTask):
    names = ("masked tokens", "tokens")

    def __init__(self, *args, rtd_weight: float = 50.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.rtd_weight = rtd_weight

    def micro_batches(self, step, rank, world, accum):
        batches = super().micro_batches(step, rank, world, accum)
        for i, b in enumerate(batches):  # the generator's sampling noise, a function of where the batch is
            b["sample_seed"] = torch.tensor(hash((self.schedule.seed, step, rank, i)) & 0x7FFFFFFF)
        return batches

    def counts(self, batch) -> list[float]:
        return [float((batch["labels"] != IGNORE).sum()), float(batch["attention_mask"].sum())]

    def loss(self, model, batch, totals):
        pair = model.module if hasattr(model, "module") else model  # DDP wraps the pair
        gen, disc = pair.generator, pair.discriminator
        ids, mask, types, labels = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["labels"]
        g = gen(ids, mask, types, labels=labels, reduction="sum")
        masked = labels != IGNORE
        with torch.no_grad():  # no gradient flows from the discriminator into the generator (ELECTRA's choice)
            noise = torch.Generator(device=ids.device).manual_seed(int(batch.get("sample_seed", torch.tensor(0))))
            sampled = torch.multinomial(torch.softmax(g.logits.detach().float(), -1), 1, generator=noise).squeeze(1)
            original = torch.where(masked, labels, ids)
            corrupted = original.clone()
            corrupted[masked] = sampled
            replaced = (corrupted != original).long()
        d = disc(corrupted, mask, types, labels=replaced, reduction="sum")
        loss = g.mlm_loss / totals[0].clamp(min=1) + self.rtd_weight * d.loss / totals[1]
        target = replaced[mask.bool()]
        stats = {"mlm_loss": float(g.mlm_loss.detach()), "mlm_correct": float((g.logits.argmax(-1) == labels[masked])
                                                                                .sum()),
                 "rtd_loss": float(d.loss.detach()), "rtd_correct": float(((d.logits > 0).long() == target).sum()),
                 "replaced": float(target.sum())}
        return loss, stats

    def summarize(self, stats, totals):
        masked, tokens = max(totals[0], 1.0), max(totals[1], 1.0)
        row = {"mlm_loss": stats["mlm_loss"] / masked, "mlm_accuracy": stats["mlm_correct"] / masked,
               "rtd_loss": stats["rtd_loss"] / tokens, "rtd_accuracy": stats["rtd_correct"] / tokens,
               "replaced_fraction": stats["replaced"] / tokens}
        row["loss"] = row["mlm_loss"] + self.rtd_weight * row["rtd_loss"]
        return row


def data_objective(objective: str) -> str:
    """Which instances an objective trains on: NSP pairs for BERT, SOP pairs for ALBERT, packed full sentences
    otherwise."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective '{objective}': choose one of {', '.join(OBJECTIVES)}")
    return objective if objective in PAIR_HEAD else "roberta"


def model_config(cfg: PretrainConfig, tokenizer: Tokenizer) -> BertConfig:
    """The encoder `cfg.arch` asks for at `cfg.size`, sized to the tokenizer; `model_overrides` last."""
    fields = dict(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id,
                  max_position_embeddings=max(512, cfg.max_seq_length))
    hidden = cfg.model_overrides.get("hidden_size", BertConfig.named(cfg.size).hidden_size)
    if cfg.arch == "roberta":  # the same longest input as BERT's: rows pad_token_id + 1 onwards hold the positions
        fields.update(model_type="roberta", type_vocab_size=1,
                      max_position_embeddings=fields["max_position_embeddings"] + tokenizer.pad_id + 1)
    elif cfg.arch == "albert":
        fields.update(model_type="albert", hidden_act="gelu_new", embedding_size=min(128, hidden),
                      num_hidden_groups=1, inner_group_num=1)
    elif cfg.arch == "electra":
        fields.update(model_type="electra", embedding_size=hidden if hidden >= 768 else min(128, hidden))
    return BertConfig.named(cfg.size, **{**fields, **cfg.model_overrides})


def prepare_data(cfg: PretrainConfig, tokenizer: Tokenizer, out: str | Path, show_progress: bool = True) -> Path:
    """Shards under `out/data/<hash of corpus, vocabulary and instance settings>`, built once and reused (`out`:
    the directory the run writes, `cfg.out` or its temporary replacement)."""
    icfg = InstanceConfig(max_seq_length=cfg.max_seq_length, objective=data_objective(cfg.objective),
                          seed=cfg.train.seed)
    files = [Path(p) for p in cfg.corpus]
    key = json.dumps({"corpus": [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files],
                      "vocab": hashlib.sha1((Path(cfg.vocab) / "vocab.txt").read_bytes()).hexdigest()
                      if (Path(cfg.vocab) / "vocab.txt").exists() else cfg.vocab,
                      "format": cfg.format, "eval_fraction": cfg.eval_fraction, "instances": asdict(icfg)},
                     sort_keys=True)
    directory = Path(out) / "data" / hashlib.sha1(key.encode()).hexdigest()[:12]
    if not ((directory / "train" / "meta.json").is_file() and (directory / "eval" / "meta.json").is_file()):
        build_shards(files, tokenizer, directory, icfg, fmt=cfg.format, eval_fraction=cfg.eval_fraction,
                     show_progress=show_progress)
    return directory


# Fields that a run saved before they existed lacks, with the value it ran with: such a run still resumes.
ADDED_FIELDS = {"arch": "bert", "init": "", "embedding_init": "mean", "freeze_body_steps": 0}
# How a run is carried out, not what it computes: these may change between the parts of a resumed run.
RESUME_MAY_CHANGE = {"out", "eval_instances", "train.threads", "train.device", "train.save_every", "train.log_every",
                     "train.eval_every", "train.keep_checkpoints", "train.keep_freed_memory"}


def run_pretrain(cfg: PretrainConfig, resume: bool = False, show_progress: bool = True,
                 overwrite: bool = False) -> dict:
    """Pre-train as `cfg` says into `cfg.out`; `resume` continues this run from its last checkpoint. A non-empty
    `cfg.out` is refused unless resuming, or `overwrite` (see `bertkit.io.prepare_output_dir`). Under torchrun,
    rank 0 checks and creates the directory and tells the others where it is."""
    import torch.distributed as dist

    from bertkit.train.loop import setup_env

    cfg.validate()
    env = setup_env(cfg.train.device)
    tokenizer = Tokenizer.from_pretrained(cfg.vocab)
    target, where = None, [None, None, None, None]  # path, run id, resuming, error
    if env.main:
        try:
            target = prepare_output_dir(cfg.out, verb="pretrain", inputs=[*cfg.corpus, cfg.vocab,
                                                                          *([cfg.init] if cfg.init else [])],
                                        resume=resume,
                                        overwrite=overwrite)
            cfg.train.run_id = target.run_id
            if target.resuming:
                refuse_changed_config(target.path / "pretrain_config.json", asdict(cfg), RESUME_MAY_CHANGE,
                                      added=ADDED_FIELDS)
            where = [str(target.path), target.run_id, target.resuming, None]
        except ValueError as e:
            where[3] = str(e)
    if env.world > 1:
        dist.broadcast_object_list(where, src=0)
    if where[3] is not None:
        raise OutputError(where[3])
    work, cfg.train.run_id, resuming = Path(where[0]), where[1], where[2]
    with target if target is not None else contextlib.nullcontext(work):
        if env.main:
            data = prepare_data(cfg, tokenizer, work, show_progress)
        if env.world > 1:
            dist.barrier()  # rank 0 builds the shards once; the others wait, then find them
        data = prepare_data(cfg, tokenizer, work, show_progress=False) if not env.main else data
        shards, eval_shards = ShardSet(data / "train"), ShardSet(data / "eval")
        if shards.config.objective != data_objective(cfg.objective):
            raise ShardError(f"{data}: built for objective '{shards.config.objective}', not '{cfg.objective}'")
        masker = Masker(tokenizer, cfg.masking)
        model_cfg = model_config(cfg, tokenizer)
        if model_cfg.type_vocab_size == 1:  # RoBERTa: the saved tokenizer gives no segment ids (as klue/roberta's)
            tokenizer.uses_token_types = False
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        if cfg.init:
            from bertkit.train.transfer import frozen_body, transferred_model

            if cfg.freeze_body_steps and env.world > 1:
                raise ValueError("--freeze-body-steps: one process only (DDP fixes which parameters train)")
            model, _ = transferred_model(cfg.init, tokenizer, BertForPreTraining, cfg.embedding_init, cfg.train.seed,
                                         **cfg.model_overrides)
            if cfg.max_seq_length > model.config.max_position_embeddings:
                raise ValueError(f"--max-seq-length {cfg.max_seq_length}: the --init model has "
                                 f"{model.config.max_position_embeddings} positions")
            task = PretrainTask(shards, masker, cfg.batch_size, cfg.objective, cfg.train.seed, eval_shards,
                                cfg.eval_instances)
            task.frozen, task.frozen_steps = frozen_body(model), cfg.freeze_body_steps
        elif cfg.objective == "electra":
            model = Electra(model_cfg, generator_config(model_cfg, cfg.generator_overrides))
            task = ElectraTask(shards, masker, cfg.batch_size, cfg.objective, cfg.train.seed, eval_shards,
                               cfg.eval_instances, rtd_weight=cfg.rtd_weight)
        else:
            model = BertForPreTraining(model_cfg) if cfg.arch == "bert" or cfg.objective in PAIR_HEAD \
                else BertForMaskedLM(model_cfg)
            task = PretrainTask(shards, masker, cfg.batch_size, cfg.objective, cfg.train.seed, eval_shards,
                                cfg.eval_instances)
        if env.main:
            what = f"{cfg.init} transferred to {cfg.vocab}" if cfg.init else f"a {cfg.size} {cfg.arch}"
            log.info("pre-training %s (%.1f M parameters) on %d instances, %s objective", what,
                     sum(p.numel() for p in model.parameters()) / 1e6, len(shards), cfg.objective)
            atomic_write_text(work / "pretrain_config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        cfg.train.keep_freed_memory = True  # packed sequences: the same shapes every step
        return train(model, task, cfg.train, work, tokenizer=tokenizer, resume=resuming, env=env,
                     show_progress=show_progress)
