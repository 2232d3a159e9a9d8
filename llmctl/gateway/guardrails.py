"""The guardrails a gateway applies to requests and answers: input size, deny patterns, prompt injection and PII.

`check_input` and `check_output` judge a whole text. `OutputStream` judges a streamed answer delta by delta and
hands back only text that is safe to send: it holds back the tail that a value (a card number written in groups,
an email still arriving a character at a time) could still be part of, so a redacted value never leaves the
gateway, even in part.

PII is found with libraries wherever one exists: phone numbers by `phonenumbers`, card numbers (Luhn), IBANs and
US SSNs by `python-stdnum`, IP addresses by `ipaddress`, credentials by detect-secrets' detectors; regexes only
propose the candidates those validate. A verdict names the kinds of PII it found, never a value.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from typing import Literal

import phonenumbers
import yaml
from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.filters.heuristic import is_potential_uuid, is_sequential_string
from detect_secrets.plugins import keyword
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.ip_public import IPPublicDetector
from detect_secrets.plugins.keyword import KeywordDetector
from stdnum import iban, luhn
from stdnum.us import ssn

from llmctl.config.schema import InputGuard, OutputGuard
from llmctl.gateway.injection import detect
from llmctl.gateway.tokens import TokenCounter


@dataclass(frozen=True)
class Action:
    """One guardrail action, for metrics and the audit log. Rules: pii.email, pii.phone, pii.credit_card,
    pii.iban, pii.ssn, pii.ip, pii.secret, prompt_injection, deny_pattern, max_tokens."""

    rule: str
    action: Literal["redact", "block", "flag"]


@dataclass
class Verdict:
    text: str  # what may be sent on: redacted where redaction applied, "" when blocked
    actions: list[Action] = field(default_factory=list)
    blocked: str | None = None  # why, for the client; names rules and kinds, never the text that matched


def check_input(text: str, guard: InputGuard, tokens: TokenCounter, written: str | None = None) -> Verdict:
    """`written`: the part of `text` the client wrote, which the prompt-injection check reads (all of it if None);
    the operator's own prompt around it is trusted."""
    if guard.max_tokens is not None and (count := tokens.count(text)) > guard.max_tokens:
        return _block("max_tokens", f"input is {count} tokens, the limit is {guard.max_tokens}")
    return _screen(text, guard, "input", written)


def check_output(text: str, guard: OutputGuard) -> Verdict:
    # guard.max_tokens is not checked here: the gateway caps the upstream request's max_tokens instead.
    return _screen(text, guard, "output")


def _injection(text: str, guard: OutputGuard, where: str) -> Verdict | None:
    """A block, a flag (the text unchanged) or None, from the prompt-injection detector at the guard's sensitivity."""
    if guard.prompt_injection == "off":
        return None
    detection = detect(text)
    if not detection.fires(guard.sensitivity):
        return None
    if guard.prompt_injection == "block":
        return _block("prompt_injection", f"{where} looks like a prompt injection ({detection.reason()})")
    return Verdict(text, [Action("prompt_injection", "flag")])


def _screen(text: str, guard: OutputGuard, where: str, written: str | None = None) -> Verdict:
    flagged: list[Action] = []
    if (injection := _injection(text if written is None else written, guard, where)) is not None:
        if injection.blocked:
            return injection
        flagged = injection.actions
    verdict = screen_values(text, guard, where)
    verdict.actions[:0] = flagged
    return verdict


def screen_values(text: str, guard: OutputGuard, where: str) -> Verdict:
    """Deny patterns and PII alone (no size or injection check): for one message of a request already checked
    whole, so that each gets its own redaction."""
    if pattern := _deny_match(text, guard.deny_patterns):
        return _block("deny_pattern", f"{where} matches the deny pattern {pattern!r}")
    if guard.pii == "off" or not (hits := _find_pii(text)):
        return Verdict(text)
    if guard.pii == "block":
        return _block_pii(hits, where)
    return Verdict(_redact(text, hits), [Action(rule, "redact") for rule in _rules(hits)])


def _block(rule: str, reason: str) -> Verdict:
    return Verdict("", [Action(rule, "block")], reason)


def _block_pii(hits: list[_Hit], where: str) -> Verdict:
    rules = _rules(hits)
    kinds = ", ".join(rule.removeprefix("pii.").replace("_", " ") for rule in rules)
    return Verdict("", [Action(rule, "block") for rule in rules], f"{where} contains PII ({kinds})")


def _rules(hits: list[_Hit]) -> list[str]:
    return list(dict.fromkeys(f"pii.{hit.kind}" for hit in hits))  # one action per kind, in order of appearance


# --- streamed output -------------------------------------------------------------------------------------------------

# The longest value with whitespace inside that must be seen whole: an IBAN written in groups of four (34 characters
# and 8 spaces). Values without whitespace are never split, since text is only released up to a whitespace.
_HOLD = 48
_INJECTION_WINDOW = 2000
_MIN_RELEASE = 32  # characters: releasing each word as it comes would re-check the held tail for every word
_SENTENCE_END = re.compile(r"(?:[.!?][\"')\]]*\s|\n)\s*\Z")
_UP_TO_LAST_SPACE = re.compile(r".*\s", re.DOTALL)
# Only these values run across whitespace: grouped digits (phone, card, IBAN) and a secret after its keyword. Plain
# words before the last space, with none of this near them, cannot be the start of a value still arriving.
_SPANS_SPACE = re.compile(r"[0-9=:]|pass|secret|token|key|bearer|auth", re.IGNORECASE)


class OutputStream:
    """Streamed output: feed deltas as they arrive, send what each call returns.

    Text is released up to the last whitespace at least _HOLD characters before the end of what has arrived (or all
    of it at a sentence end, which no value spans; or up to the last whitespace when nothing that could run across a
    space, digits or a secret's keyword, is near it), so every value that starts in the released part is complete in
    what was checked. A value that crosses the release point is held back whole. Checks also see the tail of what was
    already released, so a deny pattern cannot hide across a release point either."""

    def __init__(self, guard: OutputGuard) -> None:
        self._guard = guard
        self._pending = ""  # arrived, not yet released
        self._released_tail = ""  # the last _HOLD released characters, as they arrived (before redaction)
        self._blocked: str | None = None
        self._window = ""  # the answer's last _INJECTION_WINDOW characters, for the prompt-injection detector
        self._flagged = False

    def feed(self, delta: str) -> Verdict:
        if self._blocked:
            return Verdict("", blocked=self._blocked)
        if self._guard.pii == "off" and not self._guard.deny_patterns and self._guard.prompt_injection == "off":
            return Verdict(delta)  # nothing to look for: no reason to hold anything back
        self._pending += delta
        return self._release(self._release_point())

    def close(self) -> Verdict:
        if self._blocked:
            return Verdict("", blocked=self._blocked)
        return self._release(len(self._pending))

    def _release_point(self) -> int:
        if _SENTENCE_END.search(self._pending):
            return len(self._pending)
        # Whole words go out as they complete unless a value could span the space (a deny pattern can be anything,
        # and the injection detector reads sentences, not words)
        words = _UP_TO_LAST_SPACE.match(self._pending)
        if (words and not self._guard.deny_patterns and self._guard.prompt_injection == "off"
                and not _SPANS_SPACE.search(self._pending, max(0, words.end() - _HOLD), words.end())):
            return words.end()
        held_from = _UP_TO_LAST_SPACE.match(self._pending, 0, max(0, len(self._pending) - _HOLD))
        return held_from.end() if held_from and held_from.end() >= _MIN_RELEASE else 0

    def _release(self, end: int) -> Verdict:
        if end == 0:
            return Verdict("")
        # Checked with the tail of what was already released in front: a deny pattern, or the "password =" that makes
        # the next words a secret, may begin there.
        start = len(self._released_tail)
        text, end = self._released_tail + self._pending, start + end
        if pattern := _deny_match(text, self._guard.deny_patterns):
            return self._stop(_block("deny_pattern", f"output matches the deny pattern {pattern!r}"))
        hits = [] if self._guard.pii == "off" else [
            _Hit(max(hit.start, start), hit.end, hit.kind)  # begun in the tail, released in part: redact the rest
            for hit in _find_pii(text) if start < hit.end and hit.start < end
        ]
        if hits and self._guard.pii == "block":
            return self._stop(_block_pii(hits, "output"))
        if hits and hits[-1].end > end:  # a value crosses the release point: keep all of it for next time
            end = hits.pop().start
        flagged = self._injection(text[start:end])
        if flagged is not None and flagged.blocked:
            return self._stop(flagged)
        self._pending, self._released_tail = text[end:], text[max(0, end - _HOLD):end]
        released = _redact(text[start:end], [_Hit(hit.start - start, hit.end - start, hit.kind) for hit in hits])
        redacted = [Action(rule, "redact") for rule in _rules(hits)]
        return Verdict(released, [*(flagged.actions if flagged else []), *redacted])

    def _injection(self, releasing: str) -> Verdict | None:
        """The detector on the answer so far, up to what is about to be released (its last _INJECTION_WINDOW
        characters: an injection is read in the sentences around it, and the cost stays bounded); flagged once."""
        if self._guard.prompt_injection == "off" or self._flagged:
            return None
        self._window = (self._window + releasing)[-_INJECTION_WINDOW:]
        verdict = _injection(self._window, self._guard, "output")
        self._flagged = verdict is not None and not verdict.blocked
        return verdict

    def _stop(self, verdict: Verdict) -> Verdict:
        self._blocked, self._pending = verdict.blocked, ""
        return verdict


# --- deny patterns and prompt injection ------------------------------------------------------------------------------


@lru_cache(maxsize=1024)  # deny patterns come from a handful of guardrails: compile each once
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _deny_match(text: str, patterns: list[str]) -> str | None:
    return next((pattern for pattern in patterns if _compiled(pattern).search(text)), None)


# --- PII -------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hit:
    start: int
    end: int
    kind: str  # email phone credit_card iban ssn ip secret


def _find_pii(text: str) -> list[_Hit]:
    """Every PII value in the text, left to right, without overlaps (where two overlap, the one that starts first
    wins, then the longer one)."""
    found = sorted((hit for finder in _FINDERS for hit in finder(text)), key=lambda hit: (hit.start, -hit.end))
    kept: list[_Hit] = []
    for hit in found:
        if not kept or hit.start >= kept[-1].end:
            kept.append(hit)
    return kept


def _redact(text: str, hits: list[_Hit]) -> str:
    parts, pos = [], 0
    for hit in hits:
        parts += [text[pos:hit.start], f"[REDACTED:{hit.kind.upper()}]"]
        pos = hit.end
    return "".join(parts) + text[pos:]


_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")
_URL_USERINFO = re.compile(r"://[^\s/@]*\Z")  # "https://user:password@host" holds a credential, not an email


def _emails(text: str) -> Iterator[_Hit]:
    if "@" not in text:  # a substring test is ~100 times cheaper than the regex scan
        return
    for match in _EMAIL.finditer(text):
        if not _URL_USERINFO.search(text, max(0, match.start() - 256), match.start()):
            yield _Hit(match.start(), match.end(), "email")


# A possible phone number: seven or more digits in a row, allowing the separators people write, that is not an ISO
# date. The matcher itself is the costly part (0.1 to 0.3 ms per candidate it parses, a date included), so text
# without such a run skips it.
_PHONE_DIGITS = re.compile(r"(?<!\d)(?!\d{4}-\d\d-\d\d(?!\d))\d(?:[\s().\-/]{0,3}\d){6,}")


def _phones(text: str) -> Iterator[_Hit]:
    if not _PHONE_DIGITS.search(text):
        return
    # "US" is the region numbers without a country code are read in; numbers written with +CC parse anywhere.
    for match in phonenumbers.PhoneNumberMatcher(text, "US"):
        yield _Hit(match.start, match.end, "phone")


# Digit groups separated by single spaces or dashes, not part of a decimal number or a word.
_DIGIT_GROUPS = re.compile(r"(?<![\w.,])\d+(?:[ -]\d+)*(?!\w|[.,]\d)")
_GROUP = re.compile(r"\d+")


def _credit_cards(text: str) -> Iterator[_Hit]:
    for run in _DIGIT_GROUPS.finditer(text):
        groups = [(m.start() + run.start(), m.end() + run.start(), m.group()) for m in _GROUP.finditer(run.group())]
        yield from _luhn_windows(groups)


def _luhn_windows(groups: list[tuple[int, int, str]]) -> Iterator[_Hit]:
    """Card numbers among consecutive digit groups, longest first, left to right (an order number may precede a card
    in the same run of groups): written as cards are (see `_card_grouping`), passing Luhn, and with an issuer's
    leading digits and length (data/card_issuers.yaml)."""
    i = 0
    while i < len(groups):
        for j in range(len(groups) - 1, i - 1, -1):
            digits = "".join(group for _, _, group in groups[i:j + 1])
            if (13 <= len(digits) <= 19 and _card_grouping([len(group) for _, _, group in groups[i:j + 1]])
                    and _issued(digits) and luhn.is_valid(digits)):
                yield _Hit(groups[i][0], groups[j][1], "credit_card")
                i = j
                break
        i += 1


def _card_grouping(sizes: list[int]) -> bool:
    """All digits together, in fours (the last group may be shorter), or a grouping of its own some issuer uses."""
    return (len(sizes) == 1 or all(size == 4 for size in sizes[:-1]) and 1 <= sizes[-1] <= 4
            or sizes in _CARDS.groupings)


@dataclass(frozen=True)
class _Issuers:
    ranges: list[tuple[int, int, int, frozenset[int]]]  # (leading digits compared, low, high, lengths)
    groupings: list[list[int]]


def _load_card_issuers() -> _Issuers:
    data = yaml.safe_load(files("llmctl.gateway").joinpath("data/card_issuers.yaml").read_text("utf-8"))
    ranges = []
    for issuer in data["issuers"]:
        for prefix in issuer["prefixes"]:
            low, _, high = prefix.partition("-")
            ranges.append((len(low), int(low), int(high or low), frozenset(issuer["lengths"])))
    return _Issuers(ranges, data["groupings"])


_CARDS = _load_card_issuers()


def _issued(digits: str) -> bool:
    return any(len(digits) in lengths and low <= int(digits[:width]) <= high
               for width, low, high, lengths in _CARDS.ranges)


# Country code, check digits, then 11 to 30 letters or digits, optionally in space-separated groups.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")


def _ibans(text: str) -> Iterator[_Hit]:
    for match in _IBAN.finditer(text):
        # The candidate may run on into the next word ("... 00 THANKS"): take the longest prefix that validates.
        candidate = match.group()
        end = next((end for end in range(len(candidate), 14, -1)
                    if candidate[end - 1] != " " and iban.is_valid(candidate[:end])), None)
        if end is not None:
            yield _Hit(match.start(), match.start() + end, "iban")


_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")


def _ssns(text: str) -> Iterator[_Hit]:
    if "-" not in text:
        return
    for match in _SSN.finditer(text):
        if ssn.is_valid(match.group()):  # rejects area 000/666/9xx, group 00, serial 0000 and known fake numbers
            yield _Hit(match.start(), match.end(), "ssn")


# Candidates only: ipaddress decides. "v1.2.3.4" and "1.2.3.4.5" are versions, not addresses.
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:])")


def _ips(text: str) -> Iterator[_Hit]:
    if "." in text:
        for match in _IPV4.finditer(text):
            if _is_ip(match.group(), ipaddress.IPv4Address):
                yield _Hit(match.start(), match.end(), "ip")
    if text.count(":") < 2:
        return
    for match in _IPV6.finditer(text):
        # Real addresses write out three groups or more, or at least one of three or four hex digits ("fe80::1");
        # "1::2" and "a::b" are far more often slices and scopes in code than addresses.
        written = [group for group in match.group().split(":") if group]
        if (len(written) >= 3 or any(len(group) >= 3 for group in written)) \
                and _is_ip(match.group(), ipaddress.IPv6Address):
            yield _Hit(match.start(), match.end(), "ip")


def _is_ip(candidate: str, kind: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]) -> bool:
    try:
        kind(candidate)
    except ValueError:
        return False
    return True


# detect-secrets' credential detectors, built once: its scan_line() re-reads settings and runs every plugin with
# filters on each call (about 2.7 ms on 500 characters). Its public-IP detector is left out: pii.ip covers addresses.
_DETECTOR_REGEXES = [
    regex
    for plugin in get_mapping_from_secret_type_to_class().values()
    if issubclass(plugin, RegexBasedDetector) and plugin is not IPPublicDetector
    for regex in plugin.denylist
]
# The "name = value" detectors (Cloudant, IBM, SoftLayer: built by RegexBasedDetector.build_assignment_regex, which
# starts every pattern with the prefix below) are the slow ones, 20 to 40 us each on 500 characters, and every one
# of them needs a key/pw/pass/token name to match, so they only run on text that has one.
_ASSIGNMENT_PREFIX = r"(?:(?<=\W)|(?<=^))"
_ASSIGNMENT_REGEXES = [regex for regex in _DETECTOR_REGEXES if regex.pattern.startswith(_ASSIGNMENT_PREFIX)]
_OTHER_REGEXES = [regex for regex in _DETECTOR_REGEXES if not regex.pattern.startswith(_ASSIGNMENT_PREFIX)]
_ASSIGNMENT_NAMES = ("key", "pw", "pass", "token")  # searched in the lower-cased text
_KEYWORD = KeywordDetector()  # password = "...", api_key: '...' and the like (quoted values)
# KeywordDetector's regexes take about 0.4 ms on 500 characters; each needs one of its own keywords first. Searching
# the lower-cased text without re.IGNORECASE lets the regex engine skip ahead to candidate first letters.
_KEYWORD_NAME = re.compile("|".join(keyword.DENYLIST))
_ENTROPY = Base64HighEntropyString()  # detect-secrets' default limit, 4.5 bits per character
# Random-looking tokens: 20 or more base64 characters (shorter ones cannot reach the entropy limit anyway).
_ENTROPY_CANDIDATE = re.compile(f"[{re.escape(_ENTROPY.charset)}]{{20,}}")
_SPAN_TRIM = " \t\r\n\"'=:"
_LINE = re.compile(r"[^\n]+")


def _secrets(text: str) -> Iterator[_Hit]:
    lowered = text.lower()
    assignments = any(name in lowered for name in _ASSIGNMENT_NAMES)
    for regex in _OTHER_REGEXES + _ASSIGNMENT_REGEXES if assignments else _OTHER_REGEXES:
        for match in regex.finditer(text):
            yield _secret_hit(match)
    if _KEYWORD_NAME.search(lowered):
        yield from _keyword_secrets(text)
    for match in _ENTROPY_CANDIDATE.finditer(text):
        token = match.group()
        if (_ENTROPY.calculate_shannon_entropy(token) > _ENTROPY.entropy_limit
                and not is_sequential_string(token) and not is_potential_uuid(token)):
            yield _Hit(match.start(), match.end(), "secret")


def _keyword_secrets(text: str) -> Iterator[_Hit]:
    # KeywordDetector judges a line of code, and reports a value, not where it is: look for it after the keyword.
    for line in _LINE.finditer(text):
        if keyword_match := _KEYWORD_NAME.search(line.group().lower()):
            for value in _KEYWORD.analyze_string(line.group()):
                if (at := line.group().find(value, keyword_match.end())) >= 0:
                    yield _Hit(line.start() + at, line.start() + at + len(value), "secret")


def _secret_hit(match: re.Match[str]) -> _Hit:
    # The detectors' groups capture either the secret itself (a password in a URL, a key after "aws_secret=") or
    # only its prefix (GitHub's "ghp"): redact the longest group if it looks like a secret, else the whole match,
    # less the delimiters some patterns include.
    groups = [match.span(i) for i in range(1, (match.re.groups or 0) + 1) if match.group(i)]
    start, end = max(groups, key=lambda span: span[1] - span[0], default=match.span())
    if end - start < 8:
        start, end = match.span()
    text = match.string
    while start < end and text[start] in _SPAN_TRIM:
        start += 1
    while end > start and text[end - 1] in _SPAN_TRIM:
        end -= 1
    return _Hit(start, end, "secret")


_FINDERS: list[Callable[[str], Iterator[_Hit]]] = [_secrets, _emails, _ibans, _credit_cards, _ssns, _ips, _phones]
