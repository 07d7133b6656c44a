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

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.uname().machine != "x86_64", reason="Linux x86_64 only"
)


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
        time.sleep(0.2)
        assert victim.poll() is None
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
    assert verdict.status == "crash" and "8 MiB in its folder" in verdict.reason


def test_signals_to_other_processes_are_refused(runner):
    victim = subprocess.Popen(["sleep", "30"])
    try:
        verdict = runner.run_one(f"import os, signal\nos.kill({victim.pid}, signal.SIGKILL)")
        time.sleep(0.2)
        assert victim.poll() is None
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
