"""A Hugging Face hub on 127.0.0.1, serving repositories the tests write, for the real ``huggingface_hub`` client.

It answers the requests ``snapshot_download`` makes: the revision's info
(``/api/models/{repo}/revision/{rev}``), the tree of a commit
(``/api/models/{repo}/tree/{rev}``), and each file's HEAD and GET
(``/{repo}/resolve/{rev}/{path}``, with ``X-Repo-Commit`` and ``ETag``).
Errors carry the ``X-Error-Code`` the client maps to its exceptions. Every
request is logged, so a test can say that a run made none.

It also answers what ``create_repo`` and ``upload_folder`` send: repository
creation (``POST /api/repos/create``, 409 when it exists), the model card's
metadata check (``POST /api/validate-yaml``), the preupload
check (``POST /api/models/{repo}/preupload/{rev}``, which it answers
"regular" for every file: their bytes come inline in the commit) and the
commit itself (``POST /api/models/{repo}/commit/{rev}``, NDJSON: a header,
then base64 files and deletions), which becomes a new commit at the head of
``rev``. Writes need a token (``Authorization: Bearer ...``); LFS uploads are
not served (a commit naming one is refused).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


@dataclass
class _Repo:
    refs: dict[str, str] = field(default_factory=dict)  # branch -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> path -> bytes
    gated: bool = False


class LocalHub:
    """Repositories in memory, served over HTTP until :meth:`stop`.

    Attributes
    ----------
    requests : list of (method, path)
        Every request received, in order.
    cut : dict
        ``{file name: n bytes}``: a GET of that file sends its full length in
        the headers, then only ``n`` bytes, and drops the connection (a server
        going down mid-download).
    unserved : set of str
        File names listed in a commit's tree whose download answers 404.
    """

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.cut: dict[str, int] = {}
        self.unserved: set[str] = set()
        self._server: ThreadingHTTPServer | None = None

    def publish(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        """A new commit of ``repo`` holding ``files``, at the head of ``branch``; returns the commit."""
        entry = self.repos.setdefault(repo, _Repo())
        digest = hashlib.sha1(repo.encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + files[name])
        digest.update(str(len(entry.commits)).encode())
        commit = digest.hexdigest()
        entry.commits[commit] = dict(files)
        entry.refs[branch] = commit
        return commit

    def gate(self, repo: str) -> None:
        self.repos.setdefault(repo, _Repo()).gated = True

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        hub = self

        class Handler(_Handler):
            served = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def file_requests(self) -> list[tuple[str, str]]:
        """The requests for files (HEAD or GET of ``/resolve/``)."""
        return [r for r in self.requests if "/resolve/" in r[1]]


class _Handler(BaseHTTPRequestHandler):
    served: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # quiet: the hub keeps its own log

    def do_HEAD(self):  # noqa: N802 - http.server's name
        self._answer(send_body=False)

    def do_GET(self):  # noqa: N802
        self._answer(send_body=True)

    def do_POST(self):  # noqa: N802
        path = urlsplit(self.path).path
        self.served.requests.append((self.command, path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == "/api/validate-yaml":
            self._validate_card(json.loads(body)["content"])
            return
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            self._error(401, "Unauthorized", True)
            return
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts == ["api", "repos", "create"]:
            self._create(json.loads(body))
        elif parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("preupload", "commit"):
            repo, kind, rev = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
            if repo not in self.served.repos:
                self._error(404, "RepoNotFound", True)
            elif kind == "preupload":
                files = json.loads(body)["files"]
                answer = {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                self._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"}, True)
            else:
                self._commit(repo, rev, body)
        else:
            self._error(404, "RepoNotFound", True)

    def _validate_card(self, content: str) -> None:
        """A README's metadata block must be YAML mapping, as the hub checks before a commit that holds one."""
        match = re.match(r"---\n(.*?)\n---\n", content, re.DOTALL)
        try:
            valid = match is None or isinstance(yaml.safe_load(match.group(1)), dict)
        except yaml.YAMLError:
            valid = False
        if valid:
            self._send(200, json.dumps({"warnings": []}).encode(), {"Content-Type": "application/json"}, True)
        else:
            body = json.dumps({"errors": [{"message": "metadata is not a YAML mapping"}]}).encode()
            self._send(400, body, {"Content-Type": "application/json", "X-Error-Code": "BadRequest"}, True)

    def _create(self, payload: dict) -> None:
        repo = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo in self.served.repos:  # the hub names the existing repository; create_repo(exist_ok=True) reads it
            body = json.dumps({"error": "You already created this model repo", "url": f"{self.served.url}/{repo}"})
            self._send(409, body.encode(), {"Content-Type": "application/json"}, True)
            return
        self.served.repos[repo] = _Repo()
        body = json.dumps({"url": f"{self.served.url}/{repo}", "name": repo}).encode()
        self._send(200, body, {"Content-Type": "application/json"}, True)

    def _commit(self, repo: str, rev: str, body: bytes) -> None:
        entry = self.served.repos[repo]
        head = entry.refs.get(rev)
        files = dict(entry.commits[head]) if head is not None else {}
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif item["key"] != "header":
                self._error(400, "BadRequest", True)  # LFS files and copies are not served here
                return
        commit = self.served.publish(repo, files, branch=rev)
        answer = {"commitUrl": f"{self.served.url}/{repo}/commit/{commit}", "commitOid": commit, "pullRequestUrl": None}
        self._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"}, True)

    def _answer(self, send_body: bool) -> None:
        path = urlsplit(self.path).path
        self.served.requests.append((self.command, path))
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo, kind, rev = "/".join(parts[2:4]), parts[4], parts[5]
            self._api(repo, kind, rev, send_body)
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._file("/".join(parts[:2]), parts[3], "/".join(parts[4:]), send_body)
        else:
            self._error(404, "RepoNotFound", send_body)

    def _lookup(self, repo: str, rev: str, send_body: bool) -> tuple[str, dict[str, bytes]] | None:
        entry = self.served.repos.get(repo)
        if entry is None:
            self._error(404, "RepoNotFound", send_body)
            return None
        if entry.gated:
            self._error(403, "GatedRepo", send_body)
            return None
        commit = entry.refs.get(rev, rev)
        if commit not in entry.commits:
            self._error(404, "RevisionNotFound", send_body)
            return None
        return commit, entry.commits[commit]

    def _api(self, repo: str, kind: str, rev: str, send_body: bool) -> None:
        found = self._lookup(repo, rev, send_body)
        if found is None:
            return
        commit, files = found
        if kind == "revision":
            body = {"id": repo, "modelId": repo, "sha": commit, "siblings": [{"rfilename": n} for n in sorted(files)]}
        else:
            body = [
                {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": name}
                for name, data in sorted(files.items())
            ]
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, send_body)

    def _file(self, repo: str, rev: str, name: str, send_body: bool) -> None:
        found = self._lookup(repo, rev, send_body)
        if found is None:
            return
        commit, files = found
        if name not in files or name in self.served.unserved:
            self._error(404, "EntryNotFound", send_body, {"X-Repo-Commit": commit})
            return
        data = files[name]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
        cut = self.served.cut.get(name) if send_body else None
        if cut is not None:
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(200, data, headers, send_body)

    def _error(self, status: int, code: str, send_body: bool, extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": code}).encode()
        self._send(status, body, {"X-Error-Code": code, "Content-Type": "application/json", **(extra or {})}, send_body)

    def _send(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)
