"""A loopback fake of the Hugging Face Hub: the part of its HTTP API that ``huggingface_hub`` uses to push and pull.

It is a real HTTP server on 127.0.0.1 (random free port, one thread per request) so the production code paths of
``huggingface_hub`` and ``transformers`` run unchanged against it; only ``HF_ENDPOINT`` (or ``HfApi(endpoint=...)``)
points at it. Implemented, model repos only:

- ``POST /api/repos/create``: creates ``namespace/name`` (the token's user when no namespace), with an initial commit
  holding a ``.gitattributes`` like the Hub's; 409 if it exists.
- ``POST /api/validate-yaml``: the README front matter must parse and its ``model-index`` must be well formed.
- ``POST /api/models/{repo}/preupload/{rev}``: ``*.safetensors`` & co, binary files (a NUL byte in the sample) and
  files over 10 MB go through LFS, the rest inline; returns the current oid of each path so unchanged files are skipped.
- ``POST /{repo}.git/info/lfs/objects/batch`` + ``PUT /lfs-upload/{sha256}``: the LFS "basic" transfer (set
  ``HF_HUB_DISABLE_XET=1`` in the client, the fake has no Xet storage).
- ``POST /api/models/{repo}/commit/{rev}``: the NDJSON commit (header, ``file``, ``lfsFile``, ``deletedFile``,
  ``deletedFolder``); ``parentCommit`` is checked.
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: downloads with the ``ETag`` / ``X-Repo-Commit`` headers
  ``hf_hub_download`` relies on, and ``X-Error-Code`` on 404 (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``) so optional files are told apart from errors.
- ``GET /api/models/{repo}[/revision/{rev}]``, ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (one page) and
  ``GET /api/whoami-v2``.

Writes need ``Authorization: Bearer <token>`` with the server's token; a private repo is invisible without it.
Blobs live in a directory (content-addressed); repo metadata and the request log live in memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".npz")
LFS_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = b"".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n".encode() for s in LFS_SUFFIXES)


class HubError(Exception):
    """An HTTP error answered the way the Hub does (status, ``X-Error-Code``, JSON ``error``)."""

    def __init__(self, status: int, message: str, code: str | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.body = status, code, body or {"error": message}


def git_blob_sha1(data: bytes) -> str:
    """Git object id of a blob (what the Hub reports for files stored in git)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Entry:
    """A file of a commit: its blob key (git sha1, or sha256 for LFS), size and storage."""

    key: str
    size: int
    lfs: bool


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, Entry]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    def resolve(self, revision: str) -> Commit:
        if revision == "main":
            return self.commits[-1]
        for commit in self.commits:
            if commit.oid == revision:
                return commit
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class FakeHub:
    """State of the fake Hub: repos, blobs, accepted token, and a log of requests.

    Args:
        root: Directory holding the blobs.
        token: The only accepted token.
        user: Name of the token's user (default namespace of new repos).
    """

    def __init__(self, root: str | Path, token: str, user: str = "fake-user"):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.token, self.user = token, user
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, authenticated)
        self.lock = threading.RLock()
        self.endpoint = ""
        self.secret = os.urandom(16)

    # ------------------------------------------------------------------------------------------------ storage
    def _put_blob(self, key: str, data: bytes) -> None:
        path = self.root / "blobs" / key
        if not path.exists():
            path.write_bytes(data)

    def has_blob(self, key: str) -> bool:
        return (self.root / "blobs" / key).is_file()

    def _commit(self, repo: Repo, message: str, files: dict[str, Entry]) -> Commit:
        parent = repo.commits[-1].oid if repo.commits else ""
        manifest = json.dumps({p: e.key for p, e in sorted(files.items())})
        oid = hashlib.sha1(f"{parent}\n{message}\n{manifest}".encode()).hexdigest()
        commit = Commit(oid=oid, message=message, files=files)
        repo.commits.append(commit)
        return commit

    # ------------------------------------------------------------------------------------------- test helpers
    def read_file(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        """Content of ``path`` in ``repo_id`` at ``revision``."""
        entry = self.repos[repo_id].resolve(revision).files[path]
        return (self.root / "blobs" / entry.key).read_bytes()

    def list_files(self, repo_id: str, revision: str = "main") -> list[str]:
        """Paths of the files of ``repo_id`` at ``revision``."""
        return sorted(self.repos[repo_id].resolve(revision).files)

    # ------------------------------------------------------------------------------------------------ access
    def authenticated(self, headers) -> bool:
        value = headers.get("Authorization")
        if value is None:
            return False
        if value != f"Bearer {self.token}":
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def get_repo(self, repo_id: str, authenticated: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authenticated):
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    # --------------------------------------------------------------------------------------------- endpoints
    def create_repo(self, payload: dict) -> dict:
        if payload.get("type", "model") != "model":
            raise HubError(400, "The fake Hub only hosts model repos.")
        name = payload.get("name") or ""
        if not re.fullmatch(r"[\w.-]{1,96}", name):
            raise HubError(400, f"Invalid repo name {name!r}.")
        repo_id = f"{payload.get('organization') or self.user}/{name}"
        if repo_id in self.repos:
            raise HubError(
                409,
                "You already created this model repo",
                body={"error": "You already created this model repo", "url": f"{self.endpoint}/{repo_id}"},
            )
        repo = Repo(repo_id=repo_id, private=payload.get("visibility") == "private")
        key = git_blob_sha1(GITATTRIBUTES)
        self._put_blob(key, GITATTRIBUTES)
        self._commit(repo, "initial commit", {".gitattributes": Entry(key, len(GITATTRIBUTES), lfs=False)})
        self.repos[repo_id] = repo
        return {"url": f"{self.endpoint}/{repo_id}", "name": repo_id, "id": repo_id}

    @staticmethod
    def validate_yaml(payload: dict) -> dict:
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", payload.get("content", ""), re.S)
        if match is None:
            return {"warnings": [{"message": "Empty or missing yaml metadata in repo card"}]}
        try:
            metadata = yaml.safe_load(match.group(1)) or {}
            for model in metadata.get("model-index", []):
                for result in model["results"]:
                    _ = result["task"]["type"], result["dataset"]["type"], result["dataset"]["name"]
                    for metric in result["metrics"]:
                        _ = metric["type"], metric["value"]
        except (yaml.YAMLError, KeyError, TypeError) as err:
            raise HubError(
                400, "Invalid metadata", body={"errors": [{"message": f"{type(err).__name__}: {err}"}]}
            ) from err
        return {"warnings": []}

    def preupload(self, repo: Repo, revision: str, payload: dict) -> dict:
        head = repo.resolve(revision)
        files = []
        for item in payload["files"]:
            binary = b"\0" in base64.b64decode(item.get("sample", ""))
            lfs = item["path"].endswith(LFS_SUFFIXES) or binary or item["size"] > LFS_THRESHOLD
            current = head.files.get(item["path"])
            oid = current.key if current is not None and current.lfs == lfs else None
            files.append(
                {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        return {"files": files, "commitOid": head.oid}

    def lfs_batch(self, payload: dict) -> dict:
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, "The fake Hub accepts LFS 'upload' with the 'basic' transfer only.")
        objects = []
        for obj in payload["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not self.has_blob(obj["oid"]):
                href = f"{self.endpoint}/lfs-upload/{obj['oid']}/{obj['size']}?signature={self.sign(obj['oid'])}"
                entry["actions"] = {"upload": {"href": href}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def sign(self, oid: str) -> str:
        """Signature of an LFS upload URL (uploads go to pre-signed URLs, without the Hub token)."""
        return hmac.new(self.secret, oid.encode(), "sha256").hexdigest()

    def lfs_upload(self, oid: str, size: int, signature: str, data: bytes) -> None:
        if not hmac.compare_digest(signature, self.sign(oid)):
            raise HubError(403, "Bad signature of the LFS upload URL.")
        if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"LFS object {oid} does not match its sha256/size.")
        self._put_blob(oid, data)

    def commit(self, repo: Repo, revision: str, body: bytes) -> dict:
        if revision != "main":
            raise HubError(400, "The fake Hub commits to 'main' only (no branches, no pull requests).")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "A commit starts with a header line.")
        header = lines[0]["value"]
        head = repo.resolve("main")
        if header.get("parentCommit") not in (None, head.oid):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        blobs: list[tuple[str, bytes]] = []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"]
            if key == "file":
                data = (
                    base64.b64decode(value["content"])
                    if value.get("encoding") == "base64"
                    else value["content"].encode()
                )
                blobs.append((git_blob_sha1(data), data))
                files[path] = Entry(blobs[-1][0], len(data), lfs=False)
            elif key == "lfsFile":
                if not self.has_blob(value["oid"]):
                    raise HubError(400, f"LFS object {value['oid']} of {path} was not uploaded.")
                files[path] = Entry(value["oid"], int(value["size"]), lfs=True)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                files = {p: e for p, e in files.items() if not p.startswith(path.rstrip("/") + "/")}
            else:
                raise HubError(400, f"Unsupported commit operation {key!r}.")
        for blob_key, data in blobs:  # only once the whole commit is valid
            self._put_blob(blob_key, data)
        commit = self._commit(repo, header.get("summary", ""), files)
        return {
            "commitUrl": f"{self.endpoint}/{repo.repo_id}/commit/{commit.oid}",
            "commitOid": commit.oid,
            "pullRequestUrl": None,
        }

    def model_info(self, repo: Repo, revision: str) -> dict:
        commit = repo.resolve(revision)
        siblings = [{"rfilename": p, "size": e.size, "blobId": e.key} for p, e in sorted(commit.files.items())]
        return {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": commit.oid,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "siblings": siblings,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "createdAt": repo.created_at,
            "lastModified": repo.created_at,
        }

    def tree(self, repo: Repo, revision: str, folder: str, recursive: bool) -> list[dict]:
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        items: dict[str, dict] = {}
        for path, entry in sorted(repo.resolve(revision).files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                sub = prefix + "/".join(parts[:depth])
                items.setdefault(
                    sub, {"type": "directory", "path": sub, "oid": hashlib.sha1(sub.encode()).hexdigest()}
                )
            if recursive or len(parts) == 1:
                item = {"type": "file", "path": path, "size": entry.size, "oid": entry.key}
                if entry.lfs:
                    item["lfs"] = {"oid": entry.key, "size": entry.size, "pointerSize": 134}
                items[path] = item
        if prefix and not items:
            raise HubError(404, f"Entry not found: {folder}", "EntryNotFound")
        return list(items.values())

    def resolve_file(self, repo: Repo, revision: str, path: str) -> tuple[Commit, Entry]:
        commit = repo.resolve(revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        return commit, entry


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes the requests to :class:`FakeHub` (one instance per request, ``self.server.hub`` holds the state)."""

    protocol_version = "HTTP/1.1"
    server: HubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: the hub keeps its own log
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip(), 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _handle(self, method: str) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        body = self._body() if method in ("POST", "PUT") else b""
        try:
            with hub.lock:
                authenticated = hub.authenticated(self.headers)
                hub.requests.append((method, path, authenticated))
                self._route(hub, method, path, query, body, authenticated)
        except HubError as err:
            headers = {"Content-Type": "application/json", "X-Error-Message": str(err)}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(
                err.status, b"" if method == "HEAD" else json.dumps(err.body).encode(), headers, method == "HEAD"
            )

    def _route(
        self, hub: FakeHub, method: str, path: str, query: dict[str, list[str]], body: bytes, authenticated: bool
    ) -> None:
        repo_pattern = r"(?P<repo>[^/]+/[^/]+)"
        if method == "POST" and not authenticated and path != "/api/validate-yaml":
            raise HubError(401, "Invalid username or password.")
        if method == "POST" and path == "/api/repos/create":
            return self._json(hub.create_repo(json.loads(body)))
        if method == "POST" and path == "/api/validate-yaml":
            return self._json(hub.validate_yaml(json.loads(body)))
        if method == "GET" and path == "/api/whoami-v2":
            if not authenticated:
                raise HubError(401, "Invalid credentials in Authorization header")
            return self._json({"type": "user", "name": hub.user, "orgs": [], "auth": {"type": "access_token"}})
        if method == "PUT" and (m := re.fullmatch(r"/lfs-upload/(?P<oid>[0-9a-f]{64})/(?P<size>\d+)", path)):
            hub.lfs_upload(m["oid"], int(m["size"]), query.get("signature", [""])[0], body)
            return self._send(200)
        if method == "POST" and (m := re.fullmatch(rf"/{repo_pattern}\.git/info/lfs/objects/batch", path)):
            hub.get_repo(m["repo"], authenticated)
            return self._json(hub.lfs_batch(json.loads(body)))
        m = re.fullmatch(rf"/api/models/{repo_pattern}/(?P<op>preupload|commit)/(?P<rev>[^/]+)", path)
        if method == "POST" and m:
            repo = hub.get_repo(m["repo"], authenticated)
            if m["op"] == "preupload":
                return self._json(hub.preupload(repo, unquote(m["rev"]), json.loads(body)))
            return self._json(hub.commit(repo, unquote(m["rev"]), body))
        if method == "GET" and (m := re.fullmatch(rf"/api/models/{repo_pattern}(?:/revision/(?P<rev>[^/]+))?", path)):
            return self._json(hub.model_info(hub.get_repo(m["repo"], authenticated), unquote(m["rev"] or "main")))
        m = re.fullmatch(rf"/api/models/{repo_pattern}/tree/(?P<rev>[^/]+)(?:/(?P<folder>.+))?", path)
        if method == "GET" and m:
            repo = hub.get_repo(m["repo"], authenticated)
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self._json(hub.tree(repo, unquote(m["rev"]), unquote(m["folder"] or ""), recursive))
        m = re.fullmatch(rf"/{repo_pattern}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
        if method in ("GET", "HEAD") and m:
            repo = hub.get_repo(m["repo"], authenticated)
            commit, entry = hub.resolve_file(repo, unquote(m["rev"]), unquote(m["file"]))
            data = (hub.root / "blobs" / entry.key).read_bytes()
            headers = {
                "ETag": f'"{entry.key}"',
                "X-Repo-Commit": commit.oid,
                "Content-Type": "application/octet-stream",
            }
            if entry.lfs:
                headers["X-Linked-Etag"], headers["X-Linked-Size"] = f'"{entry.key}"', str(entry.size)
            return self._send(200, data, headers, head=method == "HEAD")
        raise HubError(404, f"The fake Hub does not implement {method} {path}.")

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")


class HubHTTPServer(ThreadingHTTPServer):
    """The HTTP server, holding the :class:`FakeHub` state."""

    daemon_threads = True

    def __init__(self, hub: FakeHub):
        super().__init__(("127.0.0.1", 0), HubRequestHandler)
        self.hub = hub
        hub.endpoint = f"http://127.0.0.1:{self.server_address[1]}"


class running_fake_hub:
    """Context manager serving a :class:`FakeHub` on 127.0.0.1 (random free port) in a background thread.

    Example:
        ```python
        with running_fake_hub(tmp_path, token="hf_fake") as hub:
            HfApi(endpoint=hub.endpoint, token="hf_fake").create_repo("me/model")
        ```
    """

    def __init__(self, root: str | Path, token: str, user: str = "fake-user"):
        self.hub = FakeHub(root, token=token, user=user)
        self.server = HubHTTPServer(self.hub)
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-hub", daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self.hub

    def __exit__(self, *exc_info: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
