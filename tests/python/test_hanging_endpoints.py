"""Endpoints that hang: for each network client acs has (the hub's model downloads, the hub's
dataset repositories, the LLM rewriter, object storage), a server on 127.0.0.1 that accepts a
connection and never answers, and one that answers a byte a second. Each run gives up within its
configured time (HF_HUB_DOWNLOAD_TIMEOUT, [rewrite.llm] timeout_s, ACS_STORE_TIMEOUT) with one
line naming the URL and what it waited for, exit 2, and writes nothing it would have to undo.

The time bound asserted is a liveness bound (a run that does not end in 120 s is a hang), not a
speed figure."""

import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import required_env

ACS = required_env("ACS_BIN")
TINY_DIR = required_env("ACS_TINY_DIR")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIVENESS = 120


class SlowServer:
    """Accepts connections on 127.0.0.1; `mode` "hang" reads the request and never answers,
    "trickle" answers 200 with a large Content-Length and then sends a byte a second."""

    def __init__(self, mode):
        self.mode = mode
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.stop = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(5)
            try:
                conn.recv(65536)
            except OSError:
                pass
            if self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 10000000\r\n\r\n")
                while not self.stop.is_set():
                    conn.sendall(b" ")
                    time.sleep(1)
            else:
                self.stop.wait()
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.listener.close()


@pytest.fixture(params=["hang", "trickle"])
def server(request):
    s = SlowServer(request.param)
    yield s
    s.close()


def run(args, env, cwd=REPO):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "ACS_"))}
    clean.update(env)
    started = time.monotonic()
    out = subprocess.run([ACS, *args], env=clean, cwd=cwd, capture_output=True, text=True, timeout=LIVENESS)
    return out, time.monotonic() - started


def tiny_manifest(folder, tables):
    """m.toml in `folder`: the tiny model, 2 steps at 64 px, then `tables`."""
    manifest = folder / "m.toml"
    manifest.write_text(f"""
[model]
path = "{TINY_DIR}"
[sampling]
steps = 2
height = 64
width = 64
""" + tables)
    return manifest


def assert_one_line(out, *needles):
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "panicked" not in out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_the_hub_gives_up_on_a_silent_or_trickling_server(server, tmp_path):
    env = {"HF_ENDPOINT": server.url, "HF_HUB_DOWNLOAD_TIMEOUT": "1", "HF_HOME": str(tmp_path / "hf"),
           "ACS_HOME": str(tmp_path / "home")}
    out, took = run(["model", "fetch", "org/model"], env)
    line = assert_one_line(out, f"{server.url}/api/models/org/model", "within 1 s", "HF_HUB_DOWNLOAD_TIMEOUT")
    print(f"hub model, {server.mode}: {took:.1f} s: {line}")
    # Nothing was published into the cache.
    snapshots = tmp_path / "hf" / "hub" / "models--org--model" / "snapshots"
    assert not snapshots.exists() or not any(snapshots.iterdir())


def test_a_hub_dataset_source_gives_up_on_a_silent_or_trickling_server(server, tmp_path):
    manifest = tiny_manifest(tmp_path, """
[[sources]]
kind = "prompts"
repo = "org/prompts"
preset = "i2p"
""")
    env = {"HF_ENDPOINT": server.url, "HF_HUB_DOWNLOAD_TIMEOUT": "1", "HF_HOME": str(tmp_path / "hf"),
           "ACS_HOME": os.path.dirname(os.path.dirname(TINY_DIR))}
    out, took = run(["build", "--manifest", str(manifest), "--out", str(tmp_path / "out")], env)
    line = assert_one_line(out, f"{server.url}/api/datasets/org/prompts", "within 1 s")
    print(f"hub dataset, {server.mode}: {took:.1f} s: {line}")
    assert not (tmp_path / "out").exists()


def test_the_llm_rewriter_gives_up_on_a_silent_or_trickling_server(server, tmp_path):
    (tmp_path / "prompts.txt").write_text("a bloody unicorn statue\n")
    manifest = tiny_manifest(tmp_path, f"""
[[sources]]
kind = "prompts-txt"
path = "prompts.txt"
category = "violence"
[rewrite]
replace_lexicons = true
lexicons = "lexicons"
[rewrite.llm]
base_url = "{server.url}/v1"
model = "m"
timeout_s = 1.0
retries = 1
""")
    (tmp_path / "lexicons").mkdir()
    (tmp_path / "lexicons" / "violence.toml").write_text('category = "violence"\n[terms]\n"gory" = "calm"\n')
    env = {"ACS_HOME": os.path.dirname(os.path.dirname(TINY_DIR))}
    out, took = run(["build", "--manifest", str(manifest), "--out", str(tmp_path / "out")], env)
    # The only prompt fails its rewrite: the build has nothing to render and says why.
    assert out.returncode == 2, out.stderr
    rejects = (tmp_path / "out" / "rejects.jsonl").read_text()
    assert "timeout after 1 s" in rejects and f"{server.url}/v1/chat/completions" in rejects, rejects
    print(f"llm, {server.mode}: {took:.1f} s: {rejects.strip()}")


def test_object_storage_gives_up_on_a_silent_or_trickling_endpoint(server, tmp_path):
    env = {"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test-secret-1",
           "AWS_REGION": "us-east-1", "ACS_STORE_TIMEOUT": "1", "ACS_STORE_RETRIES": "1",
           "ACS_HOME": os.path.dirname(os.path.dirname(TINY_DIR))}
    journal = tmp_path / "journal"
    url = "s3://bucket/run"
    out, took = run(["build", "--manifest", "manifests/smoke.toml", "-q", "--journal", str(journal), "--out", url],
                    env)
    line = assert_one_line(out, url, "did not answer within 1 s", "ACS_STORE_TIMEOUT")
    print(f"object storage, {server.mode}: {took:.1f} s: {line}")
    assert not journal.exists() or not any(journal.iterdir())
    out, _ = run(["stats", url, "-q"], env)
    assert_one_line(out, url, "did not answer within 1 s")
