"""The engine container images the cloud programs run: one pin for aws and kubernetes alike.

Pinned tags, not `latest`, so that a plan shows an engine upgrade as a change. Chosen offline; check that they exist
before a first real apply.
"""
from __future__ import annotations

ENGINE_IMAGES = {
    "vllm": "vllm/vllm-openai:v0.8.5",
    "tgi": "ghcr.io/huggingface/text-generation-inference:3.0.0",
}
# llmctl's own image (the gateway in a cluster), built from this repository's Dockerfile and tagged with its version.
GATEWAY_IMAGE = "ghcr.io/llmctl/llmctl:0.1.0"
