"""The price snapshot: the pinned one follows from its sources, offers are read through gpuhunt, and a refresh
writes one from a (loopback) live catalog."""
from __future__ import annotations

import csv
import hashlib
import http.server
import io
import json
import os
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gpuhunt
import gpuhunt._internal.storage as gpuhunt_storage
import pytest
from gpuhunt.version import __version__ as GPUHUNT_VERSION

from llmctl.cost.catalog import load_catalog, refresh_snapshot
from llmctl.cost.snapshot import DATA_DIR, CatalogError


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_every_snapshot_row_follows_from_the_transcribed_source_rows() -> None:
    """aws.csv holds nothing but the extract: Price on demand, the cheapest AZ's SpotPrice for spot."""
    with open(DATA_DIR / "aws.csv") as f:
        rows = {(i.instance_name, i.location, i.spot): i for i in gpuhunt_storage.load(f, provider="aws")}
    expected = {}
    with open(DATA_DIR / "sources" / "aws_skypilot_v7_extract.csv", newline="") as f:
        for source in csv.DictReader(f):
            key = (source["instance_type"], source["region"])
            expected[(*key, False)] = float(source["on_demand_price"])
            spots = [float(p) for p in source["spot_prices_per_az_row"].split() if p != "-"]
            if spots:
                expected[(*key, True)] = min(spots)
            item = rows[(*key, False)]
            assert (item.cpu, item.memory, item.gpu_count) == (
                int(source["vcpus"]), float(source["memory_gib"]), int(source["gpu_count"]))
    assert {key: item.price for key, item in rows.items()} == expected


# --- read through gpuhunt -------------------------------------------------------------------------------------------

def test_offers_are_read_through_gpuhunt(snapshot_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> list[gpuhunt.CatalogItem]:
        raise RuntimeError("gpuhunt was asked")

    monkeypatch.setattr(gpuhunt.Catalog, "query", refuse)
    catalog = load_catalog(snapshot_copy)  # metadata and API prices: no offers read yet
    with pytest.raises(CatalogError, match="through gpuhunt: gpuhunt was asked"):
        catalog.instance("aws", "us-east-1", "g5.xlarge", False)


def test_an_edited_snapshot_changes_the_price_seen(snapshot_copy: Path) -> None:
    csv_path = snapshot_copy / "aws.csv"
    text = csv_path.read_text()
    assert text.count("g5.xlarge,us-east-1,1.006,") == 1
    csv_path.write_text(text.replace("g5.xlarge,us-east-1,1.006,", "g5.xlarge,us-east-1,9.75,"))
    assert load_catalog(snapshot_copy).instance("aws", "us-east-1", "g5.xlarge", False).price_per_hour == 9.75
    assert load_catalog().instance("aws", "us-east-1", "g5.xlarge", False).price_per_hour == 1.006


def test_the_gpuhunt_environment_is_restored_after_a_read(snapshot_copy: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUHUNT_CATALOG_DIR", "/somewhere/else")
    assert load_catalog(snapshot_copy).offers  # read from the copy, not from where the variable pointed
    assert os.environ["GPUHUNT_CATALOG_DIR"] == "/somewhere/else"
    monkeypatch.delenv("GPUHUNT_CATALOG_DIR")
    assert load_catalog(snapshot_copy / ".." / "snapshot").offers  # the same catalog: no read, no env change
    assert "GPUHUNT_CATALOG_DIR" not in os.environ


def test_a_broken_snapshot_is_a_catalog_error(snapshot_copy: Path, tmp_path: Path) -> None:
    (snapshot_copy / "aws.csv").unlink()
    with pytest.raises(CatalogError, match="has no aws.csv"):
        load_catalog(snapshot_copy)
    with pytest.raises(CatalogError, match="not a directory"):
        load_catalog(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CatalogError, match="catalog.json: missing"):
        load_catalog(empty)


# --- refreshing from gpuhunt's live catalog -------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refresh_without_network_is_a_catalog_error_and_touches_nothing(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUHUNT_CATALOG_URL", f"http://127.0.0.1:{_closed_port()}")
    pinned = _digest(DATA_DIR)
    out = tmp_path / "fresh"
    with pytest.raises(CatalogError) as caught:
        refresh_snapshot(out, ["aws"])
    assert "needs network access to gpuhunt's catalog" in str(caught.value)
    assert _digest(DATA_DIR) == pinned
    assert not (out / "aws.csv").exists()
    with pytest.raises(CatalogError, match="did you mean 'aws'"):
        refresh_snapshot(out, ["awz"])


def test_a_refresh_from_a_server_that_never_answers_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as silent:  # the kernel accepts the connection; nothing ever reads or answers it
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv("GPUHUNT_CATALOG_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        with pytest.raises(CatalogError, match="could not reach it: timed out"):
            refresh_snapshot(tmp_path / "fresh", timeout_s=0.1)
    assert not (tmp_path / "fresh" / "aws.csv").exists()


@dataclass
class LiveCatalog:
    """gpuhunt's published layout (`<provider>/version`, `<provider>/<version>/catalog.zip`) on a loopback server.
    Tests fill `files`, anything else is a 404; `requests` records each path asked for with the process's default
    socket timeout at that moment."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, float | None]] = field(default_factory=list)


@pytest.fixture
def live_catalog() -> Iterator[LiveCatalog]:
    live = LiveCatalog(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            live.requests.append((self.path, socket.getdefaulttimeout()))
            body = live.files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    live.url = f"http://127.0.0.1:{server.server_address[1]}/v3"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield live
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _publish(live: LiveCatalog, provider: str, version: str, items: list[gpuhunt.CatalogItem], tmp_path: Path) -> None:
    csv_path = tmp_path / f"{provider}-{version}.csv"
    gpuhunt_storage.dump(items, str(csv_path))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(csv_path, f"{provider}.csv")
    live.files[f"/v3/{provider}/version"] = version.encode()
    live.files[f"/v3/{provider}/{version}/catalog.zip"] = archive.getvalue()


def _g5_items() -> list[gpuhunt.CatalogItem]:
    with open(DATA_DIR / "aws.csv") as f:
        items = [i for i in gpuhunt_storage.load(f, provider="aws") if i.instance_name.startswith("g5.")]
    for item in items:
        if (item.instance_name, item.location, item.spot) == ("g5.xlarge", "us-east-1", False):
            item.price = 0.9876  # a price the pinned snapshot does not have
    return items


def test_refresh_writes_the_live_catalog_in_the_snapshot_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                live_catalog: LiveCatalog) -> None:
    _publish(live_catalog, "aws", "20991231", _g5_items(), tmp_path)
    monkeypatch.setenv("GPUHUNT_CATALOG_URL", live_catalog.url)
    pinned = _digest(DATA_DIR)
    out = tmp_path / "fresh"
    fresh = refresh_snapshot(out)
    assert sorted(p.name for p in out.iterdir()) == ["aws.csv", "catalog.json"]
    assert fresh.instance("aws", "us-east-1", "g5.xlarge", False).price_per_hour == 0.9876
    with pytest.raises(CatalogError, match="did you mean 'g5.xlarge'"):
        fresh.instance("aws", "us-east-1", "g6.xlarge", False)  # only what was published
    metadata = json.loads((out / "catalog.json").read_text())
    assert fresh.as_of == metadata["as_of"] and len(metadata["as_of"]) == 10
    assert fresh.version == "gpuhunt-aws-20991231"
    assert live_catalog.url in fresh.source and "20991231" in fresh.source and GPUHUNT_VERSION in fresh.source
    assert _digest(DATA_DIR) == pinned
    assert load_catalog(out) is fresh


def test_refresh_asks_only_for_the_providers_named_and_leaves_the_socket_default_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_catalog: LiveCatalog) -> None:
    _publish(live_catalog, "aws", "20991231", _g5_items(), tmp_path)
    monkeypatch.setenv("GPUHUNT_CATALOG_URL", live_catalog.url)
    default = socket.getdefaulttimeout()
    refresh_snapshot(tmp_path / "fresh", ["aws"])
    # the timeout is the download's own: while it ran, every other socket of the process kept the default
    assert live_catalog.requests == [("/v3/aws/version", default), ("/v3/aws/20991231/catalog.zip", default)]


def test_refresh_names_a_provider_the_live_catalog_did_not_have(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                live_catalog: LiveCatalog) -> None:
    _publish(live_catalog, "azure", "20991231", [], tmp_path)  # the server has azure's catalog, not aws's
    monkeypatch.setenv("GPUHUNT_CATALOG_URL", live_catalog.url)
    out = tmp_path / "fresh"
    with pytest.raises(CatalogError) as caught:
        refresh_snapshot(out, ["aws"])
    assert "could not download gpuhunt's aws catalog" in str(caught.value)
    assert "404" in str(caught.value)
    assert not (out / "aws.csv").exists()


def test_refresh_names_an_answer_that_is_not_a_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       live_catalog: LiveCatalog) -> None:
    live_catalog.files["/v3/aws/version"] = b"20991231"
    live_catalog.files["/v3/aws/20991231/catalog.zip"] = b"<html>not a zip</html>"
    monkeypatch.setenv("GPUHUNT_CATALOG_URL", live_catalog.url)
    out = tmp_path / "fresh"
    with pytest.raises(CatalogError, match="could not download gpuhunt's aws catalog .*BadZipFile"):
        refresh_snapshot(out, ["aws"])
    assert not (out / "aws.csv").exists()
