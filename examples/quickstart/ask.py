"""Send one chat request to the quickstart's gateway with the official openai client.

Usage (beside llmops.yaml, after `llmctl apply`, with the key in QUICKSTART_API_KEY): python ask.py "your question"
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from openai import OpenAI

status = json.loads(subprocess.run(["llmctl", "status", "--format", "json"], capture_output=True, text=True,
                                   check=True).stdout)
endpoint = status["gateways"][0]["endpoint"]
question = " ".join(sys.argv[1:]) or "What is a GPU?"
client = OpenAI(base_url=endpoint, api_key=os.environ["QUICKSTART_API_KEY"])
reply = client.chat.completions.create(
    model="assistant", messages=[{"role": "user", "content": question}], max_tokens=64)
print(f"{endpoint} answered: {reply.choices[0].message.content}")
