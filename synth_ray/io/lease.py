"""One writer per output: a lease the job's driver holds from before its first write to its end.

    python -m pytest tests/test_lease.py

Two runs on one output (a resubmit, a Kubernetes retry, a second `synth-ray run`) would both
commit units and sweep each other's uncommitted shards. So a run takes the output's lease
first; a second run, or an `--overwrite`, on a held output stops with one line naming the
holder (`OutputBusyError`, exit 2) before it writes anything.

- A local output: an OS lock (`flock` on `_lease.lock`, released by the kernel however the
  holder dies) plus a holder record, `_lease.json`: run id, host, pid, start, heartbeat.
- The record's heartbeat is rewritten every `HEARTBEAT_S`. A record from another kernel (a
  shared filesystem whose locks do not cross hosts, or an object-store output, which has no
  lock) is watched on this host's clock: a record that changes is a live holder's (refused
  at once); one unchanged until its heartbeat is `STALE_AFTER_S` old, and for two heartbeats
  at least, is a dead one's (a killed driver, a lost node) and taken over. So a resubmit
  after a driver kill resumes after at most a minute, and a live holder whose clock differs
  from this host's is never taken for dead.
- A holder that finds the record rewritten by another run (it was paused past the stale
  window and taken over) stops committing: `check` raises `LeaseLost` before each commit.

- A URI output (S3, GCS, Azure through obstore; `file://`) writes its record only on a
  condition (io/conditional.py): created when absent, a dead holder's replaced only in the
  version judged dead, a heartbeat written only over this run's last version. Of two runs
  racing for an output exactly one gets it; a run whose heartbeat finds another's record has
  lost the lease.

Not covered: a URI that no conditional write reaches (obstore absent, another scheme) checks
the record and then writes it, two steps, so two runs started within a second can both take it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from synth_ray.errors import UserError
from synth_ray.io.conditional import ConditionalObjects, open_conditional
from synth_ray.io.filesystem import Location

LOCK_FILE = "_lease.lock"
HOLDER_FILE = "_lease.json"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


class OutputBusyError(UserError):
    """Another live run holds the output."""


class LeaseLost(RuntimeError):
    """Another run took this output over: this run must not commit anything more."""


def seconds(value: Any) -> float:
    """A time from a holder record; 0 for a damaged field (read as long ago)."""
    return float(value) if isinstance(value, int | float) else 0.0


def kernel_id() -> str:
    """What tells this process space from any other: the kernel's boot id and this pid
    namespace (Linux), else the host name. Two containers may share a host name and a
    kernel, never a pid namespace, so only a holder in this one can be told dead by its pid."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return f"host:{socket.gethostname()}"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class OutputLease:
    def __init__(
        self,
        location: Location,
        run_id: str | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.location = location
        self.run_id = run_id or new_run_id()
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.sleep = sleep
        self.host = socket.gethostname()
        self.kernel = kernel_id()
        self.started = clock()
        self.lost: str | None = None
        self.unreadable: str | None = None  # why the last `holder()` read failed
        self._fd: int | None = None
        self._created = False  # this lease created the output folder
        self._last_beat = float("inf")  # when the record was last written (not yet: never)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # a URI output: its record is written only on a condition (io/conditional.py)
        self.cas: ConditionalObjects | None = None
        self._tag: str | None = None  # the version of the record this run wrote last
        self._seen_tag: str | None = None  # the version `holder()` read last

    # -- taking and giving back ---------------------------------------------------------------
    def acquire(self) -> None:
        """Take the output or raise OutputBusyError naming its holder (see the module)."""
        local = self.location.local
        if local is not None:
            if local.exists() and not local.is_dir():
                return  # not a folder: OutputStore.prepare refuses it with its own line
            self._created = not local.exists()
            local.mkdir(parents=True, exist_ok=True)
            self._lock(local / LOCK_FILE)
        elif self.location.kind() == "file":  # an unreachable store: its one ConfigError line
            return  # not a folder: OutputStore.prepare refuses it with its own line
        else:
            self.cas = open_conditional(self.location)
        try:
            if self.cas is not None:
                self._take_conditionally()
            else:
                self._wait_for_other_holder()
                self._write_record()
        except BaseException:
            self.release()
            raise
        self._thread = threading.Thread(target=self._beat, name="output-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Give the output back: the holder record goes (when it is still ours), then the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        holder = self.holder()
        if holder is not None and holder.get("run_id") == self.run_id:
            try:
                if self.cas is not None:
                    self.cas.delete(HOLDER_FILE)
                else:
                    self.location.delete(HOLDER_FILE)
            except OSError:
                pass  # stale once its heartbeat stops: the next run takes it over
        if self._fd is not None:
            import fcntl

            self._remove_if_nothing_written()
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _remove_if_nothing_written(self) -> None:
        """A run that created the output folder and failed before writing anything (a
        duplicate id in the input, a bad model) leaves no folder behind."""
        local = self.location.local
        if local is None or not self._created:
            return
        try:
            if [p.name for p in local.iterdir()] == [LOCK_FILE]:
                (local / LOCK_FILE).unlink()
                local.rmdir()
        except OSError:
            pass  # something else appeared meanwhile: keep it all

    def check(self) -> None:
        """Raise LeaseLost when another run has taken this output over (before a commit or a
        sweep). When this process's last heartbeat is as old as the stale window (it was
        paused: a suspended VM, SIGSTOP), the record is read now rather than trusted."""
        if self.lost is None and self.clock() - self._last_beat >= self.stale_after_s:
            self._note_takeover(self.holder())
        if self.lost is not None:
            raise LeaseLost(self.lost)

    def _note_takeover(self, holder: dict[str, Any] | None) -> bool:
        """Set `lost` when `holder` is another run's record; True if so."""
        if holder is None or holder.get("run_id") in (None, self.run_id):
            return False
        self.lost = (
            f"output {self.location.uri}: taken over by run {holder.get('run_id')} on "
            f"{holder.get('host')} (pid {holder.get('pid')}) while this run was paused past "
            "its lease; this run commits nothing more"
        )
        return True

    def holder(self) -> dict[str, Any] | None:
        """The holder record on the output, None when absent or unreadable (`unreadable`
        then says why: the store failed to answer, which is not a released lease)."""
        self.unreadable = None
        try:
            if self.cas is not None:
                found = self.cas.read(HOLDER_FILE)
                data, self._seen_tag = found if found is not None else (None, None)
            else:
                data = self.location.read_bytes(HOLDER_FILE)
        except OSError as err:
            self.unreadable = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            return None
        try:
            record = json.loads(data) if data else None
        except ValueError:
            return None  # a damaged record: a dead holder's (see `seconds`)
        return record if isinstance(record, dict) else None

    # -- how ----------------------------------------------------------------------------------
    def _lock(self, path: Any) -> None:
        import fcntl

        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputBusyError(self._busy_line(self.holder())) from None
            except OSError:
                os.close(fd)  # a filesystem without locks: the holder record alone decides
                return
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)  # a failed first run removed it meanwhile: lock the file now there

    def _wait_for_other_holder(self) -> None:
        """Return once no other live run holds the record; raise OutputBusyError when one does.

        A record written in this process space (same kernel and pid namespace) whose pid is
        gone and whose lock this run won is a dead run's: taken over at once. A record that
        cannot be read is watched as a live one, and refused after the stale window. Any other is judged by watching it on this host's clock,
        never by comparing its timestamp with ours (the clocks of two hosts may differ by
        minutes): a record that changes is a live holder's (refused at once); one unchanged
        for the rest of the stale window is a dead one's. A record whose timestamp is already
        that old is still watched for two heartbeats, so a live holder whose clock lags
        is seen beating, not taken over."""
        holder = self.holder()
        if (
            holder is None
            and self.unreadable is None
            or (holder is not None and holder.get("run_id") == self.run_id)
        ):
            return
        if holder is not None and self._fd is not None and self._same_space_dead(holder):
            return  # its process would still hold the lock if it were alive
        first = (holder or {}).get("run_id"), (holder or {}).get("heartbeat")
        age = self.clock() - seconds((holder or {}).get("heartbeat"))
        watch = min(self.stale_after_s, max(2 * self.heartbeat_s, self.stale_after_s - age))
        since = self.clock()
        while self.clock() - since < watch or self.unreadable is not None:
            if self.unreadable is not None and self.clock() - since >= self.stale_after_s:
                raise OutputBusyError(
                    f"output.path {self.location.uri}: its lease record cannot be read "
                    f"({self.unreadable}); fix the store's access, or remove {HOLDER_FILE}"
                )
            self.sleep(min(2.0, self.heartbeat_s / 2))
            holder = self.holder()
            if holder is None and self.unreadable is None:
                return  # released meanwhile
            if holder is not None and (holder.get("run_id"), holder.get("heartbeat")) != first:
                raise OutputBusyError(self._busy_line(holder))

    def _same_space_dead(self, holder: dict[str, Any]) -> bool:
        """True when `holder` ran under this kernel and pid namespace and its pid is gone:
        with the lock won as well, it is dead. Containers share a kernel, not a pid
        namespace; a live pid (or one reused since) is left to the watch instead."""
        if holder.get("kernel") != self.kernel:
            return False
        pid = holder.get("pid")
        if not isinstance(pid, int) or pid == os.getpid():
            return not isinstance(pid, int)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # alive, another user's
        return False

    def _record(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "host": self.host,
            "kernel": self.kernel,
            "pid": os.getpid(),
            "started": round(self.started, 3),
            "heartbeat": round(self.clock(), 3),
        }

    def _take_conditionally(self) -> None:
        """Create the record, or replace a dead holder's: each write succeeds only on the
        version it was decided on, so of two runs racing for one output exactly one wins."""
        while True:
            record = json.dumps(self._record()).encode()
            assert self.cas is not None
            tag = self.cas.create(HOLDER_FILE, record)
            if tag is None:
                self._wait_for_other_holder()  # returns once it is released or dead
                if self._seen_tag is None:
                    continue  # released: create it again
                record = json.dumps(self._record()).encode()
                tag = self.cas.swap(HOLDER_FILE, record, self._seen_tag)
                if tag is None:
                    continue  # another run got there first: judge the new holder
            self._tag = tag
            self._last_beat = self.clock()
            return

    def _write_record(self) -> None:
        """Write this run's record (a heartbeat); on a URI with conditional writes, only over
        the version this run wrote last: LeaseLost's cause is set when another run's is there."""
        data = json.dumps(self._record()).encode()
        if self.cas is None or self._tag is None:
            self.location.write_bytes_atomic(HOLDER_FILE, data)
        else:
            tag = self.cas.swap(HOLDER_FILE, data, self._tag)
            if tag is None:
                tag = self.cas.create(HOLDER_FILE, data)  # gone: released by mistake
            if tag is None:
                holder = self.holder()
                if holder is not None and holder.get("run_id") == self.run_id:
                    tag = self._seen_tag  # ours after all (a PUT whose answer was lost)
                else:
                    self._note_takeover(holder)
                    return
            self._tag = tag
        self._last_beat = self.clock()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if self._note_takeover(self.holder()):
                return
            try:
                self._write_record()
            except OSError:
                continue  # a full disk or a hiccup: the next beat tries again
            if self.lost is not None:
                return

    def _busy_line(self, holder: dict[str, Any] | None) -> str:
        where = self.location.uri
        if holder is None:
            return f"output.path {where}: another run holds its lock (no holder record yet)"
        age = self.clock() - seconds(holder.get("heartbeat"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds(holder.get("started"))))
        return (
            f"output.path {where}: being written by run {holder.get('run_id')} on "
            f"{holder.get('host')} (pid {holder.get('pid')}, since {since}, heartbeat "
            f"{age:.0f}s ago); wait for it to finish or stop it (a dead run's output is "
            f"taken over once its heartbeat is {self.stale_after_s:g}s old)"
        )
