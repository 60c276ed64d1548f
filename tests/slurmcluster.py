"""A private one-node SLURM cluster for tests: Debian's slurmctld, slurmd (two node daemons) and munged.

Everything lives in one folder (configuration, state, spool, logs, the munge key and socket)
and on free ports, so it never meets a cluster of the machine's own. The daemons run in the
foreground as children of this process, started by hand (no systemd) and stopped by their PID.
Two nodes share the host: ``cpu0`` (no GPU) and ``gpu0`` (four fake GPUs: GRES files that are
character devices made like /dev/null; SLURM drops GPUs without a ``File=``).

Measured pitfalls this set-up avoids: ``slurmd`` wants a cgroup plugin even with
``proctrack/linuxproc`` and ``task/none``; ``CR_Core_Memory`` without ``DefMemPerCPU`` gives each
job the node's memory (one task at a time); a requeued task is held for 120 s unless its start
time is set to now; ``scancel --signal=KILL`` does not SIGKILL the batch shell (use the pids of
``scontrol listpids``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "munge", "slurm-client")
DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue", "sinfo", "scancel")
FAKE_GPUS = 4
CPUS = 4  # per node: more than the machine's cores (config_overrides), so tasks run side by side


def unavailable() -> str | None:
    """Why no cluster can be started here (None: it can, installing the packages if missing)."""
    if os.geteuid() != 0:
        return "needs root (it starts munged, slurmctld and slurmd, as root, on private ports)"
    if all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS):
        return None
    if shutil.which("apt-get") is None:
        return f"needs the Debian packages {' '.join(PACKAGES)} and apt-get is not here to install them"
    return None


def install() -> str | None:
    """Install the packages if missing (about 30 s); why not, if it failed."""
    if all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr.strip().splitlines()[-1:]}"
    return None


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _cgroup_plugin() -> str:
    return "cgroup/v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "cgroup/v1"


class Cluster:
    """The cluster in ``folder``: :meth:`start`, run commands with :attr:`env`, :meth:`stop`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: dict[str, subprocess.Popen] = {}
        self.host = socket.gethostname()

    # ------------------------------------------------------------------ daemons

    def start(self) -> None:
        """Write the configuration, start munged, slurmctld and one slurmd per node; wait until both nodes are idle."""
        f = self.folder
        for sub in ("state", "spool-cpu0", "spool-gpu0", "log"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        key = f / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        gres = []
        for i in range(FAKE_GPUS):
            device = f / f"fakegpu{i}"
            try:
                os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # a character device, as /dev/null
            except OSError:
                device = Path("/dev/null")  # one fake GPU per distinct file: then fewer GPUs
            gres.append(device)
        ctl, *node_ports = _free_ports(3)
        munge = f / "munge.sock"
        (f / "slurm.conf").write_text(f"""\
ClusterName=pomtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={ctl}
AuthType=auth/munge
AuthInfo=socket={munge}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool-%n
SlurmctldPidFile={f}/slurmctld.pid
SlurmdPidFile={f}/slurmd-%n.pid
SlurmctldLogFile={f}/log/slurmctld.log
SlurmdLogFile={f}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
GresTypes=gpu
ReturnToService=2
JobRequeue=1
MpiDefault=none
KillWait=5
MinJobAge=600
NodeName=cpu0 NodeHostname={self.host} NodeAddr=127.0.0.1 Port={node_ports[0]} CPUs={CPUS} RealMemory=2048
NodeName=gpu0 NodeHostname={self.host} NodeAddr=127.0.0.1 Port={node_ports[1]} CPUs={CPUS} RealMemory=2048 \
Gres=gpu:{len(set(gres))}
PartitionName=cpu Nodes=cpu0 Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=gpu0 MaxTime=INFINITE State=UP
""")
        (f / "gres.conf").write_text("".join(f"NodeName=gpu0 Name=gpu File={d}\n" for d in dict.fromkeys(gres)))
        (f / "cgroup.conf").write_text(f"CgroupPlugin={_cgroup_plugin()}\n")
        self._daemon("munged", ["munged", "-F", f"--socket={munge}", f"--key-file={key}", f"--pid-file={f}/munged.pid",
                                f"--log-file={f}/log/munged.log", f"--seed-file={f}/munged.seed", "--force"])
        self._wait(lambda: munge.exists(), "munged's socket")
        self._daemon("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self.run(["scontrol", "ping"], check=False).returncode == 0, "slurmctld")
        for node in ("cpu0", "gpu0"):
            self._daemon(f"slurmd-{node}", ["slurmd", "-D", "-N", node, "-f", str(self.conf)])
        self._wait(lambda: self.run(["sinfo", "-h", "-N", "-o", "%T"]).stdout.split() == ["idle", "idle"], "idle nodes")

    def _daemon(self, name: str, command: list[str]) -> None:
        log = open(self.folder / "log" / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        log.close()

    def _wait(self, predicate, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}; see {self.folder}/log")
            if predicate():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}; see {self.folder}/log")

    def stop(self) -> None:
        """Cancel every job, then stop the daemons by their PID (slurmd first, munged last)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run(["scancel", "--user=root"], check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.run(["squeue", "-h"], check=False).stdout.strip():
                time.sleep(0.3)
        for name in sorted(self.procs, key=lambda n: ("slurmd" not in n, n == "munged")):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    # ------------------------------------------------------------------ commands

    def run(self, command: list[str], check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        done = subprocess.run(command, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def sbatch(self, *args: str, env: dict | None = None, cwd: Path | None = None) -> str:
        """Submit; the job id."""
        done = subprocess.run(["sbatch", "--parsable", *args], env={**self.env, **(env or {})}, cwd=cwd,
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def tasks(self, job: str) -> dict[str, dict[str, str]]:
        """``<job>_<task>`` (``<job>`` alone for a job that is no array) -> scontrol's fields (JobState, ExitCode,
        Restarts, ...), for every task of ``job``."""
        out = self.run(["scontrol", "show", "job", "-o", job], check=False).stdout
        found = {}
        for line in out.splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if "ArrayTaskId" in fields and fields.get("ArrayJobId") == job:
                for task in _expand(fields["ArrayTaskId"]):
                    found[f"{job}_{task}"] = fields
            elif "ArrayTaskId" not in fields and fields.get("JobId") == job:
                found[job] = fields
        return found

    def states(self, job: str) -> dict[str, str]:
        """``<job>_<task>`` -> its state (PENDING, RUNNING, COMPLETED, CANCELLED, FAILED, ...)."""
        return {task: fields["JobState"] for task, fields in self.tasks(job).items()}

    def pids(self, task: str) -> list[int]:
        """The processes of a running task (``scontrol listpids``, run on its node: here)."""
        job_id = self.tasks(task.split("_")[0]).get(task, {}).get("JobId", task)  # listpids wants the task's own id
        out = self.run(["scontrol", "listpids", job_id], check=False).stdout
        return [int(line.split()[0]) for line in out.splitlines()[1:] if line.split() and line.split()[0].isdigit()]

    def wait_done(self, job: str, timeout: float = 300.0) -> dict[str, str]:
        """Wait until no task of ``job`` is pending or running; their final states."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.states(job)
            if states and not any(s in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED")
                                  for s in states.values()):
                return states
            time.sleep(0.3)
        raise RuntimeError(f"job {job} not done after {timeout:.0f} s: {self.states(job)}")


def _expand(spec: str) -> list[str]:
    """``3`` or ``1-4`` or ``1,3`` (pending tasks are listed as ranges) -> the task ids."""
    out = []
    for part in spec.split("%")[0].split(","):
        if "-" in part:
            a, b = part.split("-")
            out += [str(i) for i in range(int(a), int(b) + 1)]
        else:
            out.append(part)
    return out
