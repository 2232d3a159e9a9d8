"""One chat request to the quickstart's model, straight to a llama.cpp replica or through the gateway, with the
official openai client."""
from __future__ import annotations

from openai import OpenAI
from openai.types.chat import ChatCompletion


def ask(endpoint: str, question: str, key: str = "unused", max_tokens: int = 12) -> ChatCompletion:
    """`min_tokens` (a field of llama-cpp-python's server, which the gateway passes on) keeps the engine from ending
    the answer before its first token, so a test that needs an answer generated or tokens metered does not depend
    on what the model says. No retries: a refusal is the answer some tests expect."""
    client = OpenAI(base_url=endpoint, api_key=key, timeout=120, max_retries=0)
    return client.chat.completions.create(model="assistant", max_tokens=max_tokens, extra_body={"min_tokens": 1},
                                          messages=[{"role": "user", "content": question}])


def answers(endpoint: str) -> bool:
    """The server at `endpoint` generates an answer, counted in tokens by the engine: what they say is the model's
    affair, not the test's."""
    reply = ask(endpoint, "Name a colour.")
    assert reply.usage is not None, "llama-cpp-python's server reports usage on every whole answer"
    return reply.usage.completion_tokens >= 1
