"""Send one chat request to the quickstart's endpoint with the official openai client.

Usage (beside llmops.yaml, after `llmctl apply`): python ask.py "your question"
"""
from __future__ import annotations

import json
import subprocess
import sys

from openai import OpenAI

status = json.loads(subprocess.run(["llmctl", "status", "--format", "json"], capture_output=True, text=True,
                                   check=True).stdout)
endpoint = status["replicas"][0]["endpoint"]
question = " ".join(sys.argv[1:]) or "What is a GPU?"
client = OpenAI(base_url=endpoint, api_key="not-needed-locally")
reply = client.chat.completions.create(
    model="assistant", messages=[{"role": "user", "content": question}], max_tokens=64)
print(f"{endpoint} answered: {reply.choices[0].message.content}")
