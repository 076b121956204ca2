"""A small Hugging Face Hub look-alike served over real HTTP on 127.0.0.1, for tests (standard library only).

The real ``huggingface_hub`` client (create_repo, upload_folder / create_commit / push_to_hub, hf_hub_download,
snapshot_download, model_info, list_repo_files, from_pretrained) talks to it as to the Hub. It emulates:

* ``POST /api/repos/create`` (409 if the repo exists); a new repo has, as on the Hub, an "initial commit" with a
  ``.gitattributes``. Model, dataset and space repos (URL prefixes ``datasets/``, ``spaces/``).
* ``POST /api/{type}s/{repo}/preupload/{rev}``: ``lfs`` for the ``lfs_suffixes``, for samples holding a NUL byte
  and from ``lfs_threshold`` bytes, else ``regular``; with the ``oid`` already there so unchanged files are skipped.
* the LFS batch API ``/{repo}.git/info/lfs/objects/batch`` (``basic`` transfer: PUT to ``/_lfs/{sha256}``, then
  ``verify``), and the NDJSON ``/commit/{branch}`` (``file``, ``lfsFile``, ``deletedFile``, ``deletedFolder``,
  stale ``parentCommit`` -> 412), each commit getting a new 40-hex sha.
* ``GET /api/{type}s/{repo}[/revision/{rev}]`` (``sha``, ``siblings``, with sizes and LFS info for ``?blobs=true``),
  ``/tree/{rev}[/{path}]`` (``?recursive=true``), ``/api/whoami-v2`` and ``/api/validate-yaml``.
* ``GET``/``HEAD /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` (git blob sha1; the sha256 for
  LFS files, which also get ``X-Linked-Etag``/``X-Linked-Size``), ``Content-Length`` and single byte ``Range``.
* errors with ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and ``X-Error-Message``,
  which the client turns into its exceptions.

It does not emulate Xet storage (clients must run with ``HF_HUB_DISABLE_XET=1``: see ``client_env``), multipart
LFS, pull requests, branches other than ``main``, tags, refs, file copies, paths-info, pagination, CDN redirects
(files are served directly), repo deletion, gating, permissions or rate limits: any Bearer token is accepted and
recorded in ``tokens``, ``private`` is only stored. State is in memory.

``huggingface_hub`` reads ``HF_ENDPOINT`` and ``HF_HUB_DISABLE_XET`` at import: call ``reserve_endpoint()`` first
(top of conftest.py), or ``point_client_at()`` to patch a client imported already.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import itertools
import json
import os
import re
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".npy", ".npz", ".pkl",
                ".gz", ".zip", ".tar", ".parquet", ".arrow")
_KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REPO = r"(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+(?:/[^/]+)?)"
_API = re.compile(r"^/api/(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+(?:/[^/]+)?)"
                  r"(?:/(?P<action>revision|preupload|commit|tree)/(?P<rest>.+))?$")
_RESOLVE = re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_LFS = re.compile(rf"^/{_REPO}\.git/info/lfs/objects/(?P<op>batch|verify)$")


def client_env(endpoint: str) -> dict[str, str]:
    """The environment a ``huggingface_hub`` client needs to use the server at ``endpoint``."""
    return {"HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0"}


def point_client_at(endpoint: str, monkeypatch=None) -> None:
    """Set ``client_env(endpoint)``, and patch the import-time constants of an already imported client.

    With a pytest ``monkeypatch`` all of it is undone after the test; without, it lasts for the process.
    """
    setenv = monkeypatch.setenv if monkeypatch is not None else os.environ.__setitem__
    setattr_ = monkeypatch.setattr if monkeypatch is not None else setattr
    for key, value in client_env(endpoint).items():
        setenv(key, value)
    if (constants := sys.modules.get("huggingface_hub.constants")) is not None:
        template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        patches = {"ENDPOINT": endpoint, "HUGGINGFACE_CO_URL_TEMPLATE": template, "HF_HUB_DISABLE_XET": True,
                   "HF_HUB_DISABLE_TELEMETRY": True, "HF_HUB_OFFLINE": False}
        for name, value in patches.items():
            setattr_(constants, name, value)
    if (hf_api := sys.modules.get("huggingface_hub.hf_api")) is not None:  # behind huggingface_hub.upload_folder & co
        setattr_(hf_api.api, "endpoint", endpoint)


def reserve_endpoint(start: bool = True) -> HubServer:
    """A ``HubServer`` on a free port, with the client pointed at it; stopped at interpreter exit.

    Call it before ``huggingface_hub`` is imported, so that the import sees ``HF_ENDPOINT``.
    """
    server = HubServer()
    point_client_at(server.endpoint)
    atexit.register(server.stop)
    return server.start() if start else server


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: the Hub's ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An error answered as the Hub does: a status, ``X-Error-Message`` and maybe ``X-Error-Code``."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.extra = status, message, code, headers or {}, extra


class _Repo:
    def __init__(self, kind: str, repo_id: str, private: bool):
        self.kind, self.repo_id, self.private, self.created = kind, repo_id, private, _now()
        self.branches: dict[str, str] = {}  # branch -> commit sha
        self.commits: dict[str, dict] = {}  # sha -> {"tree": {path: (sha256, is_lfs)}, "parent", "message", "date"}

    def resolve(self, revision: str) -> str:
        sha = self.branches.get(revision) or (revision if revision in self.commits else None)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha


class HubServer:
    """An in-memory Hub at ``endpoint`` (``http://host:port``); the port is bound here, 0 picks a free one.

    ``start()``/``stop()``, or ``with HubServer() as hub:``. ``tokens`` lists the Bearer tokens received,
    ``requests`` the ``(method, path)`` of every request and ``errors`` the server's own failures (answered 500);
    ``head()``, ``files()`` and ``seed()`` read and write repos without HTTP.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, user: str = "user",
                 lfs_threshold: int = 10 * 1024 * 1024, lfs_suffixes: tuple[str, ...] = LFS_SUFFIXES):
        self.user, self.lfs_threshold, self.lfs_suffixes = user, lfs_threshold, tuple(lfs_suffixes)
        self.tokens: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[str, bytes] = {}  # sha256 -> content, for all repos
        self._counter = itertools.count()
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.hub = self  # type: ignore[attr-defined]
        self.host, self.port = host, self._httpd.server_address[1]
        self.endpoint = f"http://{host}:{self.port}"

    def start(self) -> HubServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the kept-alive connections and the port. Idempotent."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every repo, blob, token, request and error."""
        with self._lock:
            for store in (self._repos, self._blobs, self.tokens, self.requests, self.errors):
                store.clear()

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """The commit sha ``revision`` of the repo points to."""
        with self._lock:
            return self._repo(repo_type, repo_id).resolve(revision)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """``{path: content}`` of the repo at ``revision``."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            return {p: self._blobs[s] for p, (s, _) in repo.commits[repo.resolve(revision)]["tree"].items()}

    def seed(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model") -> str:
        """Create the repo if needed and commit ``files`` to ``main`` as an upload would; returns the commit sha."""
        repo_id = repo_id if "/" in repo_id else f"{self.user}/{repo_id}"
        namespace, name = repo_id.split("/")
        with self._lock:
            if (repo_type, repo_id) not in self._repos:
                self._create_repo({"name": name, "organization": namespace, "type": repo_type})
            ops = []
            for path, data in files.items():
                if self._is_lfs(path, len(data), data[:512]):
                    self._blobs[oid := hashlib.sha256(data).hexdigest()] = data
                    ops.append({"key": "lfsFile", "value": {"path": path, "oid": oid}})
                else:
                    ops.append({"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode()}})
            return self._commit(self._repos[(repo_type, repo_id)], "main", ops, {})["commitOid"]

    # -- internals; endpoints return a JSON-able value, or (bytes, headers) for files ---------------------------
    def _repo(self, kind: str, repo_id: str) -> _Repo:
        if (repo := self._repos.get((kind, repo_id))) is None:
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def _new_commit(self, repo: _Repo, branch: str, tree: dict, message: str) -> str:
        parent = repo.branches.get(branch)
        seed = json.dumps([repo.repo_id, parent, message, sorted(tree.items()), next(self._counter)])
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[sha] = {"tree": dict(tree), "parent": parent, "message": message, "date": _now()}
        repo.branches[branch] = sha
        return sha

    def _entry(self, path: str, sha256: str, is_lfs: bool) -> dict:
        """A file as the tree API lists it; an LFS file's ``oid`` is that of its git pointer file."""
        size = len(self._blobs[sha256])
        if not is_lfs:
            return {"type": "file", "path": path, "size": size, "oid": git_blob_sha1(self._blobs[sha256])}
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
        lfs = {"oid": sha256, "size": size, "pointerSize": len(pointer)}
        return {"type": "file", "path": path, "size": size, "oid": git_blob_sha1(pointer), "lfs": lfs}

    def _is_lfs(self, path: str, size: int, sample: bytes) -> bool:
        return path.endswith(self.lfs_suffixes) or size >= self.lfs_threshold or b"\0" in sample

    def _url(self, repo: _Repo) -> str:
        return f"{self.endpoint}/{_PREFIX[repo.kind]}{repo.repo_id}"

    def _create_repo(self, body: dict) -> dict:
        name, kind = body.get("name") or "", body.get("type") or "model"
        if kind not in _PREFIX or not re.fullmatch(r"[\w.-]+", name) or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name or type: {name!r} ({kind})")
        repo_id = f"{body.get('organization') or self.user}/{name}"
        if (kind, repo_id) in self._repos:
            # create_repo(exist_ok=True) reads the "url" of this 409 body
            raise HubError(409, f"You already created this {kind} repo", url=self._url(self._repos[(kind, repo_id)]))
        private = body.get("visibility") == "private" or body.get("private") is True
        repo = self._repos[(kind, repo_id)] = _Repo(kind, repo_id, private)
        attributes = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in self.lfs_suffixes).encode()
        self._blobs[sha256 := hashlib.sha256(attributes).hexdigest()] = attributes
        self._new_commit(repo, "main", {".gitattributes": (sha256, False)}, "initial commit")
        return {"url": self._url(repo), "name": repo_id, "id": repo_id}

    def _info(self, repo: _Repo, revision: str, query: dict) -> dict:
        commit = repo.commits[sha := repo.resolve(revision)]
        siblings = []
        for path, (sha256, is_lfs) in sorted(commit["tree"].items()):
            siblings.append({"rfilename": path})
            if _flag(query, "blobs"):
                entry = self._entry(path, sha256, is_lfs)
                siblings[-1].update(size=entry["size"], blobId=entry["oid"])
                if is_lfs:
                    siblings[-1]["lfs"] = {"size": entry["size"], "sha256": sha256,
                                           "pointerSize": entry["lfs"]["pointerSize"]}
        info = {"_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0], "sha": sha, "lastModified": commit["date"],
                "createdAt": repo.created, "private": repo.private, "disabled": False, "gated": False,
                "downloads": 0, "likes": 0, "tags": [], "siblings": siblings}
        return {**info, "modelId": repo.repo_id} if repo.kind == "model" else info

    def _preupload(self, repo: _Repo, revision: str, body: dict) -> dict:
        tree = repo.commits[sha := repo.resolve(revision)]["tree"]
        files = []
        for f in body.get("files", []):
            path, size, sample = f["path"], int(f["size"]), base64.b64decode(f.get("sample", ""))
            lfs = self._is_lfs(path, size, sample)
            oid = None  # the client compares it with its own (sha256 for LFS, git sha1 else) to skip unchanged files
            if path in tree:
                oid = tree[path][0] if tree[path][1] else git_blob_sha1(self._blobs[tree[path][0]])
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return {"files": files, "commitOid": sha}

    def _lfs_batch(self, repo: _Repo, body: dict) -> dict:
        if body.get("operation") != "upload" or "basic" not in body.get("transfers", ["basic"]):
            raise HubError(400, "Only the 'basic' transfer of the 'upload' operation is supported")
        objects = []
        for obj in body.get("objects", []):
            objects.append({"oid": obj["oid"], "size": int(obj["size"])})
            if obj["oid"] not in self._blobs:  # without "actions" the client skips the upload
                verify = f"{self._url(repo)}.git/info/lfs/objects/verify"
                objects[-1].update(authenticated=True, actions={
                    "upload": {"href": f"{self.endpoint}/_lfs/{obj['oid']}"}, "verify": {"href": verify}})
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def _lfs_verify(self, body: dict) -> dict:
        data = self._blobs.get(body.get("oid", ""))
        if data is None or len(data) != body.get("size"):
            raise HubError(404, f"LFS object {body.get('oid')} not found or of another size")
        return {}

    def _lfs_put(self, oid: str, data: bytes) -> dict:
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match sha256 {oid}")
        self._blobs[oid] = data
        return {}

    def _commit(self, repo: _Repo, branch: str, lines: list[dict], query: dict) -> dict:
        if _flag(query, "create_pr"):
            raise HubError(400, "Pull requests are not supported by this test Hub")
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
        header = next((line["value"] for line in lines if line.get("key") == "header"), {})
        if header.get("parentCommit") not in (None, repo.branches[branch]):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(repo.commits[repo.branches[branch]]["tree"])
        for line in lines:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                data = base64.b64decode(value["content"])
                self._blobs[sha256 := hashlib.sha256(data).hexdigest()] = data
                tree[value["path"]] = (sha256, False)
            elif key == "lfsFile":
                if value["oid"] not in self._blobs:
                    raise HubError(400, f"LFS object {value['oid']} of {value['path']} was not uploaded")
                tree[value["path"]] = (value["oid"], True)
            elif key == "deletedFile":
                if tree.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                tree = {p: v for p, v in tree.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            elif key != "header":
                raise HubError(400, f"Unsupported commit operation: {key}")
        sha = self._new_commit(repo, branch, tree, message := header.get("summary") or "commit")
        return {"success": True, "commitOid": sha, "commitUrl": f"{self._url(repo)}/commit/{sha}",
                "commitMessage": message, "hookOutput": "", "pullRequestUrl": None}

    def _tree(self, repo: _Repo, rest: str, query: dict) -> list:
        revision, _, prefix = rest.partition("/")
        tree = repo.commits[repo.resolve(unquote(revision))]["tree"]
        prefix, recursive = unquote(prefix).strip("/"), _flag(query, "recursive")
        base = prefix + "/" if prefix else ""
        files, folders = [], set()
        for path, (sha256, is_lfs) in sorted(tree.items()):
            if path.startswith(base):
                parts = path[len(base):].split("/")
                depth = len(parts) if recursive else min(2, len(parts))
                folders.update(base + "/".join(parts[:i]) for i in range(1, depth))
                if recursive or len(parts) == 1:
                    files.append(self._entry(path, sha256, is_lfs))
        if prefix and not files and not folders:
            raise HubError(404, f"{prefix} does not exist at {revision}", "EntryNotFound")
        return [{"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest()}
                for d in sorted(folders)] + files

    def _resolve(self, repo: _Repo, revision: str, path: str) -> tuple[bytes, dict]:
        found = repo.commits[sha := repo.resolve(revision)]["tree"].get(path)
        if found is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        data = self._blobs[found[0]]
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if found[1]:
            etag = f'"{found[0]}"'
            headers.update({"ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        return data, headers

    def _route(self, method: str, path: str, query: dict, raw: bytes, auth: str):
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(_json(raw))
        if method == "GET" and path == "/api/whoami-v2":
            if not auth.startswith("Bearer "):
                raise HubError(401, "Invalid credentials in Authorization header")
            return {"type": "user", "name": self.user, "fullname": self.user, "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}}
        if method == "POST" and path == "/api/validate-yaml":
            return {"errors": [], "warnings": []}
        if method == "PUT" and path.startswith("/_lfs/"):
            return self._lfs_put(path[len("/_lfs/"):], raw)
        if method == "POST" and (match := _LFS.match(path)):
            repo = self._repo(_KINDS[match["kind"] or "models"], match["repo"])
            return self._lfs_batch(repo, _json(raw)) if match["op"] == "batch" else self._lfs_verify(_json(raw))
        if method in ("GET", "HEAD") and (match := _RESOLVE.match(path)):
            repo = self._repo(_KINDS[match["kind"] or "models"], match["repo"])
            return self._resolve(repo, unquote(match["rev"]), unquote(match["path"]))
        if match := _API.match(path):
            repo, action, rest = self._repo(_KINDS[match["kind"]], match["repo"]), match["action"], match["rest"]
            if method == "GET" and action in (None, "revision"):
                return self._info(repo, unquote(rest or "main"), query)
            if method == "POST" and action == "preupload":
                return self._preupload(repo, unquote(rest), _json(raw))
            if method == "POST" and action == "commit":
                return self._commit(repo, unquote(rest), [_json(line) for line in raw.splitlines() if line], query)
            if method == "GET" and action == "tree":
                return self._tree(repo, rest, query)
        raise HubError(404, f"Not found: {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, runs ``HubServer._route`` under the server's lock and writes the response."""

    protocol_version = "HTTP/1.1"  # keep-alive, which the client's connection pool uses
    timeout = 60  # seconds before an idle kept-alive connection is closed

    def setup(self) -> None:
        super().setup()
        with self.server.hub._lock:
            self.server.hub._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.hub._lock:
            self.server.hub._connections.discard(self.connection)
        super().finish()

    def log_message(self, format, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        hub: HubServer = self.server.hub
        raw = self._read_body()
        url = urlsplit(self.path)
        auth = self.headers.get("Authorization", "")
        with hub._lock:
            hub.requests.append((self.command, url.path))
            if auth.startswith("Bearer "):
                hub.tokens.append(auth[len("Bearer "):])
            try:
                result = hub._route(self.command, url.path, parse_qs(url.query), raw, auth)
            except HubError as err:
                headers = {"X-Error-Message": err.message, **err.headers}
                headers.update({"X-Error-Code": err.code} if err.code else {})
                return self._send(err.status, json.dumps({"error": err.message, **err.extra}).encode(), headers)
            except Exception as err:  # a bug here: answer 500 rather than drop the connection
                hub.errors.append(f"{self.command} {self.path}: {traceback.format_exc()}")
                return self._send(500, json.dumps({"error": repr(err)}).encode())
        if isinstance(result, tuple):
            return self._send_file(*result)
        self._send(200, json.dumps(result).encode())

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers, up to the blank line
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_file(self, data: bytes, headers: dict) -> None:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if self.command != "GET" or not match or not any(match.groups()):
            return self._send(200, data, headers)
        first, last = match.groups()
        start = int(first) if first else max(len(data) - int(last), 0)  # "bytes=-N": the last N bytes
        end = min(int(last), len(data) - 1) if first and last else len(data) - 1
        if start > end:
            return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
        self._send(206, data[start:end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"})


def _json(raw: bytes):
    try:
        return json.loads(raw or b"{}")
    except ValueError as err:
        raise HubError(400, f"Invalid JSON body: {err}") from None


def _flag(query: dict, name: str) -> bool:
    return query.get(name, [""])[0].lower() in ("1", "true")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
