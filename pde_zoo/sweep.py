"""The sweep across machines: shards of the registry's sweep list, and atomic job claims.

`scripts/train_all.sh` runs the jobs `pde-zoo list --sweep` prints (one registry drives the
list). Any number of runners may share one output directory (a shared filesystem): each
job is trained by whichever runner claims it first, so runners with overlapping or no shards
never train the same model, and a static `--shard K/N` (Slurm array, Kubernetes Indexed Job)
only decides which jobs a runner looks at.

A claim is the file `<run dir>/.claim`, created with O_CREAT|O_EXCL (atomic, also on NFS v3+)
by the `pde-zoo train --claim` process that trains the job, holding its host, pid, process
start time and a heartbeat (the file's mtime, refreshed every `HEARTBEAT_S` seconds). The
trainer removes it when it exits. A claim is stale, and taken over, when its owner is gone:
- same host: the pid is not running (or is another process: its start time differs);
- another host: no heartbeat for `PDE_ZOO_CLAIM_TIMEOUT` seconds (default 600).
Whether a claimed job still needs training is the trainer's decision (a finished run
directory is returned as it is), so a job is trained to completion exactly once.
"""

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

CLAIM_NAME = ".claim"
HEARTBEAT_S = 30
DEFAULT_TIMEOUT_S = 600


class ClaimedError(RuntimeError):
    """The job is claimed by another live process (`owner` holds its claim record)."""

    def __init__(self, path, owner):
        self.path, self.owner = Path(path), owner
        super().__init__(f"{self.path.parent} is claimed by {owner.get('host')}:{owner.get('pid')} (since {owner.get('claimed_utc')})")


def _start_time(pid):
    """The process's start time in clock ticks since boot (/proc), or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _pid_alive(pid, start_time):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    return start_time is None or _start_time(pid) in (None, start_time)


def _read(path):
    try:
        with open(path) as f:
            return json.loads(f.read() or "{}"), os.stat(path).st_mtime
    except (FileNotFoundError, json.JSONDecodeError):
        return None, None  # gone, or being written this instant


def is_stale(owner, mtime, *, now=None, timeout=None):
    """Whether a claim record `owner` (with heartbeat `mtime`) no longer has a live owner."""
    timeout = float(os.environ.get("PDE_ZOO_CLAIM_TIMEOUT", DEFAULT_TIMEOUT_S)) if timeout is None else timeout
    if owner.get("host") == socket.gethostname() and "pid" in owner:
        return not _pid_alive(int(owner["pid"]), owner.get("start_time"))
    return (time.time() if now is None else now) - mtime > timeout


def _try_create(path, record):
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record))
    return True


def _break_stale(path, owner):
    """Remove the stale claim `owner` at `path`, unless someone else got there first; False
    when another process is breaking it right now.

    Breakers serialise on `<path>.break` (O_EXCL too), and remove the claim only if it still
    holds the record judged stale, so a fresh claim is never removed by a late breaker."""
    lock = Path(f"{path}.break")
    if not _try_create(lock, {"host": socket.gethostname(), "pid": os.getpid()}):
        _, lock_mtime = _read(lock)
        if lock_mtime is not None and time.time() - lock_mtime > 60:  # a breaker that died mid-break
            lock.unlink(missing_ok=True)
        return False
    try:
        current, _ = _read(path)
        if current == owner:
            os.unlink(path)
    finally:
        lock.unlink(missing_ok=True)
    return True


def acquire(run_dir):
    """Claim `run_dir` for this process: the claim record, or ClaimedError (another live owner)."""
    path = Path(run_dir) / CLAIM_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "host": socket.gethostname(), "pid": os.getpid(), "start_time": _start_time(os.getpid()),
        "claimed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **{k: os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "HOSTNAME") if k in os.environ},
    }
    for _ in range(200):
        if _try_create(path, record):
            return record
        owner, mtime = _read(path)
        if owner is None:
            time.sleep(0.05)  # vanished or half-written: look again
            continue
        if not is_stale(owner, mtime):
            raise ClaimedError(path, owner)
        if not _break_stale(path, owner):
            time.sleep(0.05)  # another process is breaking it
    raise RuntimeError(f"could not claim {run_dir}: the claim kept changing")


def release(run_dir, record):
    """Remove the claim of `run_dir` if it is still `record` (ours)."""
    path = Path(run_dir) / CLAIM_NAME
    owner, _ = _read(path)
    if owner == record:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def claim(run_dir, heartbeat_s=HEARTBEAT_S):
    """Hold the claim of `run_dir` for the duration of the block (refreshing its heartbeat)."""
    record = acquire(run_dir)
    path = Path(run_dir) / CLAIM_NAME
    stop = threading.Event()

    def beat():
        while not stop.wait(heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, name="pde-zoo-claim-heartbeat", daemon=True)
    thread.start()
    try:
        yield record
    finally:
        stop.set()
        release(run_dir, record)
