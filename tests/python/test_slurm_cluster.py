"""The Slurm job array of docs/distributed.md, submitted as written there (only the paths, the
bucket and the array size filled in) to a real one-node Slurm cluster started here
(slurm_cluster.py), writing into moto's S3 server on 127.0.0.1: three array tasks render their
slices of a build; one is killed in the middle of its render (`scancel --signal=KILL --full`), requeued
(`scontrol requeue`), and resumes from its journal; `acs merge` in the bucket then holds the
dataset a one-process build of the same manifest writes, byte for byte (shards, manifest, card,
rejects); `acs validate` passes on it.

Skipped, saying so, only where Slurm is not installed and cannot be (not root); scripts/test.sh
installs Debian's slurm-wlm and munge where it may."""

import json
import os
import re
import shutil
import time

import boto3
import pyarrow.parquet as pq
import pytest

from conftest import required_env
import slurm_cluster
from test_object_storage import BUCKET, SECRET, acs_env, run_acs, start_moto

ACS = required_env("ACS_BIN")
TINY_DIR = required_env("ACS_TINY_DIR")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = 3
KILLED = 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = slurm_cluster.missing_binaries()
    if missing:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            pytest.fail(f"Slurm is not installed ({', '.join(missing)}): scripts/test.sh installs slurm-wlm and munge")
        pytest.skip(f"Slurm is not installed ({', '.join(missing)}) and this user cannot install it")
    cluster = slurm_cluster.LocalSlurm(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def s3():
    process, endpoint = start_moto()
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key=SECRET,
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    process.terminate()
    process.wait(timeout=10)


def job_script(shared, run):
    """docs/distributed.md's job script with this test's paths, bucket and array size."""
    text = open(os.path.join(REPO, "docs", "distributed.md")).read()
    script = re.search(r"## Slurm\n\n```bash\n(.*?)```", text, re.S).group(1)
    filled = (script.replace("--array=0-7", f"--array=0-{TASKS - 1}")
              .replace("s3://acs-data/runs/i2p-sd15", run)
              .replace("/shared/acs-runs/i2p-sd15", shared)
              .replace("/shared/hf", os.path.join(shared, "hf")))
    assert filled.count(shared) == 3 and run in filled, filled
    return filled


def test_the_documented_job_array_runs_survives_a_killed_task_and_merges_to_the_single_build(cluster, s3, tmp_path):
    endpoint, client = s3
    shared = str(tmp_path / "shared")
    os.makedirs(os.path.join(shared, "hf"))
    # The smoke build one pair per batch, so that a task is killed between two batches with
    # several still to render (a task renders 5 or 6 pairs; a batch takes a second or so).
    manifest = open(os.path.join(REPO, "manifests", "smoke.toml")).read()
    manifest = manifest.replace('path = "../samples/pairs.jsonl"', f'path = "{REPO}/samples/pairs.jsonl"')
    manifest = manifest.replace("batch_pairs = 4", "batch_pairs = 1")
    with open(os.path.join(shared, "manifest.toml"), "w") as f:
        f.write(manifest)
    run = f"s3://{BUCKET}/runs/slurm"
    with open(tmp_path / "build.sbatch", "w") as f:
        f.write(job_script(shared, run))
    (tmp_path / "logs").mkdir()
    env = acs_env(endpoint, str(tmp_path / "home"))
    env["PATH"] = os.path.dirname(os.path.abspath(ACS)) + os.pathsep + env["PATH"]
    env["ACS_HOME"] = os.path.dirname(os.path.dirname(TINY_DIR))
    job = cluster.run("sbatch", "--parsable", "build.sbatch", cwd=str(tmp_path), env=env).stdout.strip()

    # Kill task KILLED once its journal holds a spooled batch, before it finishes.
    journal = os.path.join(shared, f"journal-{KILLED}", ".acs-journal", "journal.jsonl")
    deadline = time.time() + 300
    while not (os.path.exists(journal) and '"event":"batch"' in open(journal).read()):
        assert time.time() < deadline, f"task {KILLED} spooled no batch: {cluster.states(job)}"
        time.sleep(0.01)
    # --full: the signal goes to the batch script and acs under it (plain --signal reaches
    # job steps only, and acs runs in the batch step).
    cluster.run("scancel", "--signal=KILL", "--full", f"{job}_{KILLED}")
    while cluster.task_state(job, KILLED) in ("RUNNING", "COMPLETING"):
        assert time.time() < deadline
        time.sleep(0.2)
    killed_state = cluster.task_state(job, KILLED)
    assert killed_state in ("FAILED", "CANCELLED"), killed_state
    spooled = open(journal).read().count('"event":"batch"')
    cluster.run("scontrol", "requeue", f"{job}_{KILLED}")
    # A requeued job waits for a begin time Slurm sets minutes ahead; a test need not.
    cluster.run("scontrol", "update", f"JobId={job}_{KILLED}", "StartTime=now")
    while cluster.states(job):
        assert time.time() < deadline, f"the array did not finish: {cluster.states(job)}"
        time.sleep(0.5)
    for index in range(TASKS):
        assert cluster.task_state(job, index) == "COMPLETED", (index, open(tmp_path / "logs" / f"acs-{job}_{index}.out").read())
    log = open(tmp_path / "logs" / f"acs-{job}_{KILLED}.out").read()
    resumed = re.search(r"resuming: (\d+) of (\d+) pairs were already rendered", log)
    assert resumed, log
    # Killed between batches: some of its slice was kept, the rest rendered after the requeue.
    assert 0 < int(resumed.group(1)) < int(resumed.group(2)), log

    # Merge in the bucket, validate there, compare with a one-process build.
    workers = [f"{run}/worker-{i}" for i in range(TASKS)]
    out = run_acs(["merge", *workers, "--out", f"{run}/dataset"], env)
    assert out.returncode == 0, out.stderr
    out = run_acs(["validate", f"{run}/dataset", "--json"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    single = tmp_path / "single"
    out = run_acs(["build", "--manifest", os.path.join(shared, "manifest.toml"), "--out", str(single)], env)
    assert out.returncode == 0, out.stderr
    merged = tmp_path / "merged"
    for obj in client.list_objects_v2(Bucket=BUCKET, Prefix="runs/slurm/dataset/")["Contents"]:
        path = merged / obj["Key"][len("runs/slurm/dataset/"):]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())

    def rows(folder):
        table = pq.read_table(str(folder / "data")).to_pylist()
        return {row["pair_id"]: row for row in table}

    ours, theirs = rows(merged), rows(single)
    assert ours.keys() == theirs.keys() and len(ours) == 18
    assert ours == theirs
    m, s = (json.load(open(folder / "acs-manifest.json")) for folder in (merged, single))
    assert m["build_config_sha256"] == s["build_config_sha256"] and m["model"] == s["model"]
    assert m["complete"] and m.get("worker") is None

    def rows_per_split(manifest):
        counts = {}
        for shard in manifest["shards"]:
            counts[shard["split"]] = counts.get(shard["split"], 0) + shard["rows"]
        return counts

    assert rows_per_split(m) == rows_per_split(s)

    # Byte for byte: shards, manifest, card and rejects (validate added its report in the bucket).
    def files(folder):
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
                if p.is_file() and p.name != "validation.json"}

    ours_files, single_files = files(merged), files(single)
    assert sorted(ours_files) == sorted(single_files)
    for name, data in single_files.items():
        assert ours_files[name] == data, name
    print(f"slurm: job {job}, {TASKS} tasks; task {KILLED} killed after {spooled} spooled batches, requeued, "
          f"resumed {resumed.group(1)} of {resumed.group(2)} pairs; merge == single build byte for byte, {len(ours)} rows")
