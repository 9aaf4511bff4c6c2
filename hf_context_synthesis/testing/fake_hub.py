"""A loopback Hugging Face Hub for tests: the real ``HfApi``, ``hf_hub_download``, ``load_dataset`` and
``from_pretrained`` talk to it through ``HF_ENDPOINT``.

:class:`FakeHubServer` runs a threaded ``http.server`` on ``127.0.0.1`` and implements the routes that
``huggingface_hub`` 2.4 uses to create a repo, commit files, list and resolve them:

* ``POST /api/repos/create`` and ``POST /api/{type}s/{repo}/branch/{branch}``
* ``POST /api/validate-yaml`` (the README front matter must be valid YAML)
* ``POST /api/{type}s/{repo}/preupload/{rev}``: always answers ``"regular"``, so every file travels inline
  (base64) in the commit; no LFS/Xet storage is needed
* ``POST /api/{type}s/{repo}/commit/{rev}``: NDJSON body of ``header`` / ``file`` / ``deletedFile`` entries
* ``GET /api/{type}s/{repo}[/revision/{rev}]``, ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]``,
  ``POST /api/{type}s/{repo}/paths-info/{rev}``, ``GET /api/whoami-v2``
* ``GET``/``HEAD`` ``/{repo}/resolve/{rev}/{path}`` and ``/datasets/{repo}/resolve/{rev}/{path}`` with
  ``ETag``, ``X-Repo-Commit``, ``Content-Length`` and ``Range`` support

Auth: with ``token=...`` every request must carry ``Authorization: Bearer <token>`` (else 401);
``read_only_token`` may read but gets 403 on writes; ``write_namespaces`` limits the namespaces any token
may write to (403 elsewhere). Private repos answer 404 ``RepoNotFound`` to anonymous readers, like the Hub.
Fault injection: :meth:`FakeHubServer.fail_next_commits` makes the next N commits answer a 5xx.
Every request (method, path, headers, body) and every committed file's bytes are recorded, for secret scans.

Use :func:`hub_endpoint` to point ``huggingface_hub``, ``datasets`` and ``transformers`` at the server
inside the current process (they read ``HF_ENDPOINT`` once at import).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

logger = logging.getLogger(__name__)

_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_TYPES = r"(?P<type>model|dataset|space)s"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(rf"^/api/{_TYPES}/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/{_TYPES}/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/api/{_TYPES}/{_REPO}/branch/(?P<rev>[^/]+)$"), "create_branch"),
    ("POST", re.compile(rf"^/api/{_TYPES}/{_REPO}/paths-info/(?P<rev>[^/]+)$"), "paths_info"),
    ("GET", re.compile(rf"^/api/{_TYPES}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("GET", re.compile(rf"^/api/{_TYPES}/{_REPO}/revision/(?P<rev>[^/]+)$"), "info"),
    ("GET", re.compile(rf"^/api/{_TYPES}/{_REPO}$"), "info"),
    ("GET", re.compile(rf"^/(?P<prefix>datasets/|spaces/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("HEAD", re.compile(rf"^/(?P<prefix>datasets/|spaces/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports as a regular file's ``oid``)."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


@dataclass
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int = 0


@dataclass
class FakeCommit:
    """One commit: its id, message and the full file snapshot after it."""

    oid: str
    message: str
    description: str
    files: dict[str, bytes]
    added: list[str]


@dataclass
class FakeRepo:
    """A repository held in memory."""

    repo_id: str
    repo_type: str
    private: bool = False
    branches: dict[str, list[FakeCommit]] = field(default_factory=dict)

    def head(self, rev: str) -> FakeCommit | None:
        if rev in self.branches:
            return self.branches[rev][-1]
        for commits in self.branches.values():
            for c in commits:
                if c.oid == rev or (len(rev) >= 7 and c.oid.startswith(rev)):
                    return c
        return None


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None, extra: dict | None = None) -> None:
        super().__init__(message)
        self.extra = extra or {}
        self.status = status
        self.message = message
        self.error_code = error_code


class FakeHubServer:
    """A threaded loopback Hub. Use as a context manager; ``url`` is the endpoint.

    Args:
        token: Token required on every request (``None`` = anonymous access allowed).
        read_only_token: A second valid token that may read but not write (403 on writes).
        write_namespaces: Namespaces (user/org) that may be written to (``None`` = any). Writes elsewhere: 403.
        host: Interface to bind (loopback by default).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        read_only_token: str | None = None,
        write_namespaces: set[str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.token = token
        self.read_only_token = read_only_token
        self.write_namespaces = set(write_namespaces) if write_namespaces is not None else None
        self.host = host
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.requests: list[RecordedRequest] = []
        self.uploaded: list[tuple[str, str, bytes]] = []  # (repo_id, path, bytes) of every committed file
        self._commit_faults: list[int] = []
        self._lock = threading.RLock()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> "FakeHubServer":
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers
    def fail_next_commits(self, n: int, status: int = 500) -> None:
        """Make the next ``n`` commit requests answer ``status`` without committing."""
        with self._lock:
            self._commit_faults.extend([status] * n)

    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        """The stored repo (``KeyError`` if missing)."""
        return self.repos[(repo_type, repo_id)]

    def commits(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> list[FakeCommit]:
        """Commits of ``branch`` (oldest first; the repo's creation commit included)."""
        return list(self.repo(repo_id, repo_type).branches.get(branch, []))

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """Snapshot of the files at ``revision``."""
        head = self.repo(repo_id, repo_type).head(revision)
        return dict(head.files) if head else {}

    def requests_to(self, route_fragment: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path contains ``route_fragment``."""
        return [r for r in self.requests if route_fragment in r.path and (method is None or r.method == method)]

    def all_recorded_bytes(self) -> bytes:
        """Every committed file's bytes and every request body, concatenated (for secret scans)."""
        with self._lock:
            parts = [data for _, _, data in self.uploaded] + [r.body for r in self.requests]
        return b"\n".join(parts)

    # ------------------------------------------------------------------ internals
    def _new_oid(self, seed: str) -> str:
        with self._lock:
            self._counter += 1
            return hashlib.sha1(f"{seed}-{self._counter}-{time.time_ns()}".encode()).hexdigest()

    def _auth(self, headers: dict[str, str], *, write: bool, namespace: str | None) -> str | None:
        """Return the presented token (or None); raise 401/403 as the Hub would."""
        auth = headers.get("authorization", "")
        presented = auth[7:] if auth.lower().startswith("bearer ") else None
        valid = {t for t in (self.token, self.read_only_token) if t}
        if self.token is not None:
            if presented is None:
                raise _HTTPError(401, "Invalid credentials in Authorization header")
            if presented not in valid:
                raise _HTTPError(401, "Invalid credentials in Authorization header")
        if write:
            if presented is not None and presented == self.read_only_token:
                raise _HTTPError(403, "You don't have the rights to write to this repository")
            if self.write_namespaces is not None and namespace not in self.write_namespaces:
                raise _HTTPError(403, "You don't have the rights to write to this repository")
        return presented

    def _get_repo(self, repo_type: str, repo_id: str, headers: dict[str, str]) -> FakeRepo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and self.token is None and "authorization" not in headers):
            raise _HTTPError(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit_at(self, repo: FakeRepo, rev: str) -> FakeCommit:
        head = repo.head(unquote(rev))
        if head is None:
            raise _HTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return head

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.url}/{prefix}{repo_id}"

    # ------------------------------------------------------------------ handlers
    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes):
        for route_method, pattern, name in _ROUTES:
            if route_method != method:
                continue
            m = pattern.match(path)
            if m:
                params = {k: v for k, v in m.groupdict().items() if v is not None}
                return getattr(self, f"_h_{name}")(params, query, headers, body, method)
        raise _HTTPError(404, f"no route for {method} {path}")

    def _h_whoami(self, p, q, headers, body, method):
        presented = self._auth(headers, write=False, namespace=None)
        if presented is None:
            raise _HTTPError(401, "Invalid credentials in Authorization header")
        return 200, {"type": "user", "name": "fake-user", "orgs": [], "auth": {"accessToken": {"role": "write"}}}

    def _h_validate_yaml(self, p, q, headers, body, method):
        import yaml

        content = json.loads(body or b"{}").get("content", "")
        if content.startswith("---"):
            parts = content.split("---", 2)
            try:
                meta = yaml.safe_load(parts[1]) if len(parts) >= 3 else None
            except yaml.YAMLError as err:
                return 400, {"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []}
            if meta is not None and not isinstance(meta, dict):
                return 400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def _h_create_repo(self, p, q, headers, body, method):
        payload = json.loads(body or b"{}")
        name, org = payload.get("name"), payload.get("organization")
        repo_type = payload.get("type") or "model"
        repo_id = f"{org}/{name}" if org else f"fake-user/{name}"
        self._auth(headers, write=True, namespace=repo_id.split("/")[0])
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                raise _HTTPError(409, "You already created this repo", extra={"url": self._repo_url(repo_type, repo_id)})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = FakeRepo(repo_id=repo_id, repo_type=repo_type, private=private)
            attrs = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
            repo.branches["main"] = [
                FakeCommit(self._new_oid(repo_id), "initial commit", "", {".gitattributes": attrs}, [".gitattributes"])
            ]
            self.repos[(repo_type, repo_id)] = repo
        return 200, {"url": self._repo_url(repo_type, repo_id), "name": repo_id, "id": repo_id}

    def _h_create_branch(self, p, q, headers, body, method):
        self._auth(headers, write=True, namespace=p["repo"].split("/")[0])
        repo = self._get_repo(p["type"], p["repo"], headers)
        branch = unquote(p["rev"])
        payload = json.loads(body or b"{}")
        with self._lock:
            if branch in repo.branches:
                raise _HTTPError(409, "Reference already exists")
            start = self._commit_at(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = [start]
        return 200, {}

    def _h_preupload(self, p, q, headers, body, method):
        self._auth(headers, write=True, namespace=p["repo"].split("/")[0])
        repo = self._get_repo(p["type"], p["repo"], headers)
        head = repo.head(unquote(p["rev"]))
        existing = head.files if head else {}
        files = []
        for f in json.loads(body or b"{}").get("files", []):
            old = existing.get(f["path"])
            files.append(
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(old) if old is not None else None,
                }
            )
        return 200, {"files": files}

    def _h_commit(self, p, q, headers, body, method):
        self._auth(headers, write=True, namespace=p["repo"].split("/")[0])
        repo = self._get_repo(p["type"], p["repo"], headers)
        with self._lock:
            if self._commit_faults:
                status = self._commit_faults.pop(0)
                raise _HTTPError(status, "Internal Error - We're working hard to fix this as soon as possible!")
        branch = unquote(p["rev"])
        header: dict[str, Any] = {}
        added: dict[str, bytes] = {}
        deleted: list[tuple[str, bool]] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise _HTTPError(400, "only base64 file entries are supported")
                added[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                raise _HTTPError(400, f"LFS file {value['path']!r} was never uploaded (preupload answers 'regular')")
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append((value["path"], key == "deletedFolder"))
            else:
                raise _HTTPError(400, f"unknown commit entry {key!r}")
        with self._lock:
            if branch not in repo.branches:
                raise _HTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            parent = repo.branches[branch][-1]
            if header.get("parentCommit") and not parent.oid.startswith(header["parentCommit"]):
                raise _HTTPError(412, "A commit has happened since the parent commit")
            files = dict(parent.files)
            for path, is_folder in deleted:
                if is_folder:
                    for k in [k for k in files if k.startswith(path.rstrip("/") + "/")]:
                        del files[k]
                else:
                    files.pop(path, None)
            files.update(added)
            commit = FakeCommit(
                self._new_oid(repo.repo_id), header.get("summary", ""), header.get("description", ""), files,
                sorted(added),
            )
            repo.branches[branch].append(commit)
            self.uploaded.extend((repo.repo_id, k, v) for k, v in added.items())
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return 200, {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self.url}/{prefix}{repo.repo_id}/commit/{commit.oid}",
            "pullRequestUrl": None,
        }

    def _entries(self, files: dict[str, bytes], paths: list[str], recursive: bool, listing: bool) -> list[dict]:
        out: list[dict] = []
        dirs: set[str] = set()
        for f in files:
            parts = f.split("/")
            for i in range(1, len(parts)):
                dirs.add("/".join(parts[:i]))

        def file_entry(k: str) -> dict:
            return {"type": "file", "oid": git_blob_sha1(files[k]), "size": len(files[k]), "path": k}

        def dir_entry(d: str) -> dict:
            return {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}

        if not listing:  # paths-info: the paths themselves
            for path in paths:
                path = path.strip("/")
                if path in files:
                    out.append(file_entry(path))
                elif path in dirs:
                    out.append(dir_entry(path))
            return out
        base = paths[0].strip("/") if paths else ""
        if base and base not in dirs:
            if base in files:
                return [file_entry(base)]
            raise _HTTPError(404, f"Entry not found: {base}", "EntryNotFound")
        prefix = f"{base}/" if base else ""
        for d in sorted(dirs):
            if d.startswith(prefix) and (recursive or "/" not in d[len(prefix):]):
                out.append(dir_entry(d))
        for k in sorted(files):
            if k.startswith(prefix) and (recursive or "/" not in k[len(prefix):]):
                out.append(file_entry(k))
        return out

    def _h_tree(self, p, q, headers, body, method):
        self._auth(headers, write=False, namespace=None)
        repo = self._get_repo(p["type"], p["repo"], headers)
        commit = self._commit_at(repo, p["rev"])
        recursive = q.get("recursive", ["false"])[0].lower() in ("1", "true")
        return 200, self._entries(commit.files, [unquote(p.get("path", ""))], recursive, listing=True)

    def _h_paths_info(self, p, q, headers, body, method):
        self._auth(headers, write=False, namespace=None)
        repo = self._get_repo(p["type"], p["repo"], headers)
        commit = self._commit_at(repo, p["rev"])
        form = parse_qs(body.decode(), keep_blank_values=True)
        paths = form.get("paths", [])
        if not paths and body.strip().startswith(b"{"):
            paths = json.loads(body).get("paths", [])
        return 200, self._entries(commit.files, paths, False, listing=False)

    def _h_info(self, p, q, headers, body, method):
        self._auth(headers, write=False, namespace=None)
        repo = self._get_repo(p["type"], p["repo"], headers)
        commit = self._commit_at(repo, p.get("rev", "main"))
        card_data = None
        readme = commit.files.get("README.md")
        if readme is not None and readme.startswith(b"---"):
            import yaml

            with contextlib.suppress(Exception):
                card_data = yaml.safe_load(readme.decode().split("---", 2)[1])
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        return 200, {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "lastModified": now,
            "createdAt": now,
            "tags": (card_data or {}).get("tags", []) if isinstance(card_data, dict) else [],
            "cardData": card_data if isinstance(card_data, dict) else None,
            "siblings": [{"rfilename": k, "size": len(v)} for k, v in sorted(commit.files.items())],
        }

    def _h_resolve(self, p, q, headers, body, method):
        self._auth(headers, write=False, namespace=None)
        prefix = p.get("prefix") or ""
        repo_type = {"": "model", "datasets/": "dataset", "spaces/": "space"}[prefix]
        repo = self._get_repo(repo_type, p["repo"], headers)
        commit = self._commit_at(repo, p["rev"])
        path = unquote(p["path"])
        if path not in commit.files:
            raise _HTTPError(404, f"Entry not found: {path}", "EntryNotFound")
        data = commit.files[path]
        resp_headers = {
            "ETag": f'"{git_blob_sha1(data)}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        status = 200
        rng = headers.get("range")
        if rng and method == "GET":
            m = re.match(r"bytes=(\d*)-(\d*)$", rng.strip())
            if m:
                start_s, end_s = m.groups()
                if start_s == "":
                    start, end = max(0, len(data) - int(end_s)), len(data) - 1
                else:
                    start = int(start_s)
                    end = min(int(end_s), len(data) - 1) if end_s else len(data) - 1
                if start >= len(data) and len(data) > 0:
                    raise _HTTPError(416, "Range Not Satisfiable")
                resp_headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data = data[start : end + 1]
                status = 206
        return status, _Raw(data, resp_headers)


@dataclass
class _Raw:
    data: bytes
    headers: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: FakeHubServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        logger.debug("fake hub: " + format, *args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        hub = self.server_hub
        body = self._read_body()
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = RecordedRequest(method, self.path, headers, body)
        with hub._lock:
            hub.requests.append(record)
        extra: dict[str, str] = {}
        try:
            status, payload = hub.handle(method, split.path, parse_qs(split.query), headers, body)
        except _HTTPError as err:
            status, payload = err.status, {"error": err.message, **err.extra}
            if err.error_code:
                extra["X-Error-Code"] = err.error_code
            extra["X-Error-Message"] = err.message
        except Exception as err:  # pragma: no cover - a bug in the fake: answer 500 and log it
            logger.exception("fake hub handler failed")
            status, payload = 500, {"error": f"fake hub bug: {type(err).__name__}"}
        record.status = status
        if isinstance(payload, _Raw):
            data, extra = payload.data, {**extra, **payload.headers}
            length = len(data)
        else:
            data = json.dumps(payload).encode()
            extra.setdefault("Content-Type", "application/json")
            length = len(data)
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")


@contextlib.contextmanager
def hub_endpoint(url: str) -> Iterator[None]:
    """Point ``huggingface_hub``, ``datasets`` and ``transformers`` at ``url`` inside this process.

    They read ``HF_ENDPOINT`` once at import, so setting the variable later is not enough: this patches
    the module-level copies (and the default ``HfApi`` instance), enables online mode, clears cached
    ``HfFileSystem`` instances, and restores everything on exit.
    """
    import os

    import huggingface_hub
    from huggingface_hub import constants, hf_api

    saved: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, name: str, value: Any) -> None:
        if hasattr(obj, name):
            saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, value)

    url = url.rstrip("/")
    old_env = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    os.environ["HF_ENDPOINT"] = url
    os.environ["HF_HUB_OFFLINE"] = "0"
    os.environ["HF_DATASETS_OFFLINE"] = "0"
    patch(constants, "ENDPOINT", url)
    patch(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    patch(constants, "HF_HUB_OFFLINE", False)
    patch(hf_api.api, "endpoint", url)
    import datasets.config as dconfig

    patch(dconfig, "HF_ENDPOINT", url)
    patch(dconfig, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}")
    patch(dconfig, "HF_HUB_OFFLINE", False)
    with contextlib.suppress(ImportError):
        import transformers.utils.hub as thub

        patch(thub, "HUGGINGFACE_CO_RESOLVE_ENDPOINT", url)
        patch(thub, "_is_offline_mode", False)
    huggingface_hub.HfFileSystem.clear_instance_cache()
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        huggingface_hub.HfFileSystem.clear_instance_cache()
