"""Run untrusted generated Python programs and say whether they passed: the code checker.

    python -c "from synth_ray.verify.sandbox import *; print(CodeRunner(SandboxConfig()).run(['print(6 * 7)']))"

Each program runs in its own fresh interpreter (verify/confine.py confines it before its first
instruction), in a new temporary working folder that is deleted afterwards, with:
- a wall-time limit (`timeout_s`; the whole process group is killed), a CPU-time backstop, an
  address-space limit (`memory_mb`), a cap on what it prints (`output_kb`; stdout and stderr
  are files the kernel stops at `file_mb`, and only the first `output_kb` is read back) and on
  each file it writes (`file_mb`: fatal, SIGXFSZ cannot be ignored) and on its folder
  (`folder_mb`: a tmpfs of that size where the kernel allows namespaces, else scanned every
  0.1 s through open folder handles);
- its own IPC, mount and network namespaces where the kernel allows them;
- a default-deny syscall filter (verify/syscall_policy.py through libseccomp): no sockets of
  any kind, no SysV or POSIX IPC, no new processes or threads, no signals but to itself, ...;
- read access to the Python installation and system libraries only: not the job's config,
  input, output or any other file; write access to its working folder only (Landlock);
- an environment of a few fixed variables: none of the job's (no tokens, no keys).
A program's verdict is `pass` (exit status 0), `fail` (it raised or exited non-zero: the reason
is its last error line, e.g. `AssertionError`), `timeout` or `crash` (killed by a limit or a
signal: the reason names which), and goes into the row. Nothing a program does makes the
runner raise. `CodeRunner.run` runs many at once in a bounded pool (`workers`, default a
quarter of the node's CPUs), at nice 10, so checking never starves the engine it runs beside.
What it does not protect against: kernel exploits (the confinement is the kernel's own:
namespaces, seccomp and Landlock; it is not a VM), reading files under the Python prefix and
system library folders, the metadata (stat) of any file, files deleted while kept open
(bounded by 32 open files x `file_mb`), and CPU or memory bandwidth taken from the node within
the limits.
It needs Linux >= 5.13 with Landlock enabled and libseccomp; elsewhere `CodeRunner` refuses at
once with one line saying what is missing, rather than run programs less confined.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat as stat_module
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from synth_ray.errors import ConfigError
from synth_ray.sections import RUNTIME, Section

CONFINE_SCRIPT = str(Path(__file__).with_name("confine.py"))
_REASON_CHARS = 200
_POLL_S = 0.1
_MAX_ENTRIES = 10_000  # files and folders a program may make in its working folder
_MAX_DEPTH = 64  # folders nested deeper end the program (the scan holds a descriptor a level)
_SYSTEM_LIBRARIES = ["/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib"]
_SYSTEM_FILES = ["/etc/ld.so.cache", "/etc/localtime", "/usr/share/zoneinfo"]
_DEVICES = ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"]
_ENVIRONMENT = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "OPENBLAS_NUM_THREADS": "1",  # a numpy import must not start a thread per core
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


class SandboxError(RuntimeError):
    """The sandbox itself could not run (no Landlock, not x86_64): no program was run."""


class SandboxConfig(Section):
    """Limits for each generated program the checker runs."""

    timeout_s: float = Field(10.0, gt=0, le=600, description="Wall time per program.")
    memory_mb: int = Field(512, ge=64, description="Address space per program, in MiB.")
    output_kb: int = Field(64, ge=1, description="Output read back per program, in KiB.")
    file_mb: int = Field(16, ge=1, description="Largest file (or output) a program may write.")
    folder_mb: int = Field(64, ge=1, description="Total size of a program's working folder.")
    workers: int = Field(
        0,
        ge=0,
        description="Programs run at once on a node; 0: a quarter of its CPUs, at least 1.",
        json_schema_extra=RUNTIME,
    )


Status = Literal["pass", "fail", "timeout", "crash"]


@dataclass(frozen=True)
class Verdict:
    status: Status
    reason: str  # one short line; "" for a pass
    stdout: str  # at most output_kb of it

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def read_paths() -> list[str]:
    """What a program may read and execute: this Python (prefix, stdlib, site-packages, the
    interpreter's real folder) and the system's shared libraries, each also by its real path
    (Landlock follows the file, not the link). Never `/`."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths |= {p for k, p in sysconfig.get_paths().items() if k != "scripts"}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    paths.add(os.path.dirname(sys.executable))
    paths.update(_SYSTEM_LIBRARIES + _SYSTEM_FILES)
    resolved = paths | {os.path.realpath(p) for p in paths}
    return sorted(p for p in resolved if p != "/" and os.path.exists(p))


class CodeRunner:
    """Runs programs under one `SandboxConfig`; safe to share between threads. It may be made
    on the driver and pickled to a generator's node: what it knows of a node (its Python's
    paths, its CPUs, whether it can confine) is found on the node that runs the programs."""

    def __init__(self, config: SandboxConfig, isolate: bool = True) -> None:
        self.config = config
        # False: never namespaces nor the tmpfs folder, as on a node that allows neither (the
        # folder is then polled): for tests of that path
        self.isolate = isolate
        self._node: tuple[int, list[str]] | None = None  # (workers, read paths) of this node
        self._checked = False
        # how programs are isolated on this node: "namespaces" (their own IPC, mount and
        # network namespaces, the folder an exact tmpfs) or "none: <why>" (the folder polled)
        self.isolation: str | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_node": None, "_checked": False, "isolation": None}

    @property
    def workers(self) -> int:
        return self._node_facts()[0]

    def _node_facts(self) -> tuple[int, list[str]]:
        if self._node is None:
            workers = self.config.workers or max(1, (os.cpu_count() or 1) // 4)
            self._node = (workers, read_paths())
        return self._node

    def run(self, programs: list[str], on_each: Callable[[], None] | None = None) -> list[Verdict]:
        """A verdict per program, in order; identical programs run once. `on_each` is called
        after each one (progress, for the replica's stall detection). Raises SandboxError
        when the sandbox cannot confine anything on this node."""
        self.check_available()
        unique = list(dict.fromkeys(programs))

        def one(program: str) -> Verdict:
            verdict = self.run_one(program)
            if on_each is not None:
                on_each()
            return verdict

        if len(unique) <= 1 or self.workers == 1:
            verdicts = [one(p) for p in unique]
        else:
            with ThreadPoolExecutor(min(self.workers, len(unique))) as pool:
                verdicts = list(pool.map(one, unique))
        by_program = dict(zip(unique, verdicts, strict=True))
        return [by_program[p] for p in programs]

    def check_available(self) -> None:
        """Run an empty program once: a node without Landlock or seccomp fails here."""
        if self._checked:
            return
        verdict = self.run_one("")
        if not verdict.passed:
            raise SandboxError(f"the code sandbox cannot run here: {verdict.reason}")
        self._checked = True

    def run_one(self, program: str) -> Verdict:
        config = self.config
        if len(program.encode("utf-8", "surrogatepass")) > config.folder_mb << 20:
            return Verdict("crash", f"the program alone is over {config.folder_mb} MiB", "")
        workdir = tempfile.mkdtemp(prefix="synth-ray-sandbox-")
        captured = tempfile.mkdtemp(prefix="synth-ray-sandbox-out-")  # outside its reach
        process: subprocess.Popen | None = None
        try:
            main = Path(workdir, "main.py")
            main.write_text(program)
            settings = {
                "workdir": workdir,
                "isolate": self.isolate,
                "read_paths": self._node_facts()[1],
                "devices": _DEVICES,
                "limits": {
                    "memory_bytes": config.memory_mb << 20,
                    "cpu_s": int(config.timeout_s) + 1,
                    "file_bytes": config.file_mb << 20,
                    # with file_mb, this bounds what files deleted but kept open can hold
                    # (the folder check cannot see them): 32 x 16 MiB by default
                    "open_files": 32,
                    "nice": 10,
                    "folder_bytes": config.folder_mb << 20,
                    "folder_entries": _MAX_ENTRIES,
                },
            }
            out_path, err_path = Path(captured, "stdout"), Path(captured, "stderr")
            failure = Path(captured, "confine-failed")
            failure.touch()
            settings["failure_file"] = str(failure)
            isolation = Path(captured, "isolation")
            settings["isolation_file"] = str(isolation)
            with out_path.open("wb") as out, err_path.open("wb") as err:
                process = subprocess.Popen(
                    [sys.executable, "-I", "-B", CONFINE_SCRIPT, json.dumps(settings), "main.py"],
                    cwd=workdir,
                    env={**_ENVIRONMENT, "HOME": workdir, "TMPDIR": workdir},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                )
                limit = self._wait(process, workdir)
            if failure.stat().st_size:
                raise SandboxError(f"the code sandbox cannot run here: {failure.read_text()}")
            if isolation.exists() and self.isolation is None:
                self.isolation = isolation.read_text()[:_REASON_CHARS]
            if limit is not None:
                return Verdict(*limit, _read_capped(out_path, self.config.output_kb << 10))
            return self._verdict(process.returncode, out_path, err_path)
        except SandboxError:
            raise  # nothing was confined: not a program's doing
        except Exception as err:  # noqa: BLE001 - whatever a program did, a verdict
            why = " ".join(f"sandbox: {type(err).__name__}: {err}".split())
            return Verdict("crash", why[:_REASON_CHARS], "")
        finally:
            if process is not None and process.poll() is None:  # never left running
                _kill_group(process)
            _remove(workdir)
            _remove(captured)

    def _wait(self, process: subprocess.Popen, workdir: str) -> tuple[Status, str] | None:
        """Wait for the program; kill its process group at a limit and return that limit's
        (status, reason)."""
        deadline = time.monotonic() + self.config.timeout_s
        while True:
            try:
                process.wait(_POLL_S)
                return None  # it ended by itself (it cannot have started any other process)
            except subprocess.TimeoutExpired:
                pass
            reason = None
            usage = folder_usage(workdir)
            if time.monotonic() >= deadline:
                reason = ("timeout", f"ran past {self.config.timeout_s:g} s")
            elif usage.unreadable:
                why = " ".join(usage.unreadable.split())  # a name it chose: one line
                reason = ("crash", f"made a folder the checker cannot scan ({why})")
            elif usage.bytes > self.config.folder_mb << 20:
                reason = ("crash", f"wrote over {self.config.folder_mb} MiB in its folder")
            elif usage.entries > _MAX_ENTRIES:
                reason = ("crash", f"made over {_MAX_ENTRIES:,} files in its folder")
            elif usage.depth > _MAX_DEPTH:
                reason = ("crash", f"nested folders over {_MAX_DEPTH} deep")
            if reason is not None:
                _kill_group(process)
                return reason

    def _verdict(self, code: int, out_path: Path, err_path: Path) -> Verdict:
        """The verdict of a program that ended by itself."""
        cap = self.config.output_kb << 10
        with out_path.open("rb") as f:
            stdout = f.read(cap + 1)
        stdout_text = stdout[:cap].decode("utf-8", "replace")
        error_line = _last_line(err_path)
        if code < 0:
            return Verdict("crash", _signal_reason(-code, self.config), stdout_text)
        if max(out_path.stat().st_size, err_path.stat().st_size) >= self.config.file_mb << 20:
            # it reached the cap with SIGXFSZ blocked (rt_sigprocmask cannot be filtered by
            # its set): the output was cut all the same, and that is not a pass
            reason = f"wrote or printed over {self.config.file_mb} MiB"
            return Verdict("crash", reason, stdout_text)
        if len(stdout) > cap:  # what it printed to stderr is only searched for its error line
            return Verdict("crash", f"printed over {self.config.output_kb} KiB", stdout_text)
        if code != 0 and error_line.startswith("MemoryError"):
            return Verdict("crash", f"over its {self.config.memory_mb} MiB memory", stdout_text)
        if code != 0:
            return Verdict("fail", error_line or f"exit status {code}", stdout_text)
        return Verdict("pass", "", stdout_text)


def _kill_group(process: subprocess.Popen) -> None:
    """Kill a program that is still running, not reaped (so its pid and group cannot have been
    reused), and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _read_capped(path: Path, cap: int) -> str:
    with path.open("rb") as f:
        return f.read(cap).decode("utf-8", "replace")


def _signal_reason(number: int, config: SandboxConfig) -> str:
    if number == signal.SIGXFSZ:
        return f"wrote or printed over {config.file_mb} MiB"
    if number == signal.SIGXCPU:
        return f"used over {int(config.timeout_s) + 1} s of CPU"
    if number == signal.SIGKILL:
        return "killed by SIGKILL (its CPU limit, or the kernel out of memory)"
    try:
        return f"killed by {signal.Signals(number).name}"
    except ValueError:  # a real-time signal (SIGRTMIN..SIGRTMAX) has no name
        return f"killed by signal {number}"


def _last_line(path: Path) -> str:
    """The last non-empty line of a file (reading only its end): a traceback's error line."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 4096))
        tail = f.read().decode("utf-8", "replace")
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[-1][:_REASON_CHARS] if lines else ""


@dataclass
class FolderUsage:
    bytes: int = 0
    entries: int = 0
    depth: int = 0
    unreadable: str = ""  # why a part of it could not be scanned; never skipped


def folder_usage(folder: str) -> FolderUsage:
    """What a program's folder holds, scanned through open folder handles (`os.fwalk`), so no
    path length hides anything; counting stops past _MAX_ENTRIES entries or _MAX_DEPTH
    levels, and a folder that cannot be listed is reported, never skipped."""
    usage = FolderUsage()
    base = folder.rstrip(os.sep).count(os.sep)

    def unreadable(err: OSError) -> None:
        usage.unreadable = usage.unreadable or f"{err.strerror}: {err.filename}"[:120]

    try:
        for root, dirs, files, root_fd in os.fwalk(folder, onerror=unreadable):
            usage.depth = max(usage.depth, root.count(os.sep) - base)
            if usage.depth > _MAX_DEPTH:
                return usage
            for name in dirs + files:
                usage.entries += 1
                if usage.entries > _MAX_ENTRIES:
                    return usage
                try:
                    stat = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed since the listing
                usage.bytes += stat.st_blocks * 512
    except OSError as err:
        unreadable(err)
    return usage


def _remove(folder: str) -> None:
    """Delete a working folder whatever the program left in it (it cannot chmod by path, but
    it can make a folder with mode 0): everything inside made accessible, then removed.
    Never raises: a folder that cannot be removed must not fail the job."""
    shutil.rmtree(folder, ignore_errors=True)
    if not os.path.exists(folder):
        return
    try:
        os.chmod(folder, 0o700)
        for _, dirs, _, root_fd in os.fwalk(folder):
            for name in dirs:
                try:  # never through a link: the program is gone, so nothing can swap it
                    if stat_module.S_ISDIR(
                        os.stat(name, dir_fd=root_fd, follow_symlinks=False).st_mode
                    ):
                        os.chmod(name, 0o700, dir_fd=root_fd)
                except OSError:
                    pass
    except OSError:
        pass
    shutil.rmtree(folder, ignore_errors=True)


def sandbox_or_config_error(config: SandboxConfig, key: str) -> CodeRunner:
    """A CodeRunner, checked on this node: a node that cannot confine programs is a one-line
    ConfigError naming the config key that asked for code checking."""
    runner = CodeRunner(config)
    try:
        runner.check_available()
    except SandboxError as err:
        raise ConfigError(f"config key {key}: {err}") from None
    return runner
