"""A registered model's contract: the task it does, the labels it answers with, the input it takes.

One registered model has one contract. Clients of `models:/NAME@production` rely on it: a
3-label sentiment model must never be replaced by a 2-label movie-review model under the same
name. Register refuses a version whose contract differs from its model's, evaluate refuses to
compare with a champion of another contract (an error, not a skipped check), and promote refuses
to move an alias onto a version whose contract differs from the version production holds.

The contract is stored as JSON in a tag, on the registered model and on each of its versions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from components.core.errors import FmpipeError

CONTRACT_TAG = "fmpipe.contract"
TEXT_CLASSIFICATION = "text-classification"


class ContractError(FmpipeError):
    """Two contracts that must agree do not (a version and its model, a challenger and its champion)."""


@dataclass(frozen=True)
class Contract:
    task: str                         # e.g. text-classification
    labels: tuple[str, ...]           # the label set, sorted: output order is the artifact's business
    inputs: tuple[tuple[str, str], ...]  # (name, type) of what a caller sends, e.g. (("text", "string"),)

    def to_tag(self) -> str:
        return json.dumps({"task": self.task, "labels": list(self.labels),
                           "inputs": [list(i) for i in self.inputs]}, separators=(",", ":"))

    @classmethod
    def from_tag(cls, text: str) -> Contract:
        raw = json.loads(text)
        return cls(raw["task"], tuple(raw["labels"]), tuple(tuple(i) for i in raw["inputs"]))

    def describe(self) -> str:
        return f"{self.task} with labels [{', '.join(self.labels)}]"

    def difference(self, other: Contract) -> str | None:
        """What differs from `other`, in words; None when the two agree."""
        if self.task != other.task:
            return f"task {self.task} vs {other.task}"
        if self.labels != other.labels:
            return f"labels [{', '.join(self.labels)}] vs [{', '.join(other.labels)}]"
        if self.inputs != other.inputs:
            return f"inputs {dict(self.inputs)} vs {dict(other.inputs)}"
        return None


def text_classification(labels: Iterable[str]) -> Contract:
    """The contract of a text classifier: a string column in, one of `labels` out."""
    return Contract(TEXT_CLASSIFICATION, tuple(sorted(set(labels))), (("text", "string"),))


# task kind -> (contract task, (input name, input type)): what a caller of that kind of model sends.
KINDS = {
    "text": (TEXT_CLASSIFICATION, ("text", "string")),
    "image": ("image-classification", ("image", "binary")),
    "audio": ("audio-classification", ("audio", "binary")),
    "recsys": ("recommendation", ("user", "string")),  # labels: the rating scale it predicts on
}


def contract_for(kind: str, labels: Iterable[str]) -> Contract:
    """The contract of a classifier of this task kind (text, image, audio) answering with `labels`."""
    task, inputs = KINDS[kind]
    return Contract(task, tuple(sorted(set(labels))), (inputs,))


def contract_of(task: Any, labels: Iterable[str]) -> Contract:
    """The contract of a model of this task (components/tasks) answering with `labels`."""
    return contract_for(task.kind, labels)


def parse_tag(tags: dict[str, str]) -> Contract | None:
    """The contract recorded in a model's or a version's tags; None when none was (older versions)."""
    text = tags.get(CONTRACT_TAG)
    if not text:
        return None
    try:
        return Contract.from_tag(text)
    except (ValueError, KeyError, TypeError):
        raise FmpipeError(f"the tag {CONTRACT_TAG} is not a contract: {text[:80]!r}") from None


def registered_contract(model_name: str, client: Any = None) -> Contract | None:
    """The contract of a registered model (the active MLflow store unless `client` is given); None
    when there is no such model or it has no contract yet."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = client or mlflow.MlflowClient()
    try:
        return parse_tag(client.get_registered_model(model_name).tags)
    except MlflowException:
        return None
