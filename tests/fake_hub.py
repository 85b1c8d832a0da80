"""A Hugging Face Hub on loopback, for the online path: the model-info API and file downloads as
huggingface_hub asks for them (HF_ENDPOINT points at it), every request recorded."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class FakeHub:
    """repos: {repo_id: {commit: {filename: local file}}}; refs: {repo_id: {"main": commit}}."""

    def __init__(self):
        self.repos: dict[str, dict[str, dict[str, Path]]] = {}
        self.refs: dict[str, dict[str, str]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hub._answer(self, body=True)

            def do_HEAD(self):
                hub._answer(self, body=False)

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, repo: str, commit: str, files: dict[str, Path], ref: str | None = "main") -> None:
        self.repos.setdefault(repo, {})[commit] = {name: Path(p) for name, p in files.items()}
        if ref is not None:
            self.refs.setdefault(repo, {})[ref] = commit

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _commit(self, repo: str, revision: str) -> str | None:
        if revision in self.repos.get(repo, {}):
            return revision
        return self.refs.get(repo, {}).get(revision)

    def _answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(request.path).path)
        self.requests.append((request.command, path))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:  # /api/models/{org}/{name}[/revision/{rev}]
            repo = "/".join(parts[2:4])
            revision = parts[5] if len(parts) > 5 and parts[4] == "revision" else "main"
            return self._model_info(request, repo, revision)
        if len(parts) >= 5 and parts[2] == "resolve":  # /{org}/{name}/resolve/{rev}/{file}
            repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            return self._file(request, repo, revision, filename, body)
        self._error(request, 404, "RepoNotFound")

    def _model_info(self, request, repo: str, revision: str) -> None:
        if repo not in self.repos:
            return self._error(request, 404, "RepoNotFound")
        commit = self._commit(repo, revision)
        if commit is None:
            return self._error(request, 404, "RevisionNotFound")
        siblings = [{"rfilename": name} for name in sorted(self.repos[repo][commit])]
        self._send(request, 200, json.dumps({"id": repo, "sha": commit, "siblings": siblings}).encode(), {}, True)

    def _file(self, request, repo: str, revision: str, filename: str, body: bool) -> None:
        if repo not in self.repos:
            return self._error(request, 404, "RepoNotFound")
        commit = self._commit(repo, revision)
        if commit is None:
            return self._error(request, 404, "RevisionNotFound")
        source = self.repos[repo][commit].get(filename)
        if source is None:
            return self._error(request, 404, "EntryNotFound", commit)
        data = source.read_bytes()
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        self._send(request, 200, data, headers, body)

    def _error(self, request, status: int, code: str, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, **({"X-Repo-Commit": commit} if commit else {})}
        self._send(request, status, json.dumps({"error": code}).encode(), headers, True)

    @staticmethod
    def _send(request, status: int, data: bytes, headers: dict, body: bool) -> None:
        request.send_response(status)
        for key, value in {"Content-Length": str(len(data)), **headers}.items():
            request.send_header(key, value)
        request.end_headers()
        if body and request.command != "HEAD":
            request.wfile.write(data)
