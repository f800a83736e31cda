"""A Dataverse-like file server on 127.0.0.1 for testing the download path for real.

Serves ``/api/access/datafile/{id}`` from local files with HTTP Range support, and can be
told to cut a response off after some bytes or to ignore Range headers.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class DataverseServer:
    def __init__(self, files: dict[int, Path]):
        self.files = files
        self.cut_after: list[int] = []  # per request, in order: stop after this many body bytes
        self.ignore_range = False
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                m = re.fullmatch(r"/api/access/datafile/(\d+)(\?.*)?", self.path)
                if not m or int(m.group(1)) not in server.files:
                    self.send_error(404)
                    return
                data = server.files[int(m.group(1))].read_bytes()
                rng = self.headers.get("Range")
                server.requests.append({"path": self.path, "range": rng})
                start = 0
                if rng and not server.ignore_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if server.cut_after:
                    # Promise the whole body, send part of it, and drop the connection.
                    self.wfile.write(body[: server.cut_after.pop(0)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
