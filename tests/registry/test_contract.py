"""One contract per registered model: a version of other labels is never registered, compared or
promoted as if it were the same model (on both stores)."""

from __future__ import annotations

import pytest

from components.core.contract import (
    CONTRACT_TAG,
    ContractError,
    contract_for,
    registered_contract,
    text_classification,
)
from components.registry.history import aliases
from components.registry.registry import PRODUCTION, STAGING, check_contract, promote, promote_across
from tests.registry.helpers import ACTOR, add_version, to_production

SENTIMENT = text_classification(["positive", "negative", "neutral"])
REVIEWS = text_classification(["fresh", "rotten"])


def test_contract_round_trips_and_names_the_difference():
    assert text_classification(["b", "a", "a"]).labels == ("a", "b")
    assert REVIEWS.from_tag(REVIEWS.to_tag()) == REVIEWS
    assert SENTIMENT.difference(text_classification(["neutral", "positive", "negative"])) is None
    assert SENTIMENT.difference(REVIEWS) == "labels [negative, neutral, positive] vs [fresh, rotten]"


def test_a_recommender_is_never_taken_for_a_classifier_of_the_same_labels(store, model):
    stars = text_classification(["1", "2", "3", "4", "5"])  # a text model rating reviews 1-5
    recommender = contract_for("recsys", ["5", "4", "3", "2", "1"])  # predicts ratings on the same scale
    assert recommender.difference(stars) == "task recommendation vs text-classification"
    add_version(store.client, model, contract=stars)
    with pytest.raises(ContractError, match="task recommendation vs text-classification"):
        check_contract(store.client, model, recommender)


def test_an_audio_classifier_is_never_taken_for_a_text_one_of_the_same_words(store, model):
    words = text_classification(["yes", "no", "_unknown_"])  # a text model labelling the same words
    keywords = contract_for("audio", ["no", "yes", "_unknown_"])
    assert keywords.inputs == (("audio", "binary"),)
    assert keywords.difference(words) == "task audio-classification vs text-classification"
    add_version(store.client, model, contract=words)
    with pytest.raises(ContractError, match="task audio-classification vs text-classification"):
        check_contract(store.client, model, keywords)


def test_register_refuses_a_version_of_another_contract(store, model):
    add_version(store.client, model, contract=SENTIMENT)
    assert registered_contract(model, store.client) == SENTIMENT
    check_contract(store.client, model, SENTIMENT)  # the same labels, in any order: fine
    with pytest.raises(ContractError, match=r"labels \[fresh, rotten\] vs \[negative, neutral, positive\]"):
        check_contract(store.client, model, REVIEWS)
    check_contract(store.client, f"{model}-other", REVIEWS)  # a model that does not exist yet


def test_promote_refuses_a_version_whose_contract_differs_from_production(store, model):
    sentiment = add_version(store.client, model, contract=SENTIMENT)
    promote(model, sentiment, STAGING, "r", ACTOR, client=store.client)
    to_production(store.client, model, sentiment)
    # A version of other labels that got in anyway (registered before contracts were checked, or
    # by another client): the model's tag and production both refuse it.
    reviews = add_version(store.client, model, contract=REVIEWS)
    with pytest.raises(ContractError, match=r"but the contract of reg-\w+ is a text-classification with "
                       r"labels \[negative, neutral, positive\].*refusing to set alias 'staging'"):
        promote(model, reviews, STAGING, "r", ACTOR, client=store.client)
    assert aliases(store.client, model) == {STAGING: sentiment, PRODUCTION: sentiment}


def test_production_decides_where_the_model_has_no_contract_tag(store, model):
    sentiment = add_version(store.client, model, contract=SENTIMENT)
    store.client.delete_registered_model_tag(model, CONTRACT_TAG)  # a model from before contracts
    promote(model, sentiment, STAGING, "r", ACTOR, client=store.client)
    to_production(store.client, model, sentiment)
    reviews = add_version(store.client, model, contract=REVIEWS)
    store.client.delete_registered_model_tag(model, CONTRACT_TAG)
    # Staging is the way to production: a version production's clients could not take stays out.
    with pytest.raises(ContractError, match=r"version 1 \(production\) of reg-\w+ is a text-classification"):
        promote(model, reviews, STAGING, "r", ACTOR, client=store.client)
    assert aliases(store.client, model) == {STAGING: sentiment, PRODUCTION: sentiment}


def test_cross_model_promotion_refuses_a_target_of_another_contract(store, model):
    target = f"{model}-prod"
    sentiment = add_version(store.client, target, contract=SENTIMENT)
    promote(target, sentiment, STAGING, "r", ACTOR, client=store.client)
    to_production(store.client, target, sentiment)
    reviews = add_version(store.client, model, contract=REVIEWS)
    promote(model, reviews, STAGING, "r", ACTOR, client=store.client)
    with pytest.raises(ContractError, match=rf"^{model} version {reviews} is a .* but the contract of "
                       rf"{target} is .* refusing to set alias 'production'"):
        promote_across(model, reviews, target, PRODUCTION, "r", ACTOR, client=store.client)
    assert len(store.client.search_model_versions(f"name = '{target}'")) == 1  # nothing copied
