import os
import sys
from pathlib import Path

# The suite's networks and arrays are tiny: BLAS threads cost more to wake than they save.
# (The environment reaches worker processes; threadpool_limits this one, if BLAS is loaded.)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import re  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

import pytest  # noqa: E402

# Reaching the CLI's last-resort guard ("internal error") is a bug: in tests it re-raises.
os.environ["ESC50ANN_DEBUG"] = "1"
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # tests/synth.py, shared by every test module

import synth  # noqa: E402

threadpool_limits(1)


@pytest.fixture(scope="session")
def synth_archive(tmp_path_factory) -> Path:
    """A synthetic ESC-50-shaped zip (4 classes x 3 folds x 2 clips), built once per session."""
    return synth.make_archive(tmp_path_factory.mktemp("archive") / "ESC-50-master.zip")


@pytest.fixture(scope="module")
def cli_root(synth_archive, tmp_path_factory) -> Path:
    """A folder holding ``tiny.toml`` (``synth.TINY_PIPELINE``) and a data root ``data/`` with the
    synthetic dataset downloaded, as a user has after ``esc50ann download``. One per test module."""
    from esc50ann import cli

    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.toml").write_text(synth.TINY_PIPELINE)
    assert cli.main(["--quiet", "download", "--source", str(synth_archive), "--data-dir", str(root / "data")]) == 0
    return root


def run_cli(capsys, *args):
    """Run the command in-process: (exit status, stdout, stderr)."""
    from esc50ann import cli

    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def synth_folder(tmp_path_factory) -> Path:
    """A synthetic extracted ESC-50-master folder, built once per session. Treat as read-only."""
    return synth.make_dataset_folder(tmp_path_factory.mktemp("folder"))


# --------------------------------------------------------------------------- a local HTTP server

PAYLOAD = os.urandom(300_000)  # several reads' worth, so a cut lands mid-transfer


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; behaviour switches live on the server (see ``http_server``)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if self.path in getattr(srv, "redirects", {}):
            self.send_response(302)
            self.send_header("Location", srv.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if srv.status:
            self.send_error(srv.status)
            return
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, wanted = 0, self.headers.get("Range")
        if wanted and not srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:
            # Promise the whole body, send part of it, hang up: a dropped connection.
            n, srv.cut_after = srv.cut_after, None
            self.wfile.write(body[:n])
            self.wfile.flush()
            self.close_connection = True
            return
        if getattr(srv, "trickle", None):  # alive but useless: a byte now and then
            for byte in body[:50]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(srv.trickle)
            return
        self.wfile.write(body)


@pytest.fixture(scope="session")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def http_server(server):
    """The shared server, reset: serves /data.bin = PAYLOAD; honours Range; no faults."""
    server.files = {"/data.bin": PAYLOAD}
    server.requests, server.status, server.ignore_range, server.cut_after = [], None, False, None
    server.redirects, server.trickle = {}, None
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server


