"""A one-node Slurm cluster on 127.0.0.1 for the tests: Debian's slurm-wlm and munge (installed by
scripts/test.sh), a generated slurm.conf in a temporary folder, its own munge socket and ports,
started and stopped by the test.

The node declares what the job script of docs/distributed.md asks for, so that the script runs
as written: 24 CPUs and 128 GiB (`SlurmdParameters=config_overrides`: the configured sizes, not
the machine's 2 cores, so three `--cpus-per-task=8 --mem=32G` tasks run at once), and three
`gpu` GRES backed by character devices made here (Slurm only counts them; nothing uses a GPU).
Process tracking is plain /proc (no cgroups in a container)."""

import os
import shutil
import signal
import socket
import subprocess
import time

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing_binaries():
    """The Slurm / munge programs that are not installed."""
    needed = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel"]
    return [name for name in needed if not shutil.which(name) and not os.path.exists(f"/usr/sbin/{name}")]


def _binary(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """A running one-node cluster; `env` is what a client command needs (SLURM_CONF)."""

    def __init__(self, root):
        self.root = str(root)
        for sub in ("state", "spool", "log", "run", "munge", "gres"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        self.conf = os.path.join(self.root, "slurm.conf")
        self.munge_socket = os.path.join(self.root, "munge", "munge.socket.2")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        for key in list(self.env):
            if key.startswith("SLURM_") and key != "SLURM_CONF":
                del self.env[key]
        self._write_config()
        self._start()

    def _write_config(self):
        r = self.root
        for i in range(3):
            device = os.path.join(r, "gres", f"gpu{i}")
            if not os.path.exists(device):
                os.mknod(device, 0o600 | 0o020000, os.makedev(1, 3))  # a /dev/null twin
        with open(os.path.join(r, "gres.conf"), "w") as f:
            f.write(f"NodeName=localhost Name=gpu File={r}/gres/gpu[0-2]\n")
        settings = {
            "ClusterName": "acs-test",
            "SlurmctldHost": "localhost",
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "CredType": "cred/munge",
            "SlurmctldPort": str(_free_port()),
            "SlurmdPort": str(_free_port()),
            "StateSaveLocation": f"{r}/state",
            "SlurmdSpoolDir": f"{r}/spool",
            "SlurmctldPidFile": f"{r}/run/slurmctld.pid",
            "SlurmdPidFile": f"{r}/run/slurmd.pid",
            "SlurmctldLogFile": f"{r}/log/slurmctld.log",
            "SlurmdLogFile": f"{r}/log/slurmd.log",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_CPU",
            "SchedulerType": "sched/builtin",
            "SlurmdParameters": "config_overrides",
            "ReturnToService": "2",
            "MpiDefault": "none",
            "GresTypes": "gpu",
            "MinJobAge": "3600",
        }
        with open(self.conf, "w") as f:
            for key, value in settings.items():
                f.write(f"{key}={value}\n")
            f.write("NodeName=localhost NodeAddr=127.0.0.1 CPUs=24 RealMemory=131072 Gres=gpu:3 State=UNKNOWN\n")
            f.write("PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n")

    def _start(self):
        r = self.root
        subprocess.run([_binary("munged"), f"--socket={self.munge_socket}", f"--pid-file={r}/munge/munged.pid",
                        f"--log-file={r}/munge/munged.log", "--key-file=/etc/munge/munge.key",
                        f"--seed-file={r}/munge/seed", "--force"], check=True, env=self.env)
        subprocess.run([_binary("slurmctld"), "-f", self.conf], check=True, env=self.env)
        subprocess.run([_binary("slurmd"), "-f", self.conf], check=True, env=self.env)
        deadline = time.time() + 60
        while time.time() < deadline:
            out = self.run("sinfo", "--noheader", "-o", "%T", check=False)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the Slurm node did not come up: {self.log('slurmctld')[-2000:]}")

    def run(self, *args, check=True, cwd=None, env=None):
        out = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd,
                             env=dict(self.env, **(env or {})))
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
        return out

    def log(self, daemon):
        path = os.path.join(self.root, "log", f"{daemon}.log")
        return open(path).read() if os.path.exists(path) else ""

    def states(self, job):
        """{array index: state} of the job's tasks that Slurm still lists."""
        out = self.run("squeue", "--noheader", "--array", "-j", str(job), "-o", "%K %T", check=False)
        states = {}
        for line in out.stdout.splitlines():
            index, state = line.split()
            states[index] = state
        return states

    def task_state(self, job, index):
        out = self.run("scontrol", "show", "job", f"{job}_{index}", check=False)
        for field in out.stdout.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return None

    def stop(self):
        for name in ("slurmd", "slurmctld"):
            pid_file = os.path.join(self.root, "run", f"{name}.pid")
            _kill(pid_file)
        _kill(os.path.join(self.root, "munge", "munged.pid"))


def _kill(pid_file):
    try:
        pid = int(open(pid_file).read().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
