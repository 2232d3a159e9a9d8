"""Fixtures of the lock's tests: no real hub settings, and a client of the scripted hub (tests/hub_server.py)."""
from __future__ import annotations

import huggingface_hub.constants
import pytest
from huggingface_hub import HfApi

from hub_server import HubServer


@pytest.fixture(autouse=True)
def _isolated_hub_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real hub settings leak in; config.json downloads go to a private cache."""
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def api(hub: HubServer) -> HfApi:
    return HfApi(endpoint=hub.url, token=False)
