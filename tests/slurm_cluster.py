"""A throwaway one-node SLURM cluster under a temporary directory, for tests.

Everything it needs lives under `root`: its own munge key, socket and daemon, its own
slurm.conf (clients find it through SLURM_CONF), spool, state and log files, on free
ports. Nothing under /etc is read or written. Daemons are stopped by the PIDs they were
started with. Needs root (slurmd runs jobs as the submitting user) and Debian's
slurm-wlm + munge packages (`.ci/run` installs them).

    with SlurmCluster(tmp_path / "slurm") as cluster:
        subprocess.run(["sbatch", ...], env=cluster.env)
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel")
# GRES GPUs backed by harmless character devices: SLURM schedules and grants them (and sets
# CUDA_VISIBLE_DEVICES) like real cards; no job on this node can use one. Two, so that two
# GPU jobs run side by side.
GPU_DEVICES = ("/dev/null", "/dev/zero")


class ClusterError(RuntimeError):
    pass


def find(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).is_file()),
                                      None)


def missing_binaries() -> list[str]:
    return [name for name in DAEMONS + CLIENTS if find(name) is None]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) as slurmd itself counts them."""
    out = subprocess.run([find("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    return int(fields["CPUs"]), int(fields["RealMemory"])


class SlurmCluster:
    def __init__(self, root: Path, partition: str = "main"):
        self.root = Path(root)
        self.partition = partition
        self.pids: dict[str, int] = {}
        self.cpus, self.memory_mb = 0, 0

    # ------------------------------------------------------------------ setup
    def _write_config(self):
        r = self.root
        for d in ("munge", "state", "spool", "log", "run"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o700)
        (r / "run").chmod(0o755)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        self.cpus, real_memory = node_hardware()
        self.memory_mb = real_memory - 512  # leave room, or slurmd drains the node for "Low RealMemory"
        self.munge_socket = r / "run" / "munge.socket"
        self.conf = r / "slurm.conf"
        self.conf.write_text(f"""\
# throwaway test cluster (tests/slurm_cluster.py)
ClusterName=reprozoo-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
SchedulerParameters=sched_interval=2
GresTypes=gpu
NodeName=localhost CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:{len(GPU_DEVICES)} State=UNKNOWN
PartitionName={self.partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
        (r / "gres.conf").write_text("AutoDetect=off\n" + "".join(f"Name=gpu File={d}\n" for d in GPU_DEVICES))

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _start(self, name: str, args: list[str], pidfile: Path):
        result = subprocess.run([find(name), *args], env=self.env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise ClusterError(f"{name} did not start (exit {result.returncode}): "
                               f"{(result.stderr or result.stdout).strip()}{self._log_tail(name)}")
        for _ in range(100):
            if pidfile.is_file() and pidfile.read_text().strip():
                self.pids[name] = int(pidfile.read_text().split()[0])
                return
            time.sleep(0.1)
        raise ClusterError(f"{name} wrote no PID file {pidfile}{self._log_tail(name)}")

    def _log_tail(self, name: str) -> str:
        log = self.root / "log" / f"{name}.log"
        if name == "munged":
            log = self.root / "run" / "munged.log"
        return "; log: " + " | ".join(log.read_text().splitlines()[-5:]) if log.is_file() else ""

    def start(self, timeout: float = 60) -> "SlurmCluster":
        missing = missing_binaries()
        if missing:
            raise ClusterError(f"SLURM/munge binaries not found: {', '.join(missing)} "
                               "(apt-get install slurm-wlm munge)")
        if os.geteuid() != 0:
            raise ClusterError("a test cluster's slurmd must run as root")
        self._write_config()
        r = self.root
        self._start("munged", ["--force", f"--socket={self.munge_socket}", f"--key-file={r}/munge/munge.key",
                               f"--pid-file={r}/run/munged.pid", f"--log-file={r}/run/munged.log",
                               f"--seed-file={r}/munge/munged.seed"], r / "run" / "munged.pid")
        # -i: ignore state saved by an earlier (crashed) controller in this directory
        self._start("slurmctld", ["-i", "-f", str(self.conf)], r / "run" / "slurmctld.pid")
        self._start("slurmd", ["-N", "localhost", "-f", str(self.conf)], r / "run" / "slurmd.pid")
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for name, pid in self.pids.items():
                if not alive(pid):
                    raise ClusterError(f"{name} exited after starting{self._log_tail(name)}")
            state = self.run("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.strip()
            if state in ("idle", "mix", "alloc"):
                return self
            time.sleep(0.5)
        raise ClusterError(f"node not idle after {timeout:.0f}s (sinfo state {state!r})"
                           f"{self._log_tail('slurmctld')}{self._log_tail('slurmd')}")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([find(args[0]), *args[1:]], env=self.env, capture_output=True, text=True,
                                timeout=60)
        if check and result.returncode != 0:
            raise ClusterError(f"{' '.join(args)}: {result.stderr.strip()}")
        return result

    # ------------------------------------------------------------------ teardown
    def stop(self):
        """Cancel what is left, then stop each daemon by its PID (slurmd, slurmctld, munged)."""
        if "slurmctld" in self.pids:
            self.run("scancel", "--full", "--user", str(os.geteuid()), check=False)
        for name in reversed(DAEMONS):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                if not alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
