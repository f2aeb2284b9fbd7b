"""The work_dir lock: one run per work_dir (``<work_dir>/.lock``), taken by every stage before it writes.

Two processes started on one work_dir (the same job submitted twice) would interleave
checkpoints, CAMs and markers. The first takes the lock; the second fails at once
with a one-line error naming the holder (pid, host, start time, command).

Protocol:

* **take**: the holder's JSON (pid, host, start time, command, job ids) is written to a
  private file and ``flock``-ed, then published with ``link(2)``, which fails when a
  lock exists (atomic, also on NFS): nobody ever reads a half-written lock. The lock is held
  until the process ends (``atexit``, and ``run_script``'s ``finally``): one script may
  run several stages, and run_pipeline runs them all in one process (re-entry is free).
* **stale**: a lock whose holder died (SIGKILL, a node crash) stays on disk, but the
  kernel dropped its ``flock``. On the same host, a lock whose ``flock`` can be taken
  belongs to a dead process: it is taken over with a message. Where ``flock`` is not
  supported, the holder's pid is checked instead (two runs taking over the same dead
  lock in the same instant could then both succeed; with flock they cannot).
* **another host**: a lock taken on another host cannot be checked from here (``flock``
  is not reliable across NFS clients): refused, naming the holder and the file to
  delete if that run is gone.
* **torchrun**: the ranks of one job share the lock. The job is the launcher's run id
  with the master address and port (equal on every rank and node of a job, unequal
  between two jobs that run at once); rank 0 takes the lock (taking a dead job's over),
  the other ranks wait until it holds their job.
"""
from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from wsss.layout import lock_file

try:
    import fcntl
except ImportError:  # no flock (Windows): pids decide
    fcntl = None  # type: ignore[assignment]

FOLLOW_TIMEOUT_S = 300.0  # how long a rank > 0 waits for rank 0's lock


class WorkDirBusy(RuntimeError):
    """Another run holds the work_dir; the message names it."""


@dataclass
class _Held:
    pid: int
    fd: int | None  # None: shared with rank 0 of the same job
    path: Path
    inode: int = -1


_HELD: dict[str, _Held] = {}
_ATEXIT = False


def job_id() -> str | None:
    """The distributed job this process belongs to, or None for a single process."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" not in env and int(env.get("WORLD_SIZE", "1")) <= 1:
        return None
    run = env.get("TORCHELASTIC_RUN_ID") or env.get("SLURM_JOB_ID") or "-"
    return f"{run}@{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _me() -> dict:
    env = os.environ
    sched = next((f"{k}={env[k]}" for k in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID") if env.get(k)), None)
    now = time.time()
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)),
            "started_unix": round(now, 3), "command": " ".join([Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]]),
            "job": job_id(), "scheduler_job": sched}


def lock_path(work_dir: str | os.PathLike) -> Path:
    return lock_file(work_dir)


def describe(h: dict) -> str:
    cmd = h.get("command") or "?"
    cmd = cmd if len(cmd) <= 100 else cmd[:97] + "..."
    sched = f", {h['scheduler_job']}" if h.get("scheduler_job") else ""
    return f"pid {h.get('pid')} on {h.get('host')} since {h.get('started')} ({cmd}{sched})"


def claim(work_dir: str | os.PathLike) -> None:
    """Hold ``work_dir`` for this process (until it exits or :func:`release_all`)."""
    key = str(Path(work_dir).resolve())
    held = _HELD.get(key)
    if held is not None and held.pid == os.getpid():
        return
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    path = lock_path(work_dir)
    job = job_id()
    if job is not None and _rank() != 0:
        _follow(path, job)
        _HELD[key] = _Held(os.getpid(), None, path)
        return
    fd, inode = _acquire(path, _me())
    _HELD[key] = _Held(os.getpid(), fd if fd >= 0 else None, path, inode)
    global _ATEXIT
    if not _ATEXIT:
        atexit.register(release_all)
        _ATEXIT = True


def release_all() -> None:
    """Give back every lock this process took (a forked child gives back nothing)."""
    for key, h in list(_HELD.items()):
        if h.pid != os.getpid():
            continue
        del _HELD[key]
        if h.fd is None:
            continue
        try:
            # unlink first, then drop the flock: a process that opened the old file and
            # then gets the flock sees that the path no longer names it and starts over
            if _inode(h.path) == h.inode:
                h.path.unlink()
        except OSError:
            pass
        finally:
            os.close(h.fd)


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return -1


def _read(path: Path) -> dict | None:
    """The holder's record, or None while it is missing, empty or half-written."""
    try:
        text = path.read_text()
        h = json.loads(text) if text.strip() else None
        return h if isinstance(h, dict) and "pid" in h else None
    except (OSError, ValueError):
        return None


def _write(fd: int, me: dict) -> None:
    data = (json.dumps(me, indent=2) + "\n").encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)


def _try_flock(fd: int) -> bool | None:
    """True: taken; False: held by a live process; None: flock unsupported here."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError):
        return False
    return True


def _new_record(path: Path, me: dict) -> tuple[Path, int]:
    """Our record, complete and flocked, under a private name beside the lock."""
    tmp = path.with_name(f"{path.name}.{me['pid']}.new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    _try_flock(fd)  # a fresh file nobody else knows
    _write(fd, me)
    return tmp, fd


def _acquire(path: Path, me: dict) -> tuple[int, int]:
    """(fd, inode) of the lock file we now hold; fd -1 when rank 0 of this job holds it."""
    while True:
        # link(2) publishes the complete record atomically, or fails when a lock exists
        tmp, fd = _new_record(path, me)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        else:
            tmp.unlink()
            return fd, os.fstat(fd).st_ino
        try:
            theirs = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # released meanwhile
            os.close(fd)
            tmp.unlink(missing_ok=True)
            continue
        holder = _read(path)
        got = _try_flock(theirs)
        if os.fstat(theirs).st_ino != _inode(path):  # replaced or released while we looked
            os.close(theirs), os.close(fd)
            tmp.unlink(missing_ok=True)
            continue
        holder = holder or {"pid": "?", "host": me["host"], "started": "?", "command": "an unreadable lock file"}
        if holder.get("job") and holder.get("job") == me["job"] and got is not True:
            os.close(theirs), os.close(fd)
            tmp.unlink(missing_ok=True)
            return -1, -1
        pid = holder.get("pid")
        dead = got is True or (got is None and isinstance(pid, int) and not _pid_alive(pid))
        if holder.get("host") != me["host"] or not dead:
            os.close(theirs), os.close(fd)
            tmp.unlink(missing_ok=True)
            if holder.get("host") != me["host"]:
                raise WorkDirBusy(f"{path}: this work_dir is in use by {describe(holder)}; its liveness cannot be checked "
                                  f"from {me['host']}: if that run is gone, delete {path}, or use another work_dir=DIR")
            orphan = " (that pid is gone, but a child process of it still holds the lock)" if isinstance(pid, int) and not _pid_alive(pid) else ""
            raise WorkDirBusy(f"{path}: this work_dir is in use by {describe(holder)}{orphan}; wait for that run to end, "
                              "or use another work_dir=DIR")
        # the holder is dead: our record replaces its file in one rename (a process that
        # opened the old file and then gets its flock sees another inode and starts over)
        os.replace(tmp, path)
        os.close(theirs)
        print(f"[lock] {path}: the run that held it ({describe(holder)}) is gone; lock taken over", file=sys.stderr, flush=True)
        return fd, os.fstat(fd).st_ino


def _follow(path: Path, job: str) -> None:
    """Rank > 0: wait until rank 0 holds the lock for this job. Another job's lock whose
    holder is alive on this host is refused at once; a dead one's (a killed run, a previous
    ``torchrun --standalone`` with its random run id) is rank 0's to take over meanwhile, and
    a lock from another host is refused only if it is still there at the end."""
    deadline = time.time() + FOLLOW_TIMEOUT_S
    holder = None
    while time.time() < deadline:
        holder = _read(path)
        if holder is not None and holder.get("job") == job:
            return
        if (holder is not None and holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int)
                and _pid_alive(holder["pid"])):
            raise WorkDirBusy(f"{path}: this work_dir is in use by {describe(holder)}, not by this job ({job}); "
                              "wait for that run to end, or use another work_dir=DIR")
        time.sleep(0.1)
    if holder is not None:
        raise WorkDirBusy(f"{path}: this work_dir is in use by {describe(holder)}, not by this job ({job}); "
                          "wait for that run to end, or use another work_dir=DIR")
    raise WorkDirBusy(f"{path}: rank {_rank()} waited {FOLLOW_TIMEOUT_S:.0f} s for rank 0 of job {job} to take the lock")
