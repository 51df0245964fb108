"""acs against Azure Blob Storage's emulator, Azurite (from npm; scripts/test.sh installs it into
~/.cache/acs/azurite), on 127.0.0.1: the tests the S3 backend has against moto
(test_object_storage.py), for `az://`: the shared suite of store_suite.py, and the errors
Azure has its own way:

- a build to az:// that is SIGKILLed in the middle of a block upload leaves nothing under data/
  (and no manifest); the rerun resumes and the container then holds exactly the smoke build of
  scripts/test.sh (ACS_SMOKE_DIR), byte for byte;
- validate, stats and preview read it from the container; Hugging Face datasets and pyarrow
  read it through adlfs;
- two workers write to one container and merge there;
- validate names a corrupted object;
- a wrong account key, a missing container and an endpoint where nothing listens: one line
  naming the URL and the reason, exit 2, nothing written.
"""

import os
import subprocess
import time

import pytest

from conftest import required_env
import store_suite as suite
from store_suite import assert_one_line_exit_2, free_port, run_acs
from store_suite import *  # noqa: F401,F403  (the shared tests, run against this backend's store)

TINY_DIR = required_env("ACS_TINY_DIR")
SMOKE_MANIFEST = suite.SMOKE_MANIFEST
CONTAINER = "acs-test"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE = os.path.expanduser(os.environ.get("ACS_AZURITE", "~/.cache/acs/azurite/node_modules/.bin/azurite-blob"))


def connection_string(endpoint):
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={endpoint}/{ACCOUNT};")


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    if not os.path.exists(AZURITE):
        pytest.fail(f"Azurite is not installed at {AZURITE}: scripts/test.sh installs it (npm install azurite)")
    from azure.storage.blob import BlobServiceClient

    port = free_port()
    folder = str(tmp_path_factory.mktemp("azurite"))
    process = subprocess.Popen([AZURITE, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", folder,
                                "--silent", "--skipApiVersionCheck"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    service = BlobServiceClient.from_connection_string(connection_string(endpoint))
    for _ in range(200):
        try:
            service.create_container(CONTAINER)
            break
        except Exception:  # noqa: BLE001 (not up yet)
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("Azurite did not start")
    yield endpoint, service.get_container_client(CONTAINER)
    process.terminate()
    process.wait(timeout=10)


def acs_env(endpoint, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "AZURITE_", "ACS_"))}
    env.update(AZURE_STORAGE_USE_EMULATOR="true", AZURITE_BLOB_STORAGE_URL=endpoint,
               ACS_HOME=os.path.dirname(os.path.dirname(TINY_DIR)), ACS_STORE_RETRIES="1")
    env.update(extra)
    return env


def names(container, prefix):
    return sorted(b.name[len(prefix):] for b in container.list_blobs(name_starts_with=prefix))


@pytest.fixture(scope="module")
def store(azurite):
    import adlfs

    endpoint, container = azurite
    options = {"connection_string": connection_string(endpoint)}
    return suite.Store(
        root=f"az://{CONTAINER}",
        env=lambda **extra: acs_env(endpoint, **extra),
        names=lambda prefix: names(container, prefix),
        get=lambda name: container.download_blob(name).readall(),
        put=lambda name, data: container.upload_blob(name, data, overwrite=True),
        delete=container.delete_blob,
        filesystem=lambda: adlfs.AzureBlobFileSystem(**options),
        storage_options=options,
    )


def test_bad_key_container_and_endpoint(azurite, tmp_path):
    endpoint, container = azurite
    journal = str(tmp_path / "journal")
    build = ["build", "--manifest", SMOKE_MANIFEST, "--journal", journal, "-q", "--out"]
    wrong = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="
    env = acs_env(endpoint, AZURE_STORAGE_ACCOUNT_NAME=ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY=wrong)
    url = f"az://{CONTAINER}/x"
    err = assert_one_line_exit_2(run_acs([*build, url], env), url)
    assert "AuthenticationFailed" in err or "access denied" in err or "403" in err, err
    assert wrong not in err

    url = "az://no-such-container/x"
    err = assert_one_line_exit_2(run_acs([*build, url], acs_env(endpoint)), url)
    assert "does not exist" in err or "ContainerNotFound" in err, err

    closed = f"http://127.0.0.1:{free_port()}"
    url = f"az://{CONTAINER}/unreachable"
    assert_one_line_exit_2(run_acs([*build, url], acs_env(closed), timeout=120), url, "cannot reach the endpoint")
    assert names(container, "x/") == [] and names(container, "unreachable/") == []
    assert not os.path.exists(journal) or os.listdir(journal) == []
