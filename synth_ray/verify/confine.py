"""Confine this process, then exec a Python program inside the confinement: the sandbox's child.

    python -I -B synth_ray/verify/confine.py '{"workdir": "/tmp/x", ...}' main.py

Run by synth_ray/verify/sandbox.py as a fresh interpreter in the program's own working folder,
in a new session, with a minimal environment and no inherited file descriptors but stdout and
stderr. It imports nothing but the standard library (it must not import the job's code) and,
before the program's first instruction, applies in this order:
- resource limits: address space (memory), CPU seconds, file size (which also caps how much
  the program can print: stdout and stderr are files), open files, no core dumps; a nice of 10,
  so the engine on the same node keeps the CPU it needs;
- `no_new_privs`, and every capability dropped (a job running as root runs its programs
  without root's powers);
- Landlock (Linux >= 5.13): read and execute only the Python installation and the system
  libraries, read and write only the working folder; no TCP bind or connect (ABI >= 4); no
  signals to or abstract sockets of processes outside (ABI >= 6);
- seccomp: no sockets (so no network of any kind), no new processes or threads, no signals
  but to itself (nor by F_SETOWN), no changing another process's limits or scheduling, no
  chmod, chown, utimes or xattrs (Landlock does not cover metadata), no ptrace, mounts,
  namespaces, kernel keyrings, io_uring, BPF.
If any step fails, it writes why to `failure_file` (outside the program's reach) and exits
with CONFINE_FAILED, and the program never runs: the sandbox never runs a program less
confined than it says.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import sys

CONFINE_FAILED = 121  # exit status: the confinement could not be applied; nothing ran

# prctl
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_SET_SECUREBITS = 28
PR_CAPBSET_DROP = 24
SECCOMP_MODE_FILTER = 2
SECBITS_LOCKED_NOROOT = 0x2F  # NOROOT, NO_SETUID_FIXUP and their locks; KEEP_CAPS locked off

# Landlock (include/uapi/linux/landlock.h); the syscall numbers are the same on every arch
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
FS_MAKE_SYM, FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15
FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2

# seccomp BPF (x86_64 only: the numbers below are its syscall table)
AUDIT_ARCH_X86_64 = 0xC000003E
RET_ALLOW, RET_KILL_PROCESS, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
EPERM, ENOSYS = 1, 38
LD_ABS_W, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
DENIED = {
    "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50, "accept4": 288,
    "fork": 57, "vfork": 58, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272,
    "setns": 308, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250,
    "add_key": 248, "request_key": 249, "kexec_load": 246, "kexec_file_load": 320,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169,
    "swapon": 167, "swapoff": 168, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_by_handle_at": 304, "name_to_handle_at": 303,
    "pidfd_open": 434, "pidfd_getfd": 438, "pidfd_send_signal": 424, "mknod": 133,
    "mknodat": 259, "acct": 163, "quotactl": 179, "execveat": 322,
    # Landlock does not govern a file's metadata: without these a program could chmod or
    # chown any file its user owns (as root: any file), e.g. make one setuid
    "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93,
    "lchown": 94, "fchownat": 260, "utime": 132, "utimes": 235, "utimensat": 280,
    "futimesat": 261, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190,
    "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199, "setxattrat": 463,
    "removexattrat": 466,
    # other processes' priority, I/O priority, memory or state
    "setpriority": 141, "ioprio_set": 251, "get_robust_list": 274, "kcmp": 312,
    "process_madvise": 440, "process_mrelease": 448,
}  # fmt: skip
CLONE, CLONE3 = 56, 435
# allowed only on the program itself (first argument 0 or its own pid): signals, and the
# calls that change a process's limits, scheduling or memory placement
SELF_ONLY = {
    "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
    "prlimit64": 302, "sched_setaffinity": 203, "sched_setscheduler": 144,
    "sched_setparam": 142, "sched_setattr": 314, "migrate_pages": 256, "move_pages": 279,
}  # fmt: skip
# fcntl/ioctl commands that make the kernel signal another process (F_SETOWN + O_ASYNC),
# and TIOCSTI (typing into a terminal); refused whatever the fd
FCNTL, IOCTL = 72, 16
FCNTL_DENIED = (8, 10, 15)  # F_SETOWN, F_SETSIG, F_SETOWN_EX
IOCTL_DENIED = (0x8901, 0x8902, 0x5412)  # FIOSETOWN, SIOCSPGRP, TIOCSTI

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class ConfineError(Exception):
    pass


def _check(result: int, what: str) -> int:
    if result < 0:
        raise ConfineError(f"{what}: {os.strerror(ctypes.get_errno())}")
    return result


def write_failure(path: str, message: str) -> None:
    """Tell the parent the confinement failed, where the program cannot write (it could print
    anything to stderr and exit with any status)."""
    with open(path, "w") as f:
        f.write(message)


def set_limits(limits: dict) -> None:
    memory = limits["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = limits["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    file_size = limits["file_bytes"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.nice(limits["nice"])


def drop_privileges() -> None:
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")
    if os.geteuid() != 0:
        return  # an unprivileged process holds no capabilities to drop
    _check(_libc.prctl(PR_SET_SECUREBITS, SECBITS_LOCKED_NOROOT, 0, 0, 0), "securebits")
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 and ctypes.get_errno() != 22:
            raise ConfineError(f"dropping capability {cap}: {os.strerror(ctypes.get_errno())}")

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    header, data = Header(0x20080522, 0), (Data * 2)()
    _check(_libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")


def landlock_abi() -> int:
    return _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)


def apply_landlock(read_paths: list[str], write_paths: list[str], device_paths: list[str]) -> int:
    """Only these paths, from now on and for every program this process executes. Returns
    the Landlock ABI used."""
    abi = landlock_abi()
    if abi < 1:
        raise ConfineError(
            "Landlock is not available on this kernel (needs Linux >= 5.13 with landlock "
            "in its lsm= list)"
        )
    handled_fs = FS_BY_ABI.get(abi, (1 << 16) - 1)
    attr = (ctypes.c_uint64 * 3)(handled_fs, 0, 0)
    size = 8
    if abi >= 4:
        attr[1], size = NET_BIND_TCP | NET_CONNECT_TCP, 16
    if abi >= 6:
        attr[2], size = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL, 24
    ruleset = _check(
        _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0), "landlock"
    )
    read = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
    write = read | FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_DIR | FS_MAKE_REG
    write |= FS_TRUNCATE if abi >= 3 else 0
    rules = [(p, read) for p in read_paths] + [(p, write) for p in write_paths]
    rules += [(p, FS_READ_FILE | FS_WRITE_FILE) for p in device_paths]
    for path, access in rules:
        _add_path_rule(ruleset, path, access & handled_fs)
    _check(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    os.close(ruleset)
    return abi


def _add_path_rule(ruleset: int, path: str, access: int) -> None:
    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            access &= FS_FILE_RIGHTS
        rule = PathBeneath(access, fd)
        _check(
            _libc.syscall(
                SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0
            ),
            f"landlock rule for {path}",
        )
    finally:
        os.close(fd)


def seccomp_program(pid: int) -> list[tuple[int, int, int, int]]:
    """The filter: (code, jt, jf, k) instructions, jumps resolved from the labels below."""
    body: list[tuple[int, object, object, int]] = [
        (LD_ABS_W, 0, 0, 4),  # arch
        (JEQ, 0, "kill", AUDIT_ARCH_X86_64),
        (LD_ABS_W, 0, 0, 0),  # syscall number
        (JGE, "kill", 0, 0x40000000),  # the x32 ABI's numbers
        *[(JEQ, "eperm", 0, nr) for nr in DENIED.values()],
        (JEQ, "enosys", 0, CLONE3),  # glibc then falls back to clone, which is refused
        (JEQ, "eperm", 0, CLONE),  # no processes and no threads: a thread bomb would
        # exhaust the host's pids, and nothing else bounds the number of threads
        (JEQ, "fcntl", 0, FCNTL),
        (JEQ, "ioctl", 0, IOCTL),
        *[(JEQ, "self", 0, nr) for nr in SELF_ONLY.values()],
        (RET, 0, 0, RET_ALLOW),
        ("fcntl", None, None, 0),
        (LD_ABS_W, 0, 0, 24),  # args[1], low word: the command
        *[(JEQ, "eperm", 0, cmd) for cmd in FCNTL_DENIED],
        (RET, 0, 0, RET_ALLOW),
        ("ioctl", None, None, 0),
        (LD_ABS_W, 0, 0, 24),
        *[(JEQ, "eperm", 0, cmd) for cmd in IOCTL_DENIED],
        (RET, 0, 0, RET_ALLOW),
        ("self", None, None, 0),
        (LD_ABS_W, 0, 0, 20),  # args[0], high word: nonzero for a negative pid (a group)
        (JEQ, 0, "eperm", 0),
        (LD_ABS_W, 0, 0, 16),
        (JEQ, "allow", 0, pid),
        (JEQ, "allow", "eperm", 0),
        ("allow", None, None, 0),
        (RET, 0, 0, RET_ALLOW),
        ("eperm", None, None, 0),
        (RET, 0, 0, RET_ERRNO | EPERM),
        ("enosys", None, None, 0),
        (RET, 0, 0, RET_ERRNO | ENOSYS),
        ("kill", None, None, 0),
        (RET, 0, 0, RET_KILL_PROCESS),
    ]
    labels: dict[str, int] = {}
    code: list[tuple[int, object, object, int]] = []
    for item in body:
        if isinstance(item[0], str):
            labels[item[0]] = len(code)
        else:
            code.append(item)

    def offset(target: object, at: int) -> int:
        return target if isinstance(target, int) else labels[str(target)] - at - 1

    program = [(c, offset(jt, i), offset(jf, i), k) for i, (c, jt, jf, k) in enumerate(code)]
    if any(not 0 <= jt <= 255 or not 0 <= jf <= 255 for _, jt, jf, _ in program):
        raise ConfineError("seccomp filter: a jump is out of range")  # a BPF jump is 8 bits
    return program


def apply_seccomp() -> None:
    if platform.machine() != "x86_64":
        raise ConfineError(f"the seccomp filter knows x86_64 only, not {platform.machine()}")

    class Filter(ctypes.Structure):
        _fields_ = [
            ("code", ctypes.c_uint16),
            ("jt", ctypes.c_uint8),
            ("jf", ctypes.c_uint8),
            ("k", ctypes.c_uint32),
        ]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    instructions = seccomp_program(os.getpid())
    filters = (Filter * len(instructions))(*[Filter(*i) for i in instructions])
    program = Program(len(instructions), filters)
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0), "seccomp")


def main(argv: list[str]) -> None:
    settings, program = json.loads(argv[1]), argv[2]
    try:
        set_limits(settings["limits"])
        drop_privileges()
        apply_landlock(settings["read_paths"], [settings["workdir"]], settings["devices"])
        apply_seccomp()
    except (ConfineError, OSError, ValueError) as err:
        write_failure(settings["failure_file"], str(err))
        os._exit(CONFINE_FAILED)
    os.execv(sys.executable, [sys.executable, "-I", "-B", program])


if __name__ == "__main__":
    main(sys.argv)
