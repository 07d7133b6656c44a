"""Confine this process, then exec a Python program inside the confinement: the sandbox's child.

    python -I -B synth_ray/verify/confine.py '{"workdir": "/tmp/x", ...}' main.py

Run by synth_ray/verify/sandbox.py as a fresh interpreter in the program's own working folder,
in a new session, with a minimal environment and no inherited file descriptors but stdout and
stderr. It imports nothing but the standard library (it must not import the job's code) and,
before the program's first instruction, applies in this order:
- namespaces, where the kernel allows them (root, or an unprivileged user namespace): its own
  IPC, mount and network namespaces, and its folder a tmpfs of `folder_bytes` and
  `folder_entries` (nosuid, nodev, noexec), holding the program; elsewhere none (recorded in
  `isolation_file`, and the parent polls the folder instead);
- resource limits: address space (memory), CPU seconds, file size (which also caps how much
  the program can print: stdout and stderr are files), open files, no core dumps; a nice of 10,
  so the engine on the same node keeps the CPU it needs;
- `no_new_privs`, and every capability dropped (a job running as root runs its programs
  without root's powers);
- Landlock (Linux >= 5.13): read and execute only the Python installation and the system
  libraries, read and write only the working folder; no TCP bind or connect (ABI >= 4); no
  signals to or abstract sockets of processes outside (ABI >= 6);
- SIGXFSZ back to its default (CPython ignores it, and exec keeps an ignored signal ignored);
- seccomp, default deny: only verify/syscall_policy.py's syscalls, by name through libseccomp
  (so any architecture it knows), everything else EPERM.
If any step fails, it writes why to `failure_file` (made by the parent, opened here before any
step, closed by the exec, outside the program's reach) and exits with CONFINE_FAILED, and the
program never runs: the sandbox never runs a program less confined than it says.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
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

# namespaces and the folder's tmpfs (include/uapi/linux/sched.h, mount.h)
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWUSER = 0x20000, 0x8000000, 0x40000000, 0x10000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 1 << 14, 1 << 18

# libseccomp (seccomp.h)
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_FLTATR_ACT_BADARCH = 2
SCMP_CMP = {"!=": 1, "==": 4, "&==": 7}
EPERM, ENOSYS = 1, 38
POLICY_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "syscall_policy.py")


def scmp_act_errno(errno: int) -> int:
    return 0x00050000 | (errno & 0xFFFF)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class ConfineError(Exception):
    pass


def _check(result: int, what: str) -> int:
    if result < 0:
        raise ConfineError(f"{what}: {os.strerror(ctypes.get_errno())}")
    return result


def write_failure(fd: int, message: str) -> None:
    """Tell the parent the confinement failed, through a file opened before Landlock, outside
    the program's reach (it could print anything to stderr and exit with any status)."""
    os.write(fd, (message or "failed").encode())


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


def capability_sets() -> dict[str, int]:
    """This process's capability sets (CapEff, CapPrm, CapBnd, ...) from /proc/self/status."""
    with open("/proc/self/status") as f:
        return {
            k: int(v, 16) for k, v in (line.split(":", 1) for line in f if line.startswith("Cap"))
        }


def drop_privileges() -> None:
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")
    if os.geteuid() != 0:
        return  # an unprivileged process holds no capabilities to drop
    if _libc.prctl(PR_SET_SECUREBITS, SECBITS_LOCKED_NOROOT, 0, 0, 0) < 0:
        # root without CAP_SETPCAP (a container that dropped it): fine only when exec can
        # grant nothing back, i.e. the bounding set is already empty
        if capability_sets().get("CapBnd", -1) != 0:
            raise ConfineError(
                "running as root without CAP_SETPCAP: root's capabilities cannot be dropped "
                "for good (run the job as another user, or keep CAP_SETPCAP)"
            )
    else:
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


def load_policy() -> dict:
    """The allowlist (verify/syscall_policy.py), loaded by path: this script imports nothing
    but the standard library."""
    policy: dict = {"__name__": "syscall_policy"}
    with open(POLICY_FILE) as f:
        exec(compile(f.read(), POLICY_FILE, "exec"), policy)
    return policy


class ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def libseccomp() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        raise ConfineError(
            "libseccomp is not installed (libseccomp.so.2: the libseccomp2 package)"
        ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def apply_seccomp(policy: dict, pid: int) -> int:
    """Default deny: only verify/syscall_policy.py's syscalls (by name, resolved by libseccomp
    for this architecture; another architecture's calls kill the process), everything else
    EPERM. Returns how many rules were loaded."""
    lib = libseccomp()
    ctx = lib.seccomp_init(scmp_act_errno(EPERM))
    if not ctx:
        raise ConfineError("seccomp_init failed")
    try:
        _check(lib.seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS), "seccomp")
        rules = [(name, SCMP_ACT_ALLOW, ()) for name in policy["ALLOWED"]]
        rules += [(name, SCMP_ACT_ALLOW, cmps) for name, cmps in policy["CONDITIONAL"]]
        rules += [(name, scmp_act_errno(ENOSYS), ()) for name in policy["UNSUPPORTED"]]
        loaded = 0
        for name, action, comparisons in rules:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number == -1:  # not a syscall here, or unknown to this libseccomp: refused
                continue
            cmps = (ArgCmp * max(1, len(comparisons)))()
            for i, (arg, op, value, *mask) in enumerate(comparisons):
                datum = pid if value == policy["SELF"] else value
                if op == "&==":  # (argument & mask) == value
                    cmps[i] = ArgCmp(arg, SCMP_CMP[op], mask[0], datum)
                else:
                    cmps[i] = ArgCmp(arg, SCMP_CMP[op], datum, 0)
            result = lib.seccomp_rule_add_array(ctx, action, number, len(comparisons), cmps)
            if result < 0:
                raise ConfineError(f"seccomp rule for {name}: {os.strerror(-result)}")
            loaded += 1
        result = lib.seccomp_load(ctx)
        if result < 0:
            raise ConfineError(f"seccomp_load: {os.strerror(-result)}")
        return loaded
    finally:
        lib.seccomp_release(ctx)


def isolate(workdir: str, limits: dict) -> str:
    """Where the kernel allows it (root, or unprivileged user namespaces), its own IPC, mount
    and network namespaces, and its folder a tmpfs of `folder_bytes` (nosuid, nodev,
    noexec) holding at most `folder_entries` entries, gone with it. Returns what was done
    ("namespaces", "namespaces, folder on disk: <why>" or "none: <why>"); the program file is
    carried into the tmpfs."""
    program = {}
    for name in os.listdir(workdir):
        with open(os.path.join(workdir, name), "rb") as f:
            program[name] = f.read()
    flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(flags) < 0:
        if _libc.unshare(flags | CLONE_NEWUSER) < 0:
            return f"none: {os.strerror(ctypes.get_errno())}"
        try:
            for path, text in (
                ("/proc/self/setgroups", "deny"),
                ("/proc/self/uid_map", f"0 {uid} 1"),
                ("/proc/self/gid_map", f"0 {gid} 1"),
            ):
                with open(path, "w") as f:
                    f.write(text)
        except OSError as err:  # in a user namespace without a user: nothing would work
            raise ConfineError(f"user namespace maps: {err.strerror}") from None
    if _libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) < 0:
        return f"namespaces, folder on disk: {os.strerror(ctypes.get_errno())}"
    options = f"size={limits['folder_bytes']},nr_inodes={limits['folder_entries']},mode=0700"
    folder = workdir.encode()
    if _libc.mount(b"tmpfs", folder, b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   options.encode()) < 0:  # fmt: skip
        return f"namespaces, folder on disk: {os.strerror(ctypes.get_errno())}"
    os.chdir(workdir)  # the tmpfs now, not the folder under it
    for name, data in program.items():
        with open(name, "wb") as f:
            f.write(data)
    return "namespaces"


def main(argv: list[str]) -> None:
    settings, program = json.loads(argv[1]), argv[2]
    failure = os.open(settings["failure_file"], os.O_WRONLY | os.O_CLOEXEC)
    try:
        policy = load_policy()  # read now: Landlock will not let it be read later
        isolation = "none: not asked"
        if settings.get("isolate", True):
            isolation = isolate(settings["workdir"], settings["limits"])
        with open(settings["isolation_file"], "w") as f:
            f.write(isolation)
        set_limits(settings["limits"])
        drop_privileges()
        apply_landlock(settings["read_paths"], [settings["workdir"]], settings["devices"])
        # CPython ignores SIGXFSZ, and an ignored signal stays ignored across exec: restored
        # here, and the filter keeps the program from ignoring it again
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        apply_seccomp(policy, os.getpid())
    except (ConfineError, OSError, ValueError) as err:
        write_failure(failure, str(err))
        os._exit(CONFINE_FAILED)
    os.execv(sys.executable, [sys.executable, "-I", "-B", program])


if __name__ == "__main__":
    main(sys.argv)
