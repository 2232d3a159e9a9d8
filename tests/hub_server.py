"""A scripted Hugging Face Hub: a named test double for the few Hub endpoints `llmctl lock` reaches.

The real Hub is not reachable from tests, and its answers change (a branch moves, a license gets accepted). This
server answers exactly what `huggingface_hub` (2.x, over httpx2) asks for when llmctl resolves a model, for a few
scripted repositories whose numbers match the real ones:

- `GET  /api/models/ORG/REPO[/revision/REV][?blobs=true]`  `HfApi.model_info`: id, sha, siblings (with size and
  LFS info under `blobs`), safetensors {parameters, total}, config, gated.
- `HEAD /ORG/REPO/resolve/REV/FILE`  `file_exists` / `hf_hub_download` metadata: `X-Repo-Commit`, `ETag`
  (git blob sha1, or `X-Linked-Etag` = sha256 for LFS files), `X-Linked-Size`, `Content-Length`.
- `GET  /ORG/REPO/resolve/REV/FILE` (with or without `Range: bytes=A-B`)  `hf_hub_download` of config.json and
  model.safetensors.index.json, and `parse_safetensors_file_metadata`'s ranged reads of a weights file's header.
  Weights files are virtual: an 8-byte header length, the JSON header, then zeros up to the file's full size,
  of which any range up to 16 MiB is served (206 with `Content-Range`).

Errors are the Hub's: 404 `X-Error-Code: RevisionNotFound`, `EntryNotFound`; 401 (no token) / 404 `RepoNotFound`;
a gated repo's info is public, as on the Hub, but its files answer 401 (no token) or 403 (a token without access)
with `X-Error-Code: GatedRepo` unless the `Authorization: Bearer` token is one of `tokens`.

    with HubServer() as hub:
        api = HfApi(endpoint=hub.url, token=False)
        hub.move("Qwen/Qwen2.5-7B-Instruct")  # main now points at a new commit
        hub.requests                          # every (method, path) served, for counting
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

BYTES_PER_DTYPE = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "I64": 8, "I32": 4, "I8": 1, "U8": 1}
MAX_RANGE = 16 * 1024 * 1024
TOKEN = "hf_test_token"  # the token that has accepted every gated repo's license


# --- the scripted repositories ------------------------------------------------------------------------------------


def decoder_tensors(*, layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int, vocab: int,
                    head_dim: int | None = None, qkv_bias: bool = False, tied: bool = False) -> dict[str, list[int]]:
    """Every weight of a Llama/Qwen2-style decoder, with its shape: the parameter count is the real model's."""
    head_dim = head_dim or hidden // heads
    q, kv = heads * head_dim, kv_heads * head_dim
    tensors: dict[str, list[int]] = {"model.embed_tokens.weight": [vocab, hidden]}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": [q, hidden],
            p + "self_attn.k_proj.weight": [kv, hidden],
            p + "self_attn.v_proj.weight": [kv, hidden],
            p + "self_attn.o_proj.weight": [hidden, q],
            p + "mlp.gate_proj.weight": [intermediate, hidden],
            p + "mlp.up_proj.weight": [intermediate, hidden],
            p + "mlp.down_proj.weight": [hidden, intermediate],
            p + "input_layernorm.weight": [hidden],
            p + "post_attention_layernorm.weight": [hidden],
        }
        if qkv_bias:
            tensors |= {p + "self_attn.q_proj.bias": [q], p + "self_attn.k_proj.bias": [kv],
                        p + "self_attn.v_proj.bias": [kv]}
    tensors["model.norm.weight"] = [hidden]
    if not tied:
        tensors["lm_head.weight"] = [vocab, hidden]
    return tensors


@dataclass
class RepoSpec:
    """What one repository holds at a commit: weights (name -> shape, all of `dtype`), config.json, other files."""

    repo_id: str
    tensors: dict[str, list[int]]
    dtype: str = "BF16"
    shards: int = 1  # 1: a single model.safetensors; more: model-0000N-of-0000M.safetensors plus an index
    config: dict[str, Any] | None = None
    gated: bool = False
    extra_files: dict[str, bytes] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return sum(_product(shape) for shape in self.tensors.values())


QWEN_7B = RepoSpec(
    "Qwen/Qwen2.5-7B-Instruct",
    decoder_tensors(layers=28, hidden=3584, heads=28, kv_heads=4, intermediate=18944, vocab=152064, qkv_bias=True),
    shards=4,
    config={"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
            "intermediate_size": 18944, "num_attention_heads": 28, "num_hidden_layers": 28,
            "num_key_value_heads": 4, "max_position_embeddings": 32768, "vocab_size": 152064,
            "torch_dtype": "bfloat16", "tie_word_embeddings": False},
)  # 7,615,616,512 parameters; head_dim is not in its config: 3584 / 28 = 128
LLAMA_70B = RepoSpec(
    "meta-llama/Llama-3.3-70B-Instruct",
    decoder_tensors(layers=80, hidden=8192, heads=64, kv_heads=8, intermediate=28672, vocab=128256),
    shards=30,
    gated=True,
    config={"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192, "head_dim": 128,
            "intermediate_size": 28672, "num_attention_heads": 64, "num_hidden_layers": 80,
            "num_key_value_heads": 8, "max_position_embeddings": 131072, "vocab_size": 128256,
            "torch_dtype": "bfloat16"},
)  # 70,553,706,496 parameters
LLAMA_8B = RepoSpec(
    "meta-llama/Llama-3.1-8B-Instruct",
    decoder_tensors(layers=32, hidden=4096, heads=32, kv_heads=8, intermediate=14336, vocab=128256),
    shards=4,
    gated=True,
    config={"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "head_dim": 128,
            "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
            "num_key_value_heads": 8, "max_position_embeddings": 131072, "vocab_size": 128256,
            "torch_dtype": "bfloat16"},
)  # 8,030,261,248 parameters
SMOLLM_135M = RepoSpec(
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    decoder_tensors(layers=30, hidden=576, heads=9, kv_heads=3, intermediate=1536, vocab=49152, tied=True),
    shards=1,
    config={"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
            "intermediate_size": 1536, "num_attention_heads": 9, "num_hidden_layers": 30,
            "num_key_value_heads": 3, "max_position_embeddings": 8192, "vocab_size": 49152,
            "tie_word_embeddings": True},
)  # 134,515,008 parameters, in one model.safetensors
DEFAULT_REPOS = (QWEN_7B, LLAMA_70B, LLAMA_8B, SMOLLM_135M)


# --- files and commits ----------------------------------------------------------------------------------------------


def _product(shape: list[int]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


@dataclass(frozen=True)
class HubFile:
    """A file at a commit: small files are real bytes; weights are a real header followed by virtual zeros."""

    prefix: bytes  # the bytes actually stored (the whole file, or a weights file's 8-byte length + JSON header)
    size: int  # the full size
    lfs: bool = False

    @property
    def etag(self) -> str:
        if self.lfs:  # the Hub's ETag of an LFS file is its sha256 (here of the header: the zeros are virtual)
            return hashlib.sha256(self.prefix).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(self.prefix) + self.prefix).hexdigest()  # a git blob id

    def read(self, start: int, end: int) -> bytes:
        """Bytes start..end inclusive (end clipped to the file)."""
        end = min(end, self.size - 1)
        head = self.prefix[start:end + 1]
        return head + bytes(max(0, end + 1 - max(start, len(self.prefix))))


def _safetensors_file(tensors: dict[str, list[int]], dtype: str) -> HubFile:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors.items():
        size = _product(shape) * BYTES_PER_DTYPE[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads its header to 8 bytes
    prefix = struct.pack("<Q", len(raw)) + raw
    return HubFile(prefix, len(prefix) + offset, lfs=True)


def _json_file(data: Any) -> HubFile:
    raw = json.dumps(data, indent=2).encode() + b"\n"
    return HubFile(raw, len(raw))


def build_files(spec: RepoSpec) -> dict[str, HubFile]:
    attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    files: dict[str, HubFile] = {".gitattributes": HubFile(attributes, len(attributes))}
    if spec.config is not None:
        files["config.json"] = _json_file(spec.config)
    if spec.shards == 1:
        files["model.safetensors"] = _safetensors_file(spec.tensors, spec.dtype)
    else:
        names = list(spec.tensors)
        weight_map: dict[str, str] = {}
        total = 0
        for i in range(spec.shards):
            shard = f"model-{i + 1:05d}-of-{spec.shards:05d}.safetensors"
            part = names[i * len(names) // spec.shards:(i + 1) * len(names) // spec.shards]
            chunk = {name: spec.tensors[name] for name in part}
            files[shard] = _safetensors_file(chunk, spec.dtype)
            total += files[shard].size - len(files[shard].prefix)
            weight_map |= dict.fromkeys(chunk, shard)
        files["model.safetensors.index.json"] = _json_file({"metadata": {"total_size": total},
                                                            "weight_map": weight_map})
    for name, content in spec.extra_files.items():
        files[name] = HubFile(content, len(content))
    return files


@dataclass
class Repo:
    spec: RepoSpec
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit sha
    commits: dict[str, tuple[RepoSpec, dict[str, HubFile]]] = field(default_factory=dict)

    def commit(self, spec: RepoSpec) -> str:
        sha = hashlib.sha1(f"{spec.repo_id}@{len(self.commits)}".encode()).hexdigest()
        self.commits[sha] = (spec, build_files(spec))
        return sha

    def lookup(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


# --- the server -----------------------------------------------------------------------------------------------------


class HubServer:
    """The scripted Hub on 127.0.0.1, in a thread. `url` is the endpoint to give `HfApi(endpoint=...)`."""

    def __init__(self, repos: tuple[RepoSpec, ...] = DEFAULT_REPOS, tokens: tuple[str, ...] = (TOKEN,)) -> None:
        self.tokens = set(tokens)
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path with query) of every request served
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        for spec in repos:
            repo = Repo(spec)
            repo.refs["main"] = repo.commit(spec)
            self.repos[spec.repo_id] = repo

    @property
    def url(self) -> str:
        assert self._httpd is not None, "use HubServer as a context manager"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def sha(self, repo_id: str, revision: str = "main") -> str:
        sha = self.repos[repo_id].lookup(revision)
        assert sha is not None
        return sha

    def move(self, repo_id: str, branch: str = "main", config: dict[str, Any] | None = None) -> str:
        """A new commit on `branch` (same files, or with a new config.json); returns its sha."""
        with self._lock:
            repo = self.repos[repo_id]
            spec, _ = repo.commits[repo.refs[branch]]
            if config is not None:
                spec = RepoSpec(spec.repo_id, spec.tensors, spec.dtype, spec.shards, copy.deepcopy(config),
                                spec.gated, spec.extra_files)
            repo.refs[branch] = repo.commit(spec)
            return repo.refs[branch]

    def tag(self, repo_id: str, name: str, revision: str = "main") -> str:
        with self._lock:
            repo = self.repos[repo_id]
            repo.refs[name] = self.sha(repo_id, revision)
            return repo.refs[name]

    def count(self, prefix: str = "") -> int:
        """Requests served whose path starts with `prefix`."""
        with self._lock:
            return sum(1 for _, path in self.requests if path.startswith(prefix))

    def __enter__(self) -> "HubServer":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                hub._serve(self, "GET")

            def do_HEAD(self) -> None:
                hub._serve(self, "HEAD")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- request handling -------------------------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        with self._lock:
            self.requests.append((method, h.path))
        parts = urlsplit(h.path)
        segments = [unquote(s) for s in parts.path.split("/")[1:]]  # %2F inside a revision stays one segment
        query = parse_qs(parts.query)
        auth = h.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        with self._lock:
            if len(segments) >= 4 and segments[0] == "api" and segments[1] == "models":
                self._model_info(h, method, segments[2:], query, token)
            elif len(segments) >= 5 and segments[2] == "resolve":
                self._resolve(h, method, "/".join(segments[:2]), segments[3], "/".join(segments[4:]), token)
            else:
                self._error(h, method, 404, None, "Not found by the scripted hub")

    def _repo(self, h: BaseHTTPRequestHandler, method: str, repo_id: str, token: str | None) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None:  # the Hub answers 401 to anonymous callers so as not to reveal private repos
            self._error(h, method, 401 if token is None else 404, "RepoNotFound", "Repository not found")
        return repo

    def _model_info(self, h: BaseHTTPRequestHandler, method: str, rest: list[str], query: dict[str, list[str]],
                    token: str | None) -> None:
        repo_id = "/".join(rest[:2])
        if len(rest) == 2:
            revision = "main"
        elif len(rest) == 4 and rest[2] == "revision":
            revision = rest[3]
        else:
            self._error(h, method, 404, None, "Not found by the scripted hub")
            return
        found = self._at_revision(h, method, repo_id, revision, token)
        if found is None:
            return
        repo, sha = found
        spec, files = repo.commits[sha]
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for name, f in sorted(files.items()):
            entry: dict[str, Any] = {"rfilename": name}
            if blobs:
                entry |= {"size": f.size, "blobId": hashlib.sha1(name.encode() + f.prefix).hexdigest()}
                if f.lfs:
                    entry["lfs"] = {"size": f.size, "sha256": f.etag, "pointerSize": 135}
            siblings.append(entry)
        body = {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "lastModified": "2024-12-06T12:00:00.000Z",
            "createdAt": "2024-09-16T12:00:00.000Z",
            "private": False,
            "gated": "manual" if spec.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "library_name": "transformers",
            "tags": ["transformers", "safetensors", "text-generation"],
            "pipeline_tag": "text-generation",
            "config": {k: spec.config[k] for k in ("architectures", "model_type") if k in spec.config}
            if spec.config else {},
            "siblings": siblings,
            "safetensors": {"parameters": {spec.dtype: spec.parameters}, "total": spec.parameters},
            "usedStorage": sum(f.size for f in files.values()),
        }
        self._send(h, method, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _at_revision(self, h: BaseHTTPRequestHandler, method: str, repo_id: str, revision: str,
                     token: str | None) -> tuple[Repo, str] | None:
        """The repo and the commit `revision` names, or None once the Hub's error has been sent."""
        repo = self._repo(h, method, repo_id, token)
        if repo is None:
            return None
        sha = repo.lookup(revision)
        if sha is None:
            self._error(h, method, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo, sha

    def _resolve(self, h: BaseHTTPRequestHandler, method: str, repo_id: str, revision: str, filename: str,
                 token: str | None) -> None:
        found = self._at_revision(h, method, repo_id, revision, token)
        if found is None:
            return
        repo, sha = found
        spec, files = repo.commits[sha]
        if spec.gated and token not in self.tokens:
            self._error(h, method, 401 if token is None else 403, "GatedRepo",
                        f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
                        "to access it. Please log in.")
            return
        f = files.get(filename)
        if f is None:
            self._error(h, method, 404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"",
                        {"X-Repo-Commit": sha})
            return
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
                   "ETag": f'"{f.etag}"'}
        if f.lfs:
            headers |= {"X-Linked-Etag": f'"{f.etag}"', "X-Linked-Size": str(f.size)}
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", h.headers.get("range", "").strip())
        if method == "HEAD":
            self._send(h, method, 200, b"", headers, content_length=f.size)
        elif match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else f.size - 1, f.size - 1)
            if start >= f.size or end - start + 1 > MAX_RANGE:
                self._error(h, method, 416, None, "Range not served by the scripted hub")
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
            self._send(h, method, 206, f.read(start, end), headers)
        elif f.size > MAX_RANGE:
            self._error(h, method, 400, None, "The scripted hub serves weights only by Range")
        else:
            self._send(h, method, 200, f.read(0, f.size - 1), headers)

    def _error(self, h: BaseHTTPRequestHandler, method: str, status: int, code: str | None, message: str,
               extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(h, method, status, json.dumps({"error": message}).encode(), headers)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, method: str, status: int, body: bytes, headers: dict[str, str],
              content_length: int | None = None) -> None:
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(body)
