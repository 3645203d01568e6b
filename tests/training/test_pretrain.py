"""Pretraining on the tweets' text: MLM and CLM from scratch (own tokenizer), continued MLM."""

from __future__ import annotations

import json

import pytest
import torch

from components.core.config import load_params
from components.finetune import step as finetune_step
from components.pretrain import step as pretrain_step
from components.pretrain.pretrain import mask_tokens, pretrain
from tests.conftest import REPO
from tests.training.conftest import run_finetune

SMALL = ["pretrain.enabled=true", "pretrain.max_length=32", "pretrain.num_threads=1",
         "pretrain.hidden_size=32", "pretrain.num_layers=2", "pretrain.num_heads=2",
         "pretrain.intermediate_size=64",
         "pretrain.learning_rate=2e-3", "pretrain.log_every_steps=10"]


def pretrain_cfg(*overrides: str):  # noqa: ANN201
    return load_params(REPO / "params.yaml", [*SMALL, *overrides]).pretrain


def run_pretrain(splits, out, *overrides: str):  # noqa: ANN001, ANN201
    return pretrain(splits["train"]["text"].tolist(), splits["val"]["text"].tolist(),
                    pretrain_cfg(*overrides), out)


@pytest.mark.parametrize(("objective", "architecture", "auto_class"), [
    ("mlm", "bert", "AutoModelForMaskedLM"), ("clm", "gpt2", "AutoModelForCausalLM")])
def test_from_scratch_trains_a_tokenizer_and_lowers_heldout_perplexity(splits, tmp_path, objective,
                                                                       architecture, auto_class):
    import transformers

    result = run_pretrain(splits, tmp_path / "lm", "pretrain.mode=scratch", f"pretrain.objective={objective}",
                          "pretrain.vocab_size=1000")
    assert result.architecture == architecture and result.vocab_size <= 1000
    # Untrained, a model guesses among the whole vocabulary; one epoch of tweets must do much better.
    assert result.perplexity_before > 0.8 * result.vocab_size
    assert result.perplexity < 0.7 * result.perplexity_before
    assert result.heldout_tokens > 100
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "lm")
    assert tokenizer.decode(tokenizer("good morning")["input_ids"], skip_special_tokens=True).strip() \
        == "good morning"
    model = getattr(transformers, auto_class).from_pretrained(tmp_path / "lm")
    assert model.config.vocab_size == len(tokenizer)
    # The output is a checkpoint finetune starts from.
    tuned = run_finetune(splits, tmp_path / "clf", f"finetune.base_model={tmp_path / 'lm'}",
                         "finetune.max_steps=5")
    assert tuned.steps == 5 and (tmp_path / "clf" / "model.safetensors").exists()


def test_continued_mlm_adapts_a_checkpoint_with_its_own_tokenizer(splits, tmp_path):
    result = run_pretrain(splits, tmp_path / "lm", "pretrain.base_model=tiny-random-bert",
                          "pretrain.max_steps=30", "pretrain.batch_size=16")
    assert (result.mode, result.architecture, result.steps) == ("continued", "bert", 30)
    assert result.vocab_size == 30522  # MiniLM's WordPiece vocabulary, unchanged
    assert result.perplexity < 0.5 * result.perplexity_before


def test_masking_picks_ordinary_tokens_only_and_changes_every_draw():
    ids = torch.arange(5, 105).repeat(40, 1)  # 40 rows of 100 ordinary tokens
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    special = (ids == 2) | (ids == 3)

    class Tok:
        mask_token_id = 4

        def __len__(self) -> int:
            return 1000

    first, labels = mask_tokens(ids, special, Tok(), 0.15, torch.Generator().manual_seed(0))
    second, _ = mask_tokens(ids, special, Tok(), 0.15, torch.Generator().manual_seed(1))
    picked = labels != -100
    assert not picked[special].any()
    assert 0.12 < picked.float().mean() < 0.18
    assert (labels[picked] == ids[picked]).all()
    masked_share = (first[picked] == 4).float().mean()
    assert 0.7 < masked_share < 0.9  # 80% [MASK], the rest random or unchanged
    assert (first[~picked] == ids[~picked]).all()
    assert not torch.equal(first, second)  # dynamic masking: a new draw, new masks


def test_disabled_pretrain_step_leaves_no_model_and_finetune_keeps_its_base(data_dir, tmp_path):
    params = load_params(REPO / "params.yaml")
    assert params.pretrain.enabled is False  # the default DAG does not pretrain
    assert pretrain_step.run(data_dir, tmp_path / "pre", params, ctx=None) is None
    assert json.loads((tmp_path / "pre" / pretrain_step.SKIPPED_FILE).read_text()) == {"enabled": False}
    assert finetune_step.pretrained_base(tmp_path / "pre") is None
    assert finetune_step.pretrained_base(None) is None
