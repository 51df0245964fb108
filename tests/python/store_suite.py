"""The object-storage suite every backend runs (S3 on moto: test_object_storage.py; Azure Blob on
Azurite: test_azure_storage.py), written once against a `Store`: where its bucket is, the
environment acs needs for it, and how the test reads and writes its objects.

- a build killed (SIGKILL) in the middle of a multipart / block upload leaves nothing under
  data/ and no manifest; the rerun resumes and the bucket then holds exactly the smoke build of
  scripts/test.sh (ACS_SMOKE_DIR), byte for byte;
- validate, stats and preview read it from the bucket; Hugging Face datasets and pyarrow read it
  through the backend's fsspec filesystem;
- two workers write to one bucket and merge there (and into a local folder), to the smoke build
  byte for byte;
- validate names a corrupted object."""

import copy
import json
import os
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable

import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import required_env

ACS = required_env("ACS_BIN")
SMOKE_DIR = required_env("ACS_SMOKE_DIR")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# As scripts/test.sh builds ACS_SMOKE_DIR: from the repository root, this relative path.
SMOKE_MANIFEST = "manifests/smoke.toml"


@dataclass
class Store:
    """One backend's bucket as the suite sees it."""

    #: `s3://bucket` or `az://container`.
    root: str
    #: acs's environment for it (extra variables added).
    env: Callable[..., dict]
    #: Object names under a prefix, the prefix removed, sorted.
    names: Callable[[str], list]
    #: An object's bytes.
    get: Callable[[str], bytes]
    #: Writes an object.
    put: Callable[[str, bytes], None]
    #: Deletes an object.
    delete: Callable[[str], None]
    #: The fsspec filesystem and its options (for pyarrow and datasets).
    filesystem: Callable[[], object]
    storage_options: dict
    #: A secret that must never be printed.
    secret: str = ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_acs(args, env, timeout=600):
    return subprocess.run([ACS, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def local_tree(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def assert_one_line_exit_2(result, *parts, secret=""):
    err = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(err.splitlines()) == 1, err
    for part in parts:
        assert part in err, (part, err)
    if secret:
        assert secret not in result.stderr + result.stdout
    return err


def build_killed_and_resumed(store, journal):
    """The smoke build into ROOT/smoke, killed in the middle of an upload and resumed; its URL."""
    url = f"{store.root}/smoke"
    args = ["build", "--manifest", SMOKE_MANIFEST, "--out", url, "--journal", journal, "-q"]
    env = store.env(ACS_STORE_PART_BYTES="4096", ACS_FAULT_STALL="upload-part:1")
    process = subprocess.Popen([ACS, *args], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    assert "stalled at upload-part" in line, line + process.stderr.read()
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    # The shard being uploaded is nowhere visible; the dataset has no manifest.
    assert store.names("smoke/data/") == []
    assert "acs-manifest.json" not in store.names("smoke/")
    assert os.path.exists(os.path.join(journal, ".acs-journal", "journal.jsonl"))
    result = run_acs(args, store.env(ACS_STORE_PART_BYTES="4096"))
    assert result.returncode == 0, result.stderr
    if store.secret:
        assert store.secret not in result.stderr + result.stdout
    # Finished: the journal folder and the staging area are gone.
    assert not os.path.exists(os.path.join(journal, ".acs-journal"))
    assert not any(n.startswith(".acs-staging") for n in store.names("smoke/"))
    return url


def check_equals_the_local_build(store, prefix="smoke/"):
    expected = local_tree(SMOKE_DIR)
    assert store.names(prefix) == sorted(expected)
    for name, data in expected.items():
        assert store.get(prefix + name) == data, name


# The shared tests. A backend's module defines a module-scoped `store` fixture and does
# `from store_suite import *` (which imports these, __all__), so pytest runs them once per backend.
__all__ = [
    "built",
    "test_a_build_killed_while_publishing_is_finished_by_the_rerun",
    "test_a_resumed_build_equals_the_local_build",
    "test_datasets_and_pyarrow_read_through_fsspec",
    "test_validate_names_a_corrupted_object",
    "test_validate_stats_and_preview_read_the_store",
    "test_workers_write_to_one_store_and_merge_there",
]


@pytest.fixture(scope="module")
def built(store, tmp_path_factory):
    return build_killed_and_resumed(store, str(tmp_path_factory.mktemp("journal")))


def test_a_resumed_build_equals_the_local_build(store, built):
    check_equals_the_local_build(store)


def test_a_build_killed_while_publishing_is_finished_by_the_rerun(store, tmp_path):
    """A build killed after its first shard was copied to its final name (no manifest yet): the
    rerun finishes the publish instead of refusing the prefix, and it equals the local build."""
    journal = str(tmp_path / "journal")
    url = f"{store.root}/publish"
    args = ["build", "--manifest", SMOKE_MANIFEST, "--out", url, "--journal", journal, "-q"]
    process = subprocess.Popen([ACS, *args], env=store.env(ACS_FAULT_STALL="shard-renamed:1"), cwd=REPO,
                               stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    assert "stalled at shard-renamed" in line, line + process.stderr.read()
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    published = store.names("publish/")
    assert any(n.startswith("data/") for n in published) and "acs-manifest.json" not in published, published
    result = run_acs(args, store.env())
    assert result.returncode == 0, result.stderr
    check_equals_the_local_build(store, "publish/")


def test_validate_stats_and_preview_read_the_store(store, built, tmp_path):
    url = built
    env = store.env()
    result = run_acs(["validate", url, "--json", "-q"], env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] and report["dataset"] == url
    assert json.loads(store.get("smoke/validation.json"))["passed"]
    stats = run_acs(["stats", url, "--json", "-q"], env)
    assert stats.returncode == 0, stats.stderr
    manifest = json.loads(store.get("smoke/acs-manifest.json"))
    assert json.loads(stats.stdout)["rows"] == sum(s["rows"] for s in manifest["shards"])
    sheet = tmp_path / "sheet.png"
    preview = run_acs(["preview", url, "--out", str(sheet), "--count", "3", "-q"], env)
    assert preview.returncode == 0, preview.stderr
    assert Image.open(sheet).size[0] > 0
    store.delete("smoke/validation.json")


def test_datasets_and_pyarrow_read_through_fsspec(store, built, monkeypatch):
    fs = store.filesystem()
    bucket = store.root.split("://", 1)[1]
    files = sorted(fs.glob(f"{bucket}/smoke/data/*.parquet"))
    table = pq.read_table(files, filesystem=fs)
    manifest = json.loads(fs.cat(f"{bucket}/smoke/acs-manifest.json"))
    assert table.num_rows == sum(s["rows"] for s in manifest["shards"])

    import datasets.config
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    # scripts/test.sh keeps the hub offline; this reads the local bucket only.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False, raising=False)
    ds = load_dataset("parquet", data_files={"train": f"{store.root}/smoke/data/train-*.parquet"},
                      # a copy: datasets adds its own keys to the dict it is given
                      storage_options=copy.deepcopy(store.storage_options))
    train = ds["train"]
    assert isinstance(train.features["unsafe_image"], ImageFeature)
    row = train[0]
    assert row["unsafe_image"].size == (row["width"], row["height"])


def test_workers_write_to_one_store_and_merge_there(store):
    env = store.env()
    for i in range(2):
        result = run_acs(["build", "--manifest", SMOKE_MANIFEST, "--out", f"{store.root}/run/worker-{i}",
                          "--worker", f"{i}/2", "-q"], env)
        assert result.returncode == 0, result.stderr
    merged = f"{store.root}/run/dataset"
    result = run_acs(["merge", f"{store.root}/run/worker-0", f"{store.root}/run/worker-1", "--out", merged, "-q"],
                     env)
    assert result.returncode == 0, result.stderr
    # The merge is the single build, byte for byte (shards, manifest, card, rejects).
    check_equals_the_local_build(store, prefix="run/dataset/")
    # So is a merge of the same bucket outputs into a local folder.
    with tempfile.TemporaryDirectory() as local:
        out = os.path.join(local, "dataset")
        result = run_acs(["merge", f"{store.root}/run/worker-0", f"{store.root}/run/worker-1", "--out", out, "-q"],
                         env)
        assert result.returncode == 0, result.stderr
        assert local_tree(out) == local_tree(SMOKE_DIR)
    result = run_acs(["validate", merged, "-q"], env)
    assert result.returncode == 0, result.stderr
    # The output must be new: a second merge into it is refused and changes nothing.
    before = store.names("run/dataset/")
    again = run_acs(["merge", f"{store.root}/run/worker-0", "--out", merged, "-q"], env)
    assert_one_line_exit_2(again, merged, "not empty", secret=store.secret)
    assert store.names("run/dataset/") == before


def test_validate_names_a_corrupted_object(store):
    files = local_tree(SMOKE_DIR)
    shard = sorted(name for name in files if name.startswith("data/"))[0]
    for name, data in files.items():
        if name == shard:
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
            data = bytes(data)
        store.put("corrupt/" + name, data)
    url = f"{store.root}/corrupt"
    result = run_acs(["validate", url, "-q"], store.env())
    assert_one_line_exit_2(result, f"{url}/{shard}", "sha256 mismatch", secret=store.secret)
