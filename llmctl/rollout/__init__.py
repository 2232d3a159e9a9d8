"""Rollouts: how a change to a model or its prompt reaches traffic (`rollouts:` in llmops.yaml)."""
