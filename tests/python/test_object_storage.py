"""acs against a real S3-compatible server: moto's server mode on 127.0.0.1, started here.

- a build to s3:// that is SIGKILLed in the middle of a multipart upload leaves nothing under
  data/ (and no manifest); the rerun resumes and the bucket then holds exactly the smoke build
  that scripts/test.sh made locally (ACS_SMOKE_DIR), byte for byte;
- validate, stats and preview read it from the bucket; Hugging Face datasets and pyarrow read
  it through s3fs;
- two workers write to one bucket and merge there;
- validate names a corrupted object;
- wrong credentials, a missing bucket and an endpoint that does not answer: one line naming the
  URL and the reason, exit 2, no secret printed, nothing written.
"""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
import pyarrow.parquet as pq
import pytest
import s3fs
from PIL import Image

from conftest import required_env

ACS = required_env("ACS_BIN")
SMOKE_DIR = required_env("ACS_SMOKE_DIR")
TINY_DIR = required_env("ACS_TINY_DIR")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# As scripts/test.sh builds ACS_SMOKE_DIR: from the repository root, this relative path.
SMOKE_MANIFEST = "manifests/smoke.toml"
# A recognisable secret: it must never appear in acs's output.
SECRET = "acs-test-secret-Zq8rVw3"
BUCKET = "acs-test"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(extra_env=None):
    port = free_port()
    env = dict(os.environ, S3_UPLOAD_PART_MIN_SIZE="1024", **(extra_env or {}))
    server = os.path.join(os.path.dirname(sys.executable), "moto_server")
    process = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return process, endpoint
        except OSError:
            time.sleep(0.05)
    process.kill()
    pytest.fail("moto_server did not start")


@pytest.fixture(scope="module")
def moto():
    process, endpoint = start_moto()
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    process.terminate()
    process.wait(timeout=10)


def acs_env(endpoint, home, **extra):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "SLURM_", "JOB_COMPLETION", "ACS_WORKER"))
    }
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        # The tiny model is where scripts/test.sh put it; journals go beside it.
        ACS_HOME=os.path.dirname(os.path.dirname(TINY_DIR)),
        ACS_STORE_RETRIES="1",
    )
    env.update(extra)
    return env


def run_acs(args, env, timeout=600):
    return subprocess.run(
        [ACS, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def keys(client, prefix):
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"][len(prefix):] for o in listing.get("Contents", []))


def get(client, key):
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def local_tree(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def assert_one_line_exit_2(result, *parts):
    err = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(err.splitlines()) == 1, err
    for part in parts:
        assert part in err, (part, err)
    assert SECRET not in result.stderr + result.stdout
    return err


@pytest.fixture(scope="module")
def built(moto, tmp_path_factory):
    """The smoke build into s3://BUCKET/smoke, killed (SIGKILL) in the middle of a multipart
    upload and resumed; returns the dataset URL."""
    endpoint, client = moto
    journal = str(tmp_path_factory.mktemp("journal"))
    url = f"s3://{BUCKET}/smoke"
    args = ["build", "--manifest", SMOKE_MANIFEST, "--out", url, "--journal", journal, "-q"]
    env = acs_env(endpoint, journal, ACS_STORE_PART_BYTES="4096", ACS_FAULT_STALL="upload-part:1")
    process = subprocess.Popen([ACS, *args], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    assert "stalled at upload-part" in line, line + process.stderr.read()
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    # The shard being uploaded is nowhere visible; the dataset has no manifest.
    assert keys(client, "smoke/data/") == []
    assert "acs-manifest.json" not in keys(client, "smoke/")
    assert os.path.exists(os.path.join(journal, ".acs-journal", "journal.jsonl"))
    result = run_acs(args, acs_env(endpoint, journal, ACS_STORE_PART_BYTES="4096"))
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stderr + result.stdout
    # Finished: the journal folder and the staging area are gone.
    assert not os.path.exists(os.path.join(journal, ".acs-journal"))
    assert not any(k.startswith(".acs-staging") for k in keys(client, "smoke/"))
    return url


def test_resumed_s3_build_equals_the_local_build(moto, built):
    _, client = moto
    expected = local_tree(SMOKE_DIR)
    assert keys(client, "smoke/") == sorted(expected)
    for name, data in expected.items():
        assert get(client, "smoke/" + name) == data, name


def test_validate_stats_and_preview_read_the_bucket(moto, built, tmp_path):
    endpoint, client = moto
    env = acs_env(endpoint, str(tmp_path))
    result = run_acs(["validate", built, "--json", "-q"], env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] and report["dataset"] == built
    assert json.loads(get(client, "smoke/validation.json"))["passed"]
    stats = run_acs(["stats", built, "--json", "-q"], env)
    assert stats.returncode == 0, stats.stderr
    manifest = json.loads(get(client, "smoke/acs-manifest.json"))
    assert json.loads(stats.stdout)["rows"] == sum(s["rows"] for s in manifest["shards"])
    sheet = tmp_path / "sheet.png"
    preview = run_acs(["preview", built, "--out", str(sheet), "--count", "3", "-q"], env)
    assert preview.returncode == 0, preview.stderr
    assert Image.open(sheet).size[0] > 0
    client.delete_object(Bucket=BUCKET, Key="smoke/validation.json")


def test_datasets_and_pyarrow_read_through_s3fs(moto, built, monkeypatch):
    endpoint, _ = moto
    options = {"key": "test", "secret": SECRET, "client_kwargs": {"endpoint_url": endpoint}}
    fs = s3fs.S3FileSystem(**options)
    files = sorted(fs.glob(f"{BUCKET}/smoke/data/*.parquet"))
    table = pq.read_table(files, filesystem=fs)
    manifest = json.loads(fs.cat(f"{BUCKET}/smoke/acs-manifest.json"))
    assert table.num_rows == sum(s["rows"] for s in manifest["shards"])

    import datasets.config
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    # scripts/test.sh keeps the hub offline; this reads the local bucket only.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False, raising=False)
    ds = load_dataset(
        "parquet",
        data_files={"train": f"s3://{BUCKET}/smoke/data/train-*.parquet"},
        storage_options=options,
    )
    train = ds["train"]
    assert isinstance(train.features["unsafe_image"], ImageFeature)
    row = train[0]
    assert row["unsafe_image"].size == (row["width"], row["height"])


def test_workers_write_to_one_bucket_and_merge_there(moto, tmp_path):
    endpoint, client = moto
    env = acs_env(endpoint, str(tmp_path))
    for i in range(2):
        result = run_acs(
            ["build", "--manifest", SMOKE_MANIFEST, "--out", f"s3://{BUCKET}/run/worker-{i}",
             "--worker", f"{i}/2", "-q"],
            env,
        )
        assert result.returncode == 0, result.stderr
    merged = f"s3://{BUCKET}/run/dataset"
    result = run_acs(
        ["merge", f"s3://{BUCKET}/run/worker-0", f"s3://{BUCKET}/run/worker-1", "--out", merged, "-q"],
        env,
    )
    assert result.returncode == 0, result.stderr
    # The merged shards hold exactly the rows of the single build.
    fs = s3fs.S3FileSystem(key="test", secret=SECRET, client_kwargs={"endpoint_url": endpoint})
    merged_ids = pq.read_table(sorted(fs.glob(f"{BUCKET}/run/dataset/data/*.parquet")),
                               filesystem=fs, columns=["pair_id"]).column("pair_id").to_pylist()
    local_ids = pq.read_table(os.path.join(SMOKE_DIR, "data"), columns=["pair_id"]).column("pair_id").to_pylist()
    assert sorted(merged_ids) == sorted(local_ids)
    result = run_acs(["validate", merged, "-q"], env)
    assert result.returncode == 0, result.stderr
    # The output must be new: a second merge into it is refused and changes nothing.
    before = keys(client, "run/dataset/")
    again = run_acs(["merge", f"s3://{BUCKET}/run/worker-0", "--out", merged, "-q"], env)
    assert_one_line_exit_2(again, merged, "not empty")
    assert keys(client, "run/dataset/") == before


def test_validate_names_a_corrupted_object(moto, tmp_path):
    endpoint, client = moto
    files = local_tree(SMOKE_DIR)
    shard = sorted(name for name in files if name.startswith("data/"))[0]
    for name, data in files.items():
        if name == shard:
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
            data = bytes(data)
        client.put_object(Bucket=BUCKET, Key="corrupt/" + name, Body=data)
    url = f"s3://{BUCKET}/corrupt"
    result = run_acs(["validate", url, "-q"], acs_env(endpoint, str(tmp_path)))
    assert_one_line_exit_2(result, f"{url}/{shard}", "sha256 mismatch")


def test_bad_credentials_bucket_and_endpoint(moto, tmp_path):
    endpoint, client = moto
    journal = str(tmp_path / "journal")
    build = ["build", "--manifest", SMOKE_MANIFEST, "--journal", journal, "-q", "--out"]

    # A server that checks credentials (moto with authentication on) and keys it does not know.
    auth_process, auth_endpoint = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        url = f"s3://{BUCKET}/x"
        result = run_acs([*build, url], acs_env(auth_endpoint, journal))
        err = assert_one_line_exit_2(result, url, "access denied")
        assert "credentials: the keys in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" in err, err
        result = run_acs(["validate", url, "-q"], acs_env(auth_endpoint, journal))
        assert_one_line_exit_2(result, url, "access denied")
    finally:
        auth_process.terminate()
        auth_process.wait(timeout=10)

    url = "s3://no-such-bucket/x"
    result = run_acs([*build, url], acs_env(endpoint, journal))
    assert_one_line_exit_2(result, url, "bucket does not exist")

    closed = f"http://127.0.0.1:{free_port()}"
    url = f"s3://{BUCKET}/unreachable"
    result = run_acs([*build, url], acs_env(closed, journal), timeout=120)
    assert_one_line_exit_2(result, url, "cannot reach the endpoint")
    result = run_acs(["stats", url, "-q"], acs_env(closed, journal), timeout=120)
    assert_one_line_exit_2(result, url, "cannot reach the endpoint")

    # Nothing was written anywhere.
    assert keys(client, "x/") == [] and keys(client, "unreachable/") == []
    assert not os.path.exists(journal) or os.listdir(journal) == []


def test_missing_credentials_and_foreign_endpoints_are_named(moto, tmp_path):
    """No credentials in the environment: the message says which source was tried (here the
    instance metadata service, pointed at a closed port so that it fails at once) instead of a
    bare "access denied"; an endpoint that answers 404 (no S3 behind it), an Azure URL without
    an account and an https:// dataset each get one plain line."""
    endpoint, client = moto
    journal = str(tmp_path / "journal")
    build = ["build", "--manifest", SMOKE_MANIFEST, "--journal", journal, "-q", "--out"]
    no_keys = acs_env(endpoint, journal, AWS_METADATA_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    del no_keys["AWS_ACCESS_KEY_ID"], no_keys["AWS_SECRET_ACCESS_KEY"]
    url = f"s3://{BUCKET}/no-keys"
    for args in ([*build, url], ["validate", url, "-q"]):
        result = run_acs(args, no_keys, timeout=120)
        err = assert_one_line_exit_2(result, url, "cannot get credentials")
        assert "AWS_ACCESS_KEY_ID is unset" in err and "instance metadata" in err, err

    # A plain web server (python -m http.server): every S3 request gets 404.
    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        url = f"s3://{BUCKET}/web"
        result = run_acs([*build, url], acs_env(f"http://127.0.0.1:{port}", journal), timeout=120)
        err = assert_one_line_exit_2(result, url, "answered 404 Not Found", f"127.0.0.1:{port}")
        assert "Generic" not in err, err
    finally:
        web.terminate()
        web.wait(timeout=10)

    env = {k: v for k, v in acs_env(endpoint, journal).items() if not k.startswith("AZURE_")}
    result = run_acs(["validate", "az://container/ds", "-q"], env)
    err = assert_one_line_exit_2(result, "az://container", "no storage account", "AZURE_STORAGE_ACCOUNT_NAME")
    assert "Generic" not in err, err
    result = run_acs(["stats", "https://example.invalid/ds", "-q"], env)
    assert_one_line_exit_2(result, "https://example.invalid/ds", "not a supported store", "s3://")
    assert keys(client, "no-keys/") == [] and keys(client, "web/") == []
