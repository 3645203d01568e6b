"""pretrain: language-model pretraining on the data set's unlabelled text.

Objectives: masked LM (BERT / RoBERTa style, masks drawn afresh for every batch: "dynamic
masking") or causal LM (GPT-2 style). Modes: from scratch (a WordPiece or byte-level BPE tokenizer
trained on the corpus with `tokenizers`, model size from params) or continued, domain-adaptive
pretraining of a checkpoint. Reports held-out perplexity before and after. The saved folder
(safetensors + tokenizer) is a checkpoint `finetune` starts from. The loop is finetune's.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.core.errors import FmpipeError
from components.tasks.text import TINY_RANDOM_BERT, resolve_checkpoint, tiny_bert_config
from components.training import distributed
from components.training.batches import length_grouped_batches
from components.training.checkpoint import CheckpointStore
from components.training.loop import LoopSettings, seed_everything, train_loop

if TYPE_CHECKING:
    from components.core.config import PretrainConfig

LogFn = Callable[[dict[str, float], int], None]
IGNORE = -100  # label of positions that carry no loss
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BPE_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # RoBERTa's order: <pad> is 1


@dataclass
class PretrainResult:
    objective: str
    mode: str
    architecture: str
    vocab_size: int
    parameters: int
    steps: int
    train_seconds: float
    samples_per_second: float
    final_loss: float
    perplexity_before: float
    perplexity: float
    heldout_tokens: int
    resumed_from_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    world_size: int = 1


def tokenizer_kind(cfg: PretrainConfig) -> str:
    if cfg.tokenizer != "auto":
        return cfg.tokenizer
    return "wordpiece" if cfg.objective == "mlm" else "bpe"


def architecture(cfg: PretrainConfig) -> str:
    """The scratch model: BERT (MLM, WordPiece), RoBERTa (MLM, BPE) or GPT-2 (CLM)."""
    if cfg.objective == "clm":
        return "gpt2"
    return "bert" if tokenizer_kind(cfg) == "wordpiece" else "roberta"


def special_tokens(kind: str) -> dict[str, str]:
    if kind == "wordpiece":
        return dict(zip(("pad", "unk", "bos", "eos", "mask"), WORDPIECE_SPECIALS, strict=True))
    return dict(zip(("bos", "pad", "eos", "unk", "mask"), BPE_SPECIALS, strict=True))


def train_tokenizer(texts: list[str], kind: str, vocab_size: int) -> Any:
    """A `tokenizers` WordPiece (BERT-style, lower-cased) or byte-level BPE (GPT-2 / RoBERTa
    style) tokenizer trained on `texts`; each text becomes `<bos> text <eos>`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    sp = special_tokens(kind)
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=sp["unk"]))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(WORDPIECE_SPECIALS))
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BPE_SPECIALS),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    bos, eos = sp["bos"], sp["eos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} $B:1 {eos}:1",
        special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))])
    return tok


def wrap_tokenizer(tok: Any, kind: str, arch: str) -> Any:
    """The trained tokenizer as transformers sees it, so AutoTokenizer loads it back."""
    from transformers import PreTrainedTokenizerFast

    sp = special_tokens(kind)
    # Only BERT has segment embeddings; GPT-2 would add the embedding of token 0 instead.
    names = ["input_ids", "attention_mask"]
    if arch == "bert":
        names.insert(1, "token_type_ids")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=sp["pad"], unk_token=sp["unk"], bos_token=sp["bos"],
        eos_token=sp["eos"], mask_token=sp["mask"], cls_token=sp["bos"], sep_token=sp["eos"],
        model_input_names=names)


def build_model(cfg: PretrainConfig, tokenizer: Any, arch: str) -> Any:
    """A random-init model of the size params ask for."""
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        GPT2Config,
        GPT2LMHeadModel,
        RobertaConfig,
        RobertaForMaskedLM,
    )

    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}
    size = {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.intermediate_size}
    positions = max(512, cfg.max_length)  # room for finetune's max_length too
    if arch == "bert":
        return BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), max_position_embeddings=positions,
                                          **size, **ids))
    if arch == "roberta":  # positions start after the pad index
        return RobertaForMaskedLM(RobertaConfig(vocab_size=len(tokenizer), type_vocab_size=1,
                                                max_position_embeddings=positions + 2, **size, **ids))
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=positions, n_embd=cfg.hidden_size, n_layer=cfg.num_layers,
        n_head=cfg.num_heads, n_inner=cfg.intermediate_size, **ids))


def load_base(cfg: PretrainConfig) -> tuple[Any, Any, str]:
    """(tokenizer, model, architecture) of the checkpoint continued pretraining starts from."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(cfg.base_model))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.objective == "mlm" and tokenizer.mask_token is None:
        raise FmpipeError(f"pretrain: {cfg.base_model}'s tokenizer has no mask token; "
                          "use pretrain.objective=clm or another checkpoint")
    if cfg.base_model == TINY_RANDOM_BERT:
        model = BertForMaskedLM(tiny_bert_config(len(tokenizer), pad_token_id=tokenizer.pad_token_id))
    else:
        auto = AutoModelForMaskedLM if cfg.objective == "mlm" else AutoModelForCausalLM
        try:
            model = auto.from_pretrained(resolve_checkpoint(cfg.base_model))
        except ValueError as exc:  # e.g. a causal LM head asked of an encoder-only architecture
            raise FmpipeError(f"pretrain: cannot load {cfg.base_model} for {cfg.objective}: "
                              f"{str(exc).splitlines()[0]}") from None
    return tokenizer, model, model.config.model_type


def mask_tokens(input_ids: Any, special: Any, tokenizer: Any, probability: float,
                generator: Any) -> tuple[Any, Any]:
    """BERT's masking: pick `probability` of the ordinary tokens; of those 80% become the mask
    token, 10% a random token, 10% stay. Returns (inputs, labels); unpicked labels are IGNORE."""
    import torch

    chance = torch.full(input_ids.shape, probability).masked_fill_(special, 0.0)
    picked = torch.bernoulli(chance, generator=generator).bool()
    if not picked.any():  # a batch of very short rows: still learn from one token
        candidates = (~special).nonzero()
        if len(candidates):
            row, col = candidates[torch.randint(len(candidates), (1,), generator=generator)][0]
            picked[row, col] = True
    labels = input_ids.masked_fill(~picked, IGNORE)
    inputs = input_ids.clone()
    def coin(p: float) -> Any:
        return torch.bernoulli(torch.full(input_ids.shape, p), generator=generator).bool()

    to_mask = picked & coin(0.8)
    inputs[to_mask] = tokenizer.mask_token_id
    to_random = picked & ~to_mask & coin(0.5)
    inputs[to_random] = torch.randint(len(tokenizer), input_ids.shape, generator=generator)[to_random]
    return inputs, labels


def lm_batch(tokenizer: Any, rows: list[list[int]], objective: str, mlm_probability: float,
             generator: Any) -> dict[str, Any]:
    """Padded inputs plus `labels`: masked positions (MLM) or every real token (CLM)."""
    import torch

    from components.tasks.text import TextTask

    batch = TextTask().collate(tokenizer, rows)
    ids, attention = batch["input_ids"], batch["attention_mask"]
    if objective == "clm":
        batch["labels"] = ids.masked_fill(attention == 0, IGNORE)
        return batch
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids)) | (attention == 0)
    batch["input_ids"], batch["labels"] = mask_tokens(ids, special, tokenizer, mlm_probability, generator)
    return batch


def lm_loss_sum(model: Any, batch: dict[str, Any], objective: str) -> tuple[Any, Any]:
    """(sum of token losses, number of tokens) over the labelled positions."""
    import torch

    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    if objective == "clm":  # token t predicts token t+1
        logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != IGNORE
    loss = torch.nn.functional.cross_entropy(logits[keep].float(), labels[keep], reduction="sum")
    return loss, keep.sum()


def heldout_perplexity(model: Any, batches: list[dict[str, Any]], objective: str, device: Any,
                       bf16: bool) -> tuple[float, int]:
    """exp(mean token loss) on fixed held-out batches (the same masks before and after training)."""
    import torch

    from components.core.device import autocast_context

    model.eval()
    total, tokens = 0.0, 0
    with torch.inference_mode(), autocast_context(device, bf16):
        for batch in batches:
            loss, count = lm_loss_sum(model, {k: v.to(device) for k, v in batch.items()}, objective)
            total, tokens = total + float(loss), tokens + int(count)
    model.train()
    return math.exp(min(total / max(tokens, 1), 700.0)), tokens  # capped where exp() would overflow


def pretrain(train_texts: list[str], heldout_texts: list[str], cfg: PretrainConfig, out_dir: Path,
             log: LogFn | None = None, checkpoint_dir: Path | None = None) -> PretrainResult:
    """Pretrain on train_texts; report perplexity on heldout_texts; save model + tokenizer to out_dir."""
    import torch
    from transformers import AutoTokenizer

    from components.core.device import pick_device

    if not train_texts or not heldout_texts:
        raise FmpipeError("pretrain needs training text and held-out text (the val split)")
    dist = distributed.current()
    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device()
    store = None
    if checkpoint_dir is not None and cfg.checkpoint_every_steps:
        shaping = cfg.model_dump(exclude={"resources", "log_every_steps", "checkpoint_every_steps",
                                          "checkpoint_dir", "num_threads", "enabled", "processes"})
        digest = hashlib.sha256(json.dumps([shaping, dist.world_size], sort_keys=True).encode())
        for text in train_texts:
            digest.update(text.encode() + b"\x00")
        store = CheckpointStore(Path(checkpoint_dir) / digest.hexdigest()[:16])

    if cfg.mode == "scratch":
        arch = architecture(cfg)
        saved = store.root / "tokenizer" if store else None
        if saved is not None and saved.exists():  # resuming: the checkpoint's token ids are this tokenizer's
            tokenizer = AutoTokenizer.from_pretrained(str(saved))
        else:
            from tokenizers import Tokenizer

            # Trained once, by rank 0: every process must agree on the token ids.
            raw = train_tokenizer(train_texts, tokenizer_kind(cfg), cfg.vocab_size) if dist.is_main else None
            raw = Tokenizer.from_str(distributed.broadcast_from_main(raw.to_str() if raw else None))
            tokenizer = wrap_tokenizer(raw, tokenizer_kind(cfg), arch)
            if saved is not None and dist.is_main:
                tokenizer.save_pretrained(str(saved))
        model = build_model(cfg, tokenizer, arch)
    else:
        tokenizer, model, arch = load_base(cfg)
    ids = tokenizer(list(train_texts), truncation=True, max_length=cfg.max_length)["input_ids"]
    lengths = [len(row) for row in ids]

    held = tokenizer(list(heldout_texts[: cfg.heldout_max_rows]), truncation=True,
                     max_length=cfg.max_length)["input_ids"]
    order = np.argsort([len(row) for row in held], kind="stable")
    fixed = torch.Generator().manual_seed(cfg.seed)
    held_batches = [lm_batch(tokenizer, [held[i] for i in order[s : s + 64]], cfg.objective,
                             cfg.mlm_probability, fixed) for s in range(0, len(order), 64)]
    model.to(device)
    ppl_before, _ = heldout_perplexity(model, held_batches, cfg.objective, device, cfg.bf16)

    def batches_of_epoch(epoch: int) -> list[tuple[int, int, np.ndarray]]:
        plan = length_grouped_batches(lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]), True)
        return [(epoch, i, rows) for i, rows in enumerate(plan)]

    def collate(key: tuple[int, int, np.ndarray]) -> dict[str, Any]:
        epoch, i, rows = key
        # Fresh masks every time a row is seen (dynamic masking), repeatable from the batch's place.
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 100_003 + i)
        return lm_batch(tokenizer, [ids[r] for r in rows], cfg.objective, cfg.mlm_probability, generator)

    def compute_loss(net: Any, batch: dict[str, Any]) -> Any:
        loss, count = lm_loss_sum(net, batch, cfg.objective)
        return loss / count.clamp(min=1)

    settings = LoopSettings(
        epochs=cfg.epochs, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio, grad_accum_steps=cfg.grad_accum_steps,
        max_grad_norm=cfg.max_grad_norm, bf16=cfg.bf16, compile=cfg.compile,
        compile_mode=None if cfg.compile_mode == "default" else cfg.compile_mode,
        log_every_steps=cfg.log_every_steps, checkpoint_every_steps=cfg.checkpoint_every_steps,
        seed=cfg.seed, desc=f"pretrain ({cfg.objective})",
    )
    loop = train_loop(model, batches_of_epoch, collate, compute_loss, settings, device=device,
                      checkpoints=store, log=log)
    ppl, tokens = heldout_perplexity(model, held_batches, cfg.objective, device, cfg.bf16)
    if log and dist.is_main:
        log({"heldout_perplexity": ppl}, loop.steps)

    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        model.to("cpu").save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        if store:
            store.clear()
    return PretrainResult(
        objective=cfg.objective, mode=cfg.mode, architecture=arch, vocab_size=len(tokenizer),
        parameters=sum(p.numel() for p in model.parameters()), steps=loop.steps,
        train_seconds=loop.train_seconds, samples_per_second=loop.samples_per_second,
        final_loss=loop.final_loss, perplexity_before=ppl_before, perplexity=ppl, heldout_tokens=tokens,
        resumed_from_step=loop.resumed_from_step, history=loop.history, world_size=dist.world_size,
    )
