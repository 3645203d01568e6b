import pandas as pd
import pytest

from components.core.config import DriftConfig
from components.tasks.base import population_stability_index
from components.tasks.text_data import compare, oov_rate, profile


def frame(texts, labels):
    return pd.DataFrame({"text": texts, "label": labels})


def test_psi_is_zero_for_the_same_distribution_and_grows_with_shift():
    same = population_stability_index({"a": 50, "b": 50}, {"a": 5, "b": 5})
    small = population_stability_index({"a": 50, "b": 50}, {"a": 55, "b": 45})
    large = population_stability_index({"a": 50, "b": 50}, {"a": 90, "b": 10})
    assert same == pytest.approx(0.0)
    assert 0 < small < 0.1 < large


def test_a_new_label_counts_as_drift():
    assert population_stability_index({"a": 50, "b": 50}, {"a": 40, "b": 40, "c": 20}) > 0.2


def test_oov_rate_counts_words_the_reference_never_saw():
    assert oov_rate(["the", "cat"], pd.Series(["The cat sat", "the dog"])) == pytest.approx(2 / 5)


def test_profile_and_compare_flag_only_what_changed():
    old = frame([f"good movie number {i}" for i in range(200)], ["pos", "neg"] * 100)
    same = old.sample(100, random_state=0)
    shifted = frame([f"zzz qqq www eee rrr ttt yyy uuu {i}" * 3 for i in range(100)],
                    ["pos"] * 90 + ["neg"] * 10)
    reference = profile(old)
    ok = {f.name: f.passed for f in compare(reference, profile(same), same["text"], DriftConfig())}
    bad = {f.name: f.passed for f in compare(reference, profile(shifted), shifted["text"], DriftConfig())}
    assert ok == {"label_psi": True, "text_length_ks_pvalue": True, "oov_rate": True}
    assert bad == {"label_psi": False, "text_length_ks_pvalue": False, "oov_rate": False}
