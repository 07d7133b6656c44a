"""The code sandbox's promises, each an escape attempt that would succeed without its limit.

    python -m pytest tests/test_sandbox.py

Every program here is real and runs in the real sandbox (verify/sandbox.py): an infinite loop,
a memory bomb, a (bounded) fork bomb, a socket connect to a live server, reading the job's
config and environment, writing outside its folder, printing without end, signalling another
process. Each test fails if the limit it covers is removed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synth_ray.errors import ConfigError
from synth_ray.verify import sandbox
from synth_ray.verify.sandbox import CodeRunner, SandboxConfig, sandbox_or_config_error

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux only")


@pytest.fixture(scope="module")
def runner() -> CodeRunner:
    return CodeRunner(SandboxConfig(timeout_s=3, memory_mb=256, output_kb=16, folder_mb=8))


def test_a_correct_program_passes_with_its_output(runner):
    verdict = runner.run_one("import math\nprint(math.factorial(5))")
    assert verdict.passed and verdict.stdout == "120\n" and verdict.reason == ""


def test_a_failing_assertion_is_a_fail_with_its_error_line(runner):
    verdict = runner.run_one("def f(x):\n    return x + 1\nassert f(1) == 3, 'f(1) is 2'")
    assert verdict.status == "fail"
    assert verdict.reason == "AssertionError: f(1) is 2"


def test_infinite_loop_is_killed_at_the_wall_time_limit(runner):
    started = time.monotonic()
    verdict = runner.run_one("while True:\n    pass")
    assert verdict.status == "timeout" and verdict.reason == "ran past 3 s"
    assert time.monotonic() - started < 10


def test_sleeping_program_is_killed_at_the_wall_time_limit(runner):
    verdict = runner.run_one("import time\ntime.sleep(60)")
    assert verdict.status == "timeout"


def test_memory_bomb_stops_at_the_memory_limit(runner):
    # 3 GiB would be granted on this machine without the limit
    verdict = runner.run_one("block = bytearray(3 * 1024**3)\nprint(len(block))")
    assert verdict.status == "crash" and "256 MiB memory" in verdict.reason
    assert verdict.stdout == ""


def test_fork_bomb_cannot_start_a_single_process(runner):
    program = (
        "import os, time\n"
        "started = 0\n"
        "for _ in range(20):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as err:\n"
        "        print('refused', err.errno)\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    started += 1\n"
        "print('started', started)\n"
    )
    verdict = runner.run_one(program)
    assert verdict.passed
    assert verdict.stdout.split("\n")[:2] == ["refused 1", "started 0"]


def test_no_process_and_no_thread_by_any_route(runner):
    """Not a process (subprocess) and not a thread: nothing else bounds a thread bomb, which
    would take the host's pids. numpy still imports (its BLAS is told to use one thread)."""
    spawn = runner.run_one("import subprocess\nsubprocess.run(['/bin/true'])")
    assert spawn.status == "fail" and "PermissionError" in spawn.reason
    bomb = runner.run_one(
        "import threading, time\nstarted = 0\ntry:\n"
        "    for _ in range(50):\n"
        "        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "        started += 1\n"
        "finally:\n    print('started', started)\n"
    )
    assert bomb.status == "fail" and bomb.stdout == "started 0\n"
    numpy = runner.run_one("import numpy\nprint(int(numpy.arange(4).sum()))")
    assert numpy.passed and numpy.stdout == "6\n"


def test_files_outside_cannot_be_chmodded_or_chowned(runner, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("x")
    os.chmod(victim, 0o644)
    verdict = runner.run_one(
        f"import os\nfor call in (lambda: os.chmod({str(victim)!r}, 0o4777),\n"
        f"             lambda: os.chown({str(victim)!r}, 0, 0),\n"
        f"             lambda: os.utime({str(victim)!r}, (0, 0))):\n"
        "    try:\n        call()\n        print('changed')\n"
        "    except PermissionError:\n        print('refused')\n"
    )
    assert verdict.passed and verdict.stdout == "refused\nrefused\nrefused\n"
    assert victim.stat().st_mode & 0o7777 == 0o644 and victim.stat().st_mtime > 0


def test_limits_of_other_processes_cannot_be_changed(runner):
    import resource

    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    verdict = runner.run_one(
        "import os, resource\nresource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (77, 77))"
    )
    assert verdict.status == "fail" and "PermissionError" in verdict.reason
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before
    own = runner.run_one("import resource\nresource.prlimit(0, resource.RLIMIT_CORE, (0, 0))")
    assert own.passed


def test_no_signal_through_f_setown(runner):
    """fcntl(F_SETOWN) + O_ASYNC makes the kernel signal a chosen process: refused (on kernels
    whose Landlock cannot scope signals this is the only guard)."""
    victim = subprocess.Popen(["sleep", "30"])
    try:
        verdict = runner.run_one(
            "import fcntl, os, signal\nr, w = os.pipe()\n"
            f"fcntl.fcntl(r, fcntl.F_SETOWN, {victim.pid})\n"
            "fcntl.fcntl(r, 10, signal.SIGTERM)\n"
            "fcntl.fcntl(r, fcntl.F_SETFL, os.O_ASYNC)\nos.write(w, b'x')\n"
        )
        with pytest.raises(subprocess.TimeoutExpired):  # it would die within this
            victim.wait(0.5)
    finally:
        victim.kill()
        victim.wait()
    assert verdict.status == "fail" and "PermissionError" in verdict.reason


def test_a_program_cannot_fake_a_confinement_failure(runner):
    verdict = runner.run_one(
        "import sys\nprint('sandbox: Landlock is not available', file=sys.stderr)\nsys.exit(121)"
    )
    assert verdict.status == "fail" and "Landlock" in verdict.reason


def test_socket_connect_never_reaches_a_live_server(runner):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        verdict = runner.run_one(
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'leak')\nprint('connected')"
        )
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()
    assert verdict.status == "fail" and "PermissionError" in verdict.reason
    assert "connected" not in verdict.stdout


def test_udp_and_unix_sockets_are_refused(runner, tmp_path):
    udp = runner.run_one("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)")
    unix = runner.run_one("import socket\nsocket.socket(socket.AF_UNIX)")
    assert "PermissionError" in udp.reason and "PermissionError" in unix.reason


def test_the_jobs_config_and_files_cannot_be_read(runner, tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("secret: hunter2\n")
    os.chmod(config, 0o644)
    verdict = runner.run_one(f"print(open({str(config)!r}).read())")
    assert verdict.status == "fail" and "PermissionError" in verdict.reason
    assert "hunter2" not in verdict.stdout
    listing = runner.run_one(f"import os\nprint(os.listdir({str(tmp_path)!r}))")
    assert listing.status == "fail" and "job.yaml" not in listing.stdout


def test_environment_variables_do_not_reach_the_program(runner, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    verdict = runner.run_one(
        "import os\nprint(sorted(os.environ))\nprint(os.environ.get('HF_TOKEN'))\n"
        "for path in ('/proc/self/environ', f'/proc/{os.getppid()}/environ'):\n"
        "    try:\n"
        "        print(open(path, 'rb').read())\n"
        "    except OSError as err:\n"
        "        print('denied', type(err).__name__)\n"
    )
    assert verdict.passed
    assert "hf_secret_value" not in verdict.stdout and "HF_TOKEN" not in verdict.stdout
    assert verdict.stdout.count("denied PermissionError") == 2


def test_writing_outside_its_folder_is_refused(runner, tmp_path):
    target = tmp_path / "escaped.txt"
    os.chmod(tmp_path, 0o777)
    verdict = runner.run_one(f"open({str(target)!r}, 'w').write('x')")
    assert verdict.status == "fail" and "PermissionError" in verdict.reason
    assert not target.exists()
    inside = runner.run_one(
        "open('notes.txt', 'w').write('x' * 100)\nprint(open('notes.txt').read(3))"
    )
    assert inside.passed and inside.stdout == "xxx\n"


def test_printing_without_end_stops_and_is_capped(runner):
    started = time.monotonic()
    verdict = runner.run_one("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    assert verdict.status == "crash"
    assert len(verdict.stdout) <= 16 * 1024
    assert time.monotonic() - started < 10


def test_filling_its_folder_is_stopped(runner):
    program = (
        "i = 0\n"
        "while True:\n"
        "    with open(f'f{i}', 'wb') as f:\n"
        "        f.write(b'x' * (1 << 20))\n"
        "    i += 1\n"
    )
    verdict = runner.run_one(program)
    if runner.isolation == "namespaces":  # a tmpfs of 8 MiB: the writes themselves fail
        assert verdict.status == "fail" and "No space left on device" in verdict.reason
    else:  # scanned: killed
        assert verdict.status == "crash" and "8 MiB in its folder" in verdict.reason


def test_signals_to_other_processes_are_refused(runner):
    victim = subprocess.Popen(["sleep", "30"])
    try:
        verdict = runner.run_one(f"import os, signal\nos.kill({victim.pid}, signal.SIGKILL)")
        with pytest.raises(subprocess.TimeoutExpired):  # a killed victim would be reaped here
            victim.wait(0.5)
        group = runner.run_one("import os, signal\nos.kill(-1, signal.SIGTERM)")
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert verdict.status == "fail" and "PermissionError" in verdict.reason
    assert group.status == "fail" and "PermissionError" in group.reason


def test_working_folders_are_deleted_even_when_made_unreadable(runner, monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox.tempfile, "tempdir", str(tmp_path))
    verdict = runner.run_one(
        "import os\nos.mkdir('d')\nopen('d/f', 'w').write('x')\nos.mkdir('d/locked', 0)\n"
        "os.mkdir('hidden', 0o300)\nprint('made')"
    )
    assert verdict.stdout == "made\n"
    assert list(tmp_path.iterdir()) == []


def test_many_programs_run_in_a_bounded_pool_in_order():
    pooled = CodeRunner(SandboxConfig(timeout_s=5, workers=2))
    programs = [f"print({i} * 2)" for i in range(5)] + ["print(0 * 2)"]
    verdicts = pooled.run(programs)
    assert [v.stdout for v in verdicts] == [f"{i * 2}\n" for i in range(5)] + ["0\n"]


def test_a_node_that_cannot_confine_is_refused_with_one_line(monkeypatch, tmp_path):
    fake = tmp_path / "confine.py"
    fake.write_text(
        "import json, sys\nsettings = json.loads(sys.argv[1])\n"
        "open(settings['failure_file'], 'w').write('Landlock is not available on this kernel')\n"
        "sys.exit(121)\n"
    )
    monkeypatch.setattr(sandbox, "CONFINE_SCRIPT", str(fake))
    with pytest.raises(ConfigError) as err:
        sandbox_or_config_error(SandboxConfig(), "self_improve.sandbox")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("config key self_improve.sandbox: the code sandbox cannot run")
    assert "Landlock is not available" in message


def test_the_program_cannot_see_the_sandbox_settings(runner):
    verdict = runner.run_one("import sys\nprint(sys.argv)\nprint(sys.flags.isolated)")
    assert verdict.passed and verdict.stdout == "['main.py']\n1\n"
    assert Path(sandbox.CONFINE_SCRIPT).is_file()


# --- default deny: what the red team found open (issue 27) -----------------------------------

LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"


def refused(program_lines: str) -> str:
    """A program printing `refused <name>` for each call that failed with EPERM or ENOSYS."""
    return LIBC + program_lines


def test_sysv_ipc_and_message_queues_are_refused(runner):
    verdict = runner.run_one(
        refused(
            "for name, call in [\n"
            "    ('shmget', lambda: libc.shmget(0, 128 << 20, 0o1600)),\n"
            "    ('msgget', lambda: libc.msgget(0, 0o1600)),\n"
            "    ('semget', lambda: libc.semget(0, 1, 0o1600)),\n"
            "    ('shmctl', lambda: libc.shmctl(0, 2, None)),\n"  # IPC_INFO: list segments
            "    ('mq_open', lambda: libc.syscall(240 if os.uname().machine == 'x86_64' else 180,"
            " b'q', 0o100 | 2, 0o600, None)),\n"
            "]:\n"
            "    print(name, call(), ctypes.get_errno())\n"
        )
    )
    assert verdict.passed, verdict.reason
    for line in verdict.stdout.splitlines():
        name, result, errno = line.split()
        assert (result, errno) == ("-1", "1"), line


def test_socketpair_and_every_socket_are_refused(runner):
    verdict = runner.run_one(
        "import socket\nfor family, kind in [(socket.AF_UNIX, socket.SOCK_DGRAM),"
        " (socket.AF_UNIX, socket.SOCK_STREAM)]:\n"
        "    try:\n"
        "        socket.socketpair(family, kind)\n"
        "        print('open')\n"
        "    except PermissionError:\n"
        "        print('refused')\n"
    )
    assert verdict.stdout == "refused\nrefused\n"


def test_new_and_unknown_syscalls_are_refused(runner):
    """inotify, fanotify, AIO, listmount/statmount (newer than this filter's libseccomp),
    memfd, fallocate: none is on the allowlist."""
    verdict = runner.run_one(
        refused(
            "x86 = os.uname().machine == 'x86_64'\n"
            "calls = [\n"
            "    ('inotify_init1', lambda: libc.inotify_init1(0)),\n"
            "    ('fanotify_init', lambda: libc.fanotify_init(0, 0)),\n"
            "    ('io_setup', lambda: libc.syscall(206 if x86 else 0, 8, ctypes.byref(ctypes.c_ulong()))),\n"
            "    ('statmount', lambda: libc.syscall(457, 0, 0, 0, 0)),\n"
            "    ('listmount', lambda: libc.syscall(458, 0, 0, 0, 0)),\n"
            "    ('memfd_create', lambda: libc.memfd_create(b'm', 0)),\n"
            "    ('no such syscall', lambda: libc.syscall(999, 0)),\n"
            "]\n"
            "for name, call in calls:\n"
            "    print(name, call(), ctypes.get_errno())\n"
            "fd = os.open('f', os.O_CREAT | os.O_WRONLY, 0o600)\n"
            "try:\n"
            "    os.posix_fallocate(fd, 0, 1 << 30)\n"
            "    print('fallocate', os.fstat(fd).st_size, 0)\n"
            "except OSError as err:\n"
            "    print('fallocate', -1, err.errno)\n"
        )
    )
    assert verdict.passed, verdict.reason
    for line in verdict.stdout.splitlines():
        *name, result, errno = line.split()
        assert result == "-1" and errno in ("1", "38"), line


def test_no_setuid_or_setgid_bit_on_what_it_creates(runner):
    verdict = runner.run_one(
        "import os\nfor mode in (0o6755, 0o4755, 0o2755):\n"
        "    try:\n"
        "        os.close(os.open(f'f{mode}', os.O_CREAT | os.O_WRONLY, mode))\n"
        "        print(oct(os.stat(f'f{mode}').st_mode))\n"
        "    except PermissionError:\n"
        "        print('refused')\n"
        "try:\n"
        "    os.mkdir('d', 0o2755)\n"
        "    print(oct(os.stat('d').st_mode))\n"
        "except PermissionError:\n"
        "    print('refused')\n"
        "os.close(os.open('plain', os.O_CREAT | os.O_WRONLY, 0o644))\n"
        "print('plain', oct(os.stat('plain').st_mode & 0o7777))\n"
    )
    assert verdict.stdout == "refused\n" * 4 + "plain 0o644\n"


def test_a_file_over_its_cap_ends_the_program_even_if_it_catches_the_error():
    """CPython ignores SIGXFSZ, which made `file_mb` an error a program could catch and go on
    from; the signal is fatal again, and cannot be ignored: for a file and for its output."""
    small_files = CodeRunner(SandboxConfig(timeout_s=5, file_mb=1, folder_mb=8))
    catching = (
        "import signal, sys\n"
        "try:\n"
        "    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "except OSError:\n"
        "    print('handler refused', flush=True)\n"
        "try:\n"
        "    {write}\n"
        "except OSError:\n"
        "    print('caught')\n"
    )
    verdicts = small_files.run(
        [
            catching.format(write="open('big', 'wb').write(b'x' * (2 << 20))"),
            catching.format(write="sys.stdout.buffer.write(b'x' * (2 << 20))"),
            # SIGXFSZ blocked (the filter cannot read a signal set): the output still stops at
            # its cap, and a capped output is no pass
            catching.format(
                write="signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGXFSZ})\n"
                "    sys.stdout.buffer.write(b'x' * (2 << 20))\n    sys.stdout.flush()"
            ),
        ]
    )
    for verdict in verdicts[:2]:
        assert verdict.status == "crash" and verdict.reason == "wrote or printed over 1 MiB"
        assert verdict.stdout.startswith("handler refused\n") and "caught" not in verdict.stdout
    assert verdicts[2].status == "crash" and verdicts[2].reason == "wrote or printed over 1 MiB"


def test_a_real_time_signal_is_a_verdict_not_an_error(runner):
    verdicts = runner.run([f"import os\nos.kill(os.getpid(), {number})" for number in (34, 40, 64)])
    assert [v.reason for v in verdicts] == [
        "killed by SIGRTMIN",
        "killed by signal 40",  # no name: signal.Signals(40) raised ValueError in the runner
        "killed by SIGRTMAX",
    ]
    assert {v.status for v in verdicts} == {"crash"}


def test_the_folder_is_a_bounded_tmpfs_where_the_kernel_allows_it(runner, tmp_path):
    """With namespaces (root here, or unprivileged user namespaces), the folder is a tmpfs of
    exactly `folder_mb`: nesting folders past PATH_MAX or allocating hides nothing, and what
    the program wrote is gone with it."""
    runner.check_available()
    assert runner.isolation == "namespaces", runner.isolation
    verdict = runner.run_one(
        "import os\nfd = os.open('.', os.O_RDONLY)\n"
        "for i in range(60):\n"
        "    os.mkdir('d' * 100, dir_fd=fd)\n"
        "    fd, parent = os.open('d' * 100, os.O_RDONLY, dir_fd=fd), fd\n"  # 6,000 bytes
        "    os.close(parent)\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(48):\n"
        "        out = os.open(f'f{i}', os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd)\n"
        "        os.write(out, b'x' * (1 << 20))\n"
        "        os.close(out)\n"
        "        written += 1\n"
        "finally:\n"
        "    print(written, 'MiB')\n"
    )
    assert verdict.status == "fail" and "No space left" in verdict.reason
    assert int(verdict.stdout.split()[0]) <= 8  # of 48: the tmpfs holds 8 MiB, not a byte more


def test_without_namespaces_the_folder_is_scanned_at_any_depth():
    """On a node without namespaces the folder is polled through open folder handles: a tree
    nested past PATH_MAX is measured, and nesting past the depth bound ends the program."""
    bare = CodeRunner(SandboxConfig(timeout_s=5, folder_mb=8), isolate=False)
    verdicts = bare.run(
        [
            "import os, time\nfd = os.open('.', os.O_RDONLY)\n"
            f"for i in range({depth}):\n"
            "    os.mkdir('d' * 100, dir_fd=fd)\n"
            "    fd, parent = os.open('d' * 100, os.O_RDONLY, dir_fd=fd), fd\n"
            "    os.close(parent)\n"
            f"for i in range({files}):\n"
            "    out = os.open(f'f{i}', os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd)\n"
            "    os.write(out, b'x' * (1 << 20))\n"
            "    os.close(out)\n"
            "time.sleep(10)\n"
            for depth, files in ((60, 12), (80, 0))
        ]
    )
    assert bare.isolation == "none: not asked"
    assert verdicts[0].status == "crash" and "8 MiB in its folder" in verdicts[0].reason
    assert verdicts[1].status == "crash" and "over 64 deep" in verdicts[1].reason


def test_an_unscannable_folder_is_a_failure_never_skipped(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "big").write_bytes(b"x" * 4096)
    real = os.scandir

    def scandir(path=".", *args):
        if (
            isinstance(path, int)
            and os.path.basename(os.readlink(f"/proc/self/fd/{path}")) == "locked"
        ):
            raise PermissionError(13, "Permission denied", "locked")
        return real(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    usage = sandbox.folder_usage(str(tmp_path))
    assert usage.unreadable.startswith("Permission denied")


NASTY = [
    "import os\nos.write(1, bytes(range(256)) * 10)",  # any bytes out
    "import sys\nsys.stderr.write('\\udcff' * 10 + '\\x00' * 5000)\nraise SystemExit(3)",
    "import os\nos.close(1)\nos.close(2)\nraise ValueError('x')",
    "import os\nos.remove('main.py')\nos.mkdir('z', 0)\nos.chdir('z') if False else None",
    "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)",  # stopped: waits for the limit
    "import ctypes\nctypes.string_at(0)",  # SIGSEGV
    "import os\nos.abort()",
    "import os\nos.kill(os.getpid(), 50)",  # a real-time signal: no name
    "import os, signal\nos.kill(0, signal.SIGKILL)",
    "import os\nos.execv('/bin/sh', ['sh', '-c', 'echo escaped'])",
    "import os\nos._exit(255)",
    "import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (0, 0))\nprint(1)",
    "raise SystemExit('\\n' * 100)",
    "import os\nfor i in range(70):\n    os.mkdir('a')\n    os.chdir('a')\nos.mkdir('x', 0o300)",
]


def test_the_runner_returns_a_verdict_whatever_the_program_does():
    nasty = CodeRunner(SandboxConfig(timeout_s=2, memory_mb=256, output_kb=4, folder_mb=8))
    bare = CodeRunner(SandboxConfig(timeout_s=2, memory_mb=256, output_kb=4, folder_mb=8),
                      isolate=False)  # fmt: skip
    for runner in (nasty, bare):
        verdicts = runner.run(NASTY)
        assert len(verdicts) == len(NASTY)
        for program, verdict in zip(NASTY, verdicts, strict=True):
            assert verdict.status in ("pass", "fail", "timeout", "crash"), (program, verdict)
            assert "\n" not in verdict.reason and len(verdict.reason) <= 200, verdict
            assert "escaped" not in verdict.stdout


ORDINARY = [
    "import numpy as np\nprint(int(np.linalg.solve(np.eye(3) * 2, np.ones(3)).sum() * 2))",
    "import sqlite3, tempfile\nwith tempfile.TemporaryDirectory(dir='.') as d:\n"
    "    db = sqlite3.connect(d + '/x.db')\n    db.execute('create table t (x)')\n"
    "    db.executemany('insert into t values (?)', [(i,) for i in range(10)])\n    db.commit()\n"
    "    print(db.execute('select sum(x) from t').fetchone()[0])",
    "import datetime, zoneinfo\n"
    "print(datetime.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo('UTC')).year)",
    "import random, statistics, fractions, decimal, heapq, itertools, functools, re, json\n"
    "random.seed(1)\nxs = [random.random() for _ in range(1000)]\n"
    "print(len(heapq.nsmallest(3, xs)), fractions.Fraction(1, 3) * 3, json.dumps({'a': 1}))",
    "import time, signal\nsignal.signal(signal.SIGALRM, lambda *a: None)\nsignal.alarm(5)\n"
    "time.sleep(0.01)\nsignal.alarm(0)\nprint('slept')",
    "import os, shutil, pathlib\npathlib.Path('a/b').mkdir(parents=True)\n"
    "pathlib.Path('a/b/f.txt').write_text('hi')\nshutil.copyfile('a/b/f.txt', 'g.txt')\n"
    "os.rename('g.txt', 'h.txt')\nprint(sorted(os.listdir('.')), open(__file__).read(6))\n"
    "shutil.rmtree('a')",
    "import subprocess\ntry:\n    subprocess.run(['true'])\nexcept OSError as err:\n"
    "    print('no processes:', type(err).__name__)",
]


def test_ordinary_programs_still_run_under_default_deny(runner):
    """What checked programs do (numpy, sqlite, time zones, files in their folder, alarms)
    passes; a process is refused with an error the program can handle."""
    verdicts = runner.run(ORDINARY)
    assert [v.status for v in verdicts] == ["pass"] * len(ORDINARY), verdicts
    assert [v.stdout.split("\n")[0] for v in verdicts][:2] == ["3", "45"]
    assert verdicts[-1].stdout == "no processes: PermissionError\n"


def test_no_truncate_or_chmod_of_files_it_can_only_read(runner):
    """Landlock governs neither chmod nor (before ABI 3) truncate: a file the program may merely
    read (its own interpreter here) must not be re-moded or cut through an open descriptor
    or a path. The mode asked is the file's own, so nothing would change if it got through."""
    verdict = runner.run_one(
        "import os, sys\nexe = os.path.realpath(sys.executable)\n"
        "fd = os.open(exe, os.O_RDONLY)\n"
        "for name, call in [('fchmod', lambda: os.fchmod(fd, os.stat(exe).st_mode & 0o7777)),\n"
        "                   ('truncate', lambda: os.truncate('main.py', 0))]:\n"
        "    try:\n"
        "        call()\n"
        "        print(name, 'allowed')\n"
        "    except PermissionError:\n"
        "        print(name, 'refused')\n"
        "x86 = os.uname().machine == 'x86_64'\n"
        "if x86:  # rt_sigaction(SIGXFSZ | 1 << 32, SIG_IGN): the kernel would cut it to 25\n"
        "    import ctypes\n"
        "    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    act = (ctypes.c_ulong * 4)(1, 0, 0, 0)\n"
        "    print('high bits', libc.syscall(13, 25 | 1 << 32, act, None, 8), ctypes.get_errno())\n"
        "else:\n"
        "    print('high bits', -1, 1)\n"
    )
    assert verdict.stdout == "fchmod refused\ntruncate refused\nhigh bits -1 1\n", verdict


def test_a_program_bigger_than_its_folder_is_a_verdict():
    small = CodeRunner(SandboxConfig(timeout_s=5, folder_mb=1))
    verdict = small.run_one("x = 1\n" + "#" * (2 << 20))
    assert verdict.status == "crash" and "over 1 MiB" in verdict.reason
