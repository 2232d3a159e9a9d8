"""The config the eval tests build on: a model with one eval, and a judge for llm_rubric."""

HEAD = """\
version: 1
project: x
models:
  - name: bot
    source: api://openai/gpt-4o-mini
    evals: [quality]
  - name: judge
    source: api://openai/gpt-4o-mini
evals:
  - name: quality
"""
