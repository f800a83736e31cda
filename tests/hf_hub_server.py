"""A stand-in for the Hugging Face hub on 127.0.0.1: answers HEAD and GET of
``/{repo}/resolve/{revision}/{file}`` for the files it is given, as huggingface_hub expects
(ETag, X-Repo-Commit, Content-Length), and 404 for anything else. Point HF_ENDPOINT at it."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0" * 40


def serve(files: dict[str, bytes]) -> tuple[ThreadingHTTPServer, list[tuple[str, str]]]:
    """Start the server on a free port; returns it and the log of (method, path) it was asked."""
    requests: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            requests.append((self.command, self.path))
            path = self.path.split("?")[0]
            data = files.get(path.rsplit("/", 1)[-1]) if "/resolve/" in path else None
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self):  # noqa: N802 - http.server's naming
            self._answer(body=False)

        def do_GET(self):  # noqa: N802
            self._answer(body=True)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, requests
