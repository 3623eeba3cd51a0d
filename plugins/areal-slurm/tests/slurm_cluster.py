"""A real one-node Slurm cluster (Debian's slurm-wlm + munge) in a private directory.

    cluster = SlurmCluster.start(Path("/tmp/slurm-x"))    # munged, slurmctld, slurmd; waits for the node
    os.environ.update(cluster.env)                       # SLURM_CONF for sbatch/srun/squeue
    ...
    cluster.stop()                                       # kills exactly the daemons it started

Everything lives under the directory (config, state, spool, logs, munge socket and key) and uses
free ports, so it neither needs nor touches a system-wide Slurm or munge. Needs root (slurmd
starts job steps as the submitting user) and `apt-get install slurm-wlm munge`
(plugins/areal-slurm/tests/install_slurm.sh does that).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from areal_core.plugin import free_port

PARTITION = "debug"
SLURM_CONF = """\
ClusterName=areal-test
SlurmctldHost={host}({addr})
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName={host} NodeAddr={addr} CPUs={cpus} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def machine_ip() -> str:
    """This machine's address on its default route (not 127.0.0.1): the node's NodeAddr."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.254.254.254", 9))  # UDP via the default route: nothing is sent
        return s.getsockname()[0]


@dataclass
class SlurmCluster:
    root: Path
    daemons: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.root / "slurm.conf")}

    @classmethod
    def start(cls, root: Path, cpus: int = 4) -> SlurmCluster:
        for sub in ("munge", "state", "spool"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        cluster = cls(root)
        try:
            cluster._start_munge()
            host = socket.gethostname().split(".")[0]
            conf = SLURM_CONF.format(host=host, addr=machine_ip(), ctld_port=free_port(),
                                     d_port=free_port(), root=root, cpus=cpus, partition=PARTITION)
            (root / "slurm.conf").write_text(conf)
            env = {**os.environ, **cluster.env}
            for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
                cluster._spawn([*daemon, "-f", str(root / "slurm.conf")], env, root / f"{daemon[0]}.out")
            cluster._wait_idle(env)
        except BaseException:
            cluster.cleanup()
            raise
        return cluster

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._spawn(["munged", "--foreground", "--force", f"--socket={self.root}/munge/munge.socket",
                     f"--key-file={key}", f"--pid-file={self.root}/munge/munged.pid",
                     f"--log-file={self.root}/munge/munged.log", f"--seed-file={self.root}/munge/munged.seed"],
                    dict(os.environ), self.root / "munged.out")
        deadline = time.monotonic() + 20
        while not (self.root / "munge" / "munge.socket").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"munged did not start: {(self.root / 'munged.out').read_text()[-1000:]}")
            time.sleep(0.1)

    def _spawn(self, argv: list[str], env: dict[str, str], out: Path) -> None:
        with open(out, "ab") as f:
            self.daemons.append(subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 env=env, start_new_session=True))

    def _wait_idle(self, env: dict[str, str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for d in self.daemons:
                if d.poll() is not None:
                    raise RuntimeError(f"{d.args[0]} exited ({d.returncode}); see {self.root}/*.log / *.out")
            res = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            state = res.stdout.strip()
            if res.returncode == 0 and state in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"slurm node not idle after {timeout}s (state {state!r}); see {self.root}/slurmctld.log")

    def stop(self) -> None:
        """Cancel this cluster's jobs, then SIGTERM each daemon's process group (slurmd, slurmctld,
        munged, in that order), then SIGKILL."""
        if len(self.daemons) == 3 and all(d.poll() is None for d in self.daemons):
            env = {**os.environ, **self.env}
            subprocess.run(["scancel", f"--partition={PARTITION}"], env=env, capture_output=True, check=False)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and subprocess.run(
                    ["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip():
                time.sleep(0.5)
        for d in reversed(self.daemons):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if d.poll() is not None:
                    break
                try:
                    os.killpg(d.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    d.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    continue
        self.daemons.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
