"""Access control: key hashing, constant-time lookup, per-model permission, rolling-window rate limits."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from llmctl.gateway.auth import KeyRing, RateLimiter, allowed, hash_key
from llmctl.gateway.spec import KeySpec


def key(raw: str, **fields: object) -> KeySpec:
    return KeySpec(id=f"id-{raw}", sha256=hash_key(raw), **fields)


def test_hash_key_is_sha256_hex_of_utf8() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_key("clé") == hashlib.sha256("clé".encode("utf-8")).hexdigest()


def test_keyring_finds_the_matching_key() -> None:
    alice, bob = key("alice-secret"), key("bob-secret")
    ring = KeyRing([alice, bob])
    assert ring.authenticate("bob-secret") == bob
    assert ring.authenticate("alice-secret") == alice


@pytest.mark.parametrize("raw", [None, "", "mallory-secret", hash_key("alice-secret")])
def test_keyring_refuses_missing_wrong_or_hash_as_key(raw: str | None) -> None:
    # The stored hash itself is not a key: presenting it must fail like any other wrong key.
    assert KeyRing([key("alice-secret")]).authenticate(raw) is None


def test_keyring_accepts_an_upper_case_stored_hash() -> None:
    spec = KeySpec(id="a", sha256=hash_key("alice-secret").upper())
    assert KeyRing([spec]).authenticate("alice-secret") == spec


def test_keyring_compares_every_key_even_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    # Constant time cannot be asserted by timing without a threshold; a spy on the standard library's comparison
    # (wrapping the real one, so the lookup runs unchanged) shows that every stored key is compared with it.
    calls: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(a)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    ring = KeyRing([key("first"), key("second"), key("third")])
    assert ring.authenticate("first") is not None
    assert len(calls) == 3


def test_allowed_models() -> None:
    assert allowed(key("k"), "anything")
    restricted = key("k", models=["chat"])
    assert allowed(restricted, "chat")
    assert not allowed(restricted, "embed")


def test_requests_per_minute_rolling_window() -> None:
    limiter, k = RateLimiter(), key("k", requests_per_minute=3)
    assert [limiter.admit(k, now=t) for t in (0.0, 10.0, 20.0)] == [None, None, None]
    # Full: the request at 0 leaves the window at 60.
    assert limiter.admit(k, now=30.0) == 30
    assert limiter.admit(k, now=30.2) == 30  # 29.8 s rounds up
    assert limiter.admit(k, now=59.99) == 1  # never 0: a client told 0 would retry at once
    assert limiter.admit(k, now=60.0) is None
    # Now 10, 20 and 60 are in the window; 10 leaves at 70.
    assert limiter.admit(k, now=60.0) == 10


def test_refused_requests_do_not_extend_the_wait() -> None:
    limiter, k = RateLimiter(), key("k", requests_per_minute=1)
    assert limiter.admit(k, now=0.0) is None
    for t in range(1, 60):
        assert limiter.admit(k, now=float(t)) == 60 - t
    assert limiter.admit(k, now=60.0) is None


def test_tokens_per_minute_counts_tokens_reported_after_responses() -> None:
    limiter, k = RateLimiter(), key("k", tokens_per_minute=100)
    assert limiter.admit(k, now=0.0) is None
    limiter.add_tokens(k, 60, now=1.0)
    assert limiter.admit(k, now=2.0) is None  # 60 < 100
    limiter.add_tokens(k, 50, now=5.0)
    # 110 tokens in the window; dropping the 60 logged at 1.0 brings it under 100, at 61.
    assert limiter.admit(k, now=10.0) == 51
    assert limiter.admit(k, now=61.0) is None


def test_tokens_limit_reached_exactly_refuses() -> None:
    limiter, k = RateLimiter(), key("k", tokens_per_minute=100)
    limiter.add_tokens(k, 40, now=0.0)
    limiter.add_tokens(k, 60, now=30.0)
    assert limiter.admit(k, now=31.0) == 29


def test_both_limits_wait_for_the_later() -> None:
    limiter, k = RateLimiter(), key("k", requests_per_minute=2, tokens_per_minute=100)
    assert limiter.admit(k, now=0.0) is None
    limiter.add_tokens(k, 100, now=20.0)
    assert limiter.admit(k, now=25.0) == 55  # tokens free at 80; requests would allow it now
    assert limiter.admit(k, now=80.0) is None


def test_keys_are_limited_separately() -> None:
    limiter = RateLimiter()
    busy, quiet = key("busy", requests_per_minute=1), key("quiet", requests_per_minute=1)
    assert limiter.admit(busy, now=0.0) is None
    assert limiter.admit(busy, now=1.0) == 59
    assert limiter.admit(quiet, now=1.0) is None


def test_unlimited_key_is_always_admitted() -> None:
    limiter, k = RateLimiter(), key("k")
    limiter.add_tokens(k, 10**9, now=0.0)
    assert all(limiter.admit(k, now=0.0) is None for _ in range(1000))


def test_default_time_comes_from_the_clock() -> None:
    now = [0.0]
    limiter, k = RateLimiter(clock=lambda: now[0]), key("k", requests_per_minute=1, tokens_per_minute=10)
    assert limiter.admit(k) is None
    now[0] = 15.0
    assert limiter.admit(k) == 45
    limiter.add_tokens(k, 10)
    now[0] = 61.0
    assert limiter.admit(k) == 14  # requests free since 60; the tokens logged at 15 leave at 75


def test_keys_named_by_variable_are_hashed_at_start_and_a_missing_one_is_refused() -> None:
    from llmctl.gateway.auth import hashed

    keys = [KeySpec(id="cluster", env="TEAM_KEY"), KeySpec(id="local", sha256=hash_key("local-key"))]
    ring = KeyRing(hashed(keys, {"TEAM_KEY": "team-secret"}))
    assert ring.authenticate("team-secret").id == "cluster"  # type: ignore[union-attr]
    assert ring.authenticate("local-key").id == "local"  # type: ignore[union-attr]
    assert all(key.env is None for key in hashed(keys, {"TEAM_KEY": "team-secret"}))
    with pytest.raises(ValueError, match="key 'cluster': environment variable TEAM_KEY is not set"):
        hashed(keys, {})
