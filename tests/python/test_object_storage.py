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

import os
import subprocess
import sys
import time
import urllib.request

import boto3
import pytest
import s3fs

from conftest import required_env
import store_suite as suite
from store_suite import free_port, run_acs
from store_suite import *  # noqa: F401,F403  (the shared tests, run against this backend's store)

TINY_DIR = required_env("ACS_TINY_DIR")
SMOKE_MANIFEST = suite.SMOKE_MANIFEST
# A recognisable secret: it must never appear in acs's output.
SECRET = "acs-test-secret-Zq8rVw3"
BUCKET = "acs-test"


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


def keys(client, prefix):
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"][len(prefix):] for o in listing.get("Contents", []))


def assert_one_line_exit_2(result, *parts):
    return suite.assert_one_line_exit_2(result, *parts, secret=SECRET)


@pytest.fixture(scope="module")
def store(moto, tmp_path_factory):
    endpoint, client = moto
    home = str(tmp_path_factory.mktemp("home"))
    options = {"key": "test", "secret": SECRET, "client_kwargs": {"endpoint_url": endpoint}}
    return suite.Store(
        root=f"s3://{BUCKET}",
        env=lambda **extra: acs_env(endpoint, home, **extra),
        names=lambda prefix: keys(client, prefix),
        get=lambda key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read(),
        put=lambda key, data: client.put_object(Bucket=BUCKET, Key=key, Body=data),
        delete=lambda key: client.delete_object(Bucket=BUCKET, Key=key),
        filesystem=lambda: s3fs.S3FileSystem(**options),
        storage_options=options,
        secret=SECRET,
    )


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
