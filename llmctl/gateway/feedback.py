"""A rating of an answer (`POST /v1/feedback`): what the request must say, and what the ledger keeps of it.

A rating names the answer by its request id (the `x-request-id` header) or by the id in its body, and is taken
only from the key that asked: anyone else gets the same 404 as for an unknown id, so ids reveal nothing.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from llmctl.gateway.errors import GatewayError
from llmctl.gateway.spec import FeedbackSpec

MAX_COMMENT_CHARS = 2000  # a comment is a sentence or two; longer text is refused, not cut
_THUMBS = {"up": 1.0, "down": -1.0, "thumbs_up": 1.0, "thumbs_down": -1.0}


@dataclass(frozen=True)
class Rating:
    answer: str  # the request id, or the answer body's id
    score: float
    negative: bool
    comment: str | None


def parse_rating(raw: bytes, spec: FeedbackSpec) -> Rating:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _invalid("the body must be a JSON object: {\"id\": ANSWER_ID, \"score\": ...}", None)
    answer = body.get("id", body.get("request_id"))
    if not isinstance(answer, str) or not answer.strip():
        raise _invalid("`id` must be the answer's id: its x-request-id header, or the `id` in its body", "id")
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
        raise _invalid(f"`comment` must be a string of at most {MAX_COMMENT_CHARS} characters", "comment")
    score = _score(body.get("score"), spec)
    return Rating(answer=answer.strip(), score=score, negative=score < spec.negative_below, comment=comment)


def _score(value: Any, spec: FeedbackSpec) -> float:
    if spec.scale == "thumbs":
        if isinstance(value, str) and value.lower() in _THUMBS:
            return _THUMBS[value.lower()]
        if not isinstance(value, bool) and value in (1, -1):
            return float(value)
        raise _invalid(f"`score` must be \"up\" or \"down\" (or 1 / -1), not {json.dumps(value)}", "score")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not spec.min <= value <= spec.max:
        raise _invalid(f"`score` must be a number from {spec.min:g} to {spec.max:g}, not {json.dumps(value)}",
                       "score")
    return float(value)


def not_found(answer: str) -> GatewayError:
    return GatewayError(404, f"no answer with id '{answer[:100]}' from this key within the feedback window",
                        "invalid_request_error", "answer_not_found", "id")


def _invalid(message: str, param: str | None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", "invalid_feedback", param)
