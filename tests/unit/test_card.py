"""The model card's pure parts: what a side-by-side comparison flags, and a card with no records."""

from __future__ import annotations

from components.card.compare import changed_params, render_compare
from components.card.gather import CardData
from components.card.render import render


def card(version: str, f1: str, lr: str, slice_f1: float) -> CardData:
    data = CardData(model="m", version=version, task="text", created="", description="", aliases=[],
                    tags={"metric.test_macro_f1": f1, "fmpipe.data_md5": f"md5-{version}"},
                    all_aliases={}, history=[], requests=[])
    data.steps = {"finetune": {"params": {"learning_rate": lr, "epochs": "2"}}}
    data.records["evaluation/evaluation.json"] = {"model": {"per_class": {"pos": {"f1-score": slice_f1},
                                                                          "accuracy": 0.5}},
                                                  "slices": {"length 0-59": {"macro_f1": slice_f1}}}
    return data


def test_compare_names_changed_params_and_marks_what_got_worse():
    a, b = card("7", "0.80", "0.001", 0.75), card("8", "0.78", "0.002", 0.70)
    assert changed_params(a, b) == [("finetune.learning_rate", "0.001", "0.002")]
    page = render_compare(a, b)
    assert page.count('style="color:#8a1c13;font-weight:600">-0.0200') == 1   # test_macro_f1 fell
    assert page.count('style="color:#8a1c13;font-weight:600">-0.0500') == 2   # class pos and the slice
    assert "md5-7" in page and "md5-8" in page and "changed" in page


def test_a_version_without_records_gets_a_card_that_says_so():
    bare = CardData(model="m", version="1", task="text", created="", description="", tags={}, aliases=[],
                    all_aliases={}, history=[], requests=[],
                    missing=["the version has no fmpipe.pipeline_run_id tag"])
    page = render(bare)
    assert "no evaluation record" in page and "no explanations recorded" in page
    assert "no export record" in page
    assert "the version has no fmpipe.pipeline_run_id tag" in page


def test_strings_from_the_registry_and_the_data_are_escaped():
    evil = '<td><img src=x onerror="alert(1)"></td>'
    data = CardData(model="m", version="1", task="text", created="", description=evil,
                    tags={"metric.f1": "1"}, aliases=[], all_aliases={"staging": "1"}, requests=[],
                    history=[{"seq": 1, "at": "t", "alias": "staging", "version": "1", "previous": None,
                              "action": "promote", "actor": evil, "reason": evil, "state": "done"}])
    data.records["evaluation/explanations.json"] = {"examples": [
        {"label": evil, "predicted": "x", "probability": 1.0, "overlay_png": '"><script>alert(1)</script>'}]}
    page = render(data)
    assert "<img src=x" not in page and "<script>" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "the recorded image is not base64" in page
