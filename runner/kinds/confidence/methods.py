"""The confidence methods an `llm` step's gate may name; the schema's `method` enum must
equal these keys."""

from __future__ import annotations

from runner.kinds.base import ConfidenceMethod
from runner.kinds.confidence import agreement, field, judge, logprobs, similarity

METHODS: dict[str, ConfidenceMethod] = {
    method.name: method
    for method in (field.KIND, logprobs.KIND, agreement.KIND, judge.KIND, similarity.KIND)
}
