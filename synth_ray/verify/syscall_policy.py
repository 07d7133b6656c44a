"""The syscalls a confined program may make: everything else is refused (EPERM).

    python -c "import synth_ray.verify.syscall_policy as p; print(len(p.ALLOWED))"

Read by verify/confine.py (loaded by path, so plain data and the standard library only), which
hands the names to libseccomp: libseccomp resolves them for the machine's architecture (x86_64,
aarch64, ...) and writes the BPF. A name the architecture lacks (`open` on aarch64) or that this
libseccomp does not know is skipped, so it stays refused. What a Python program computing an
answer needs is here: files in its folder (Landlock decides which), memory, time, signals to
itself, its own limits, polling its own descriptors. What is not here is refused whatever it
is, including every syscall added to the kernel later: sockets of any kind (socketpair too),
SysV IPC and POSIX message queues, new processes and threads, ptrace, mounts and namespaces,
keyrings, io_uring, AIO, BPF, inotify/fanotify, listmount/statmount, memfd, chmod/chown/utimes
and xattr writes (Landlock does not govern metadata), fallocate, and changing another
process's limits, scheduling or memory. `truncate` and `fchmod` are refused too: Landlock
governs neither before its ABI 3 (truncate) or at all (chmod), and a file the program can
merely open (a system library) is not its to cut or re-mode.
"""

from __future__ import annotations

ALLOWED = (
    # files: Landlock decides which paths; metadata reads are not file contents
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "close", "close_range", "lseek", "_llseek", "fstat", "stat", "lstat",
    "newfstatat", "fstatat64", "statx", "statfs", "fstatfs", "access", "faccessat",
    "faccessat2", "getdents64", "getcwd", "chdir", "fchdir", "rename", "renameat", "renameat2",
    "unlink", "unlinkat", "rmdir", "link", "linkat", "symlink", "symlinkat", "readlink",
    "readlinkat", "ftruncate", "fsync", "fdatasync", "flock", "fadvise64",
    "sendfile", "copy_file_range", "dup", "dup2", "dup3", "pipe", "pipe2", "umask",
    "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
    # waiting on its own descriptors
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "timerfd_create",
    "timerfd_settime", "timerfd_gettime",
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync",
    # time
    "clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep",
    "alarm", "setitimer", "getitimer",
    # signals (sending them is below: to itself only)
    "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait", "rt_sigsuspend",
    "sigaltstack", "pause", "restart_syscall",
    # itself
    "getpid", "gettid", "getppid", "getpgrp", "getpgid", "getsid", "getuid", "geteuid",
    "getgid", "getegid", "getresuid", "getresgid", "getgroups", "getrlimit", "setrlimit",
    "getrusage", "times", "getpriority", "sched_getaffinity", "sched_getparam",
    "sched_getscheduler", "sched_yield", "getcpu", "uname", "sysinfo", "capget", "getrandom",
    "futex", "set_robust_list", "set_tid_address", "rseq", "arch_prctl", "wait4", "waitid",
    "exit", "exit_group",
    # the confinement's own last step: exec the program's interpreter (Landlock: only this
    # Python's files are executable; no_new_privs: no setuid gain)
    "execve",
)  # fmt: skip

# (syscall, [(argument index, operator, value[, mask])]): allowed only when every comparison
# holds; several rules for one syscall are alternatives. `pid` stands for the program's pid.
SELF = "pid"
SIGXFSZ = 25  # the same on x86_64 and aarch64
CONDITIONAL: tuple[tuple[str, tuple[tuple, ...]], ...] = (
    # signals to itself only (0: its own process group, which holds only itself)
    ("kill", ((0, "==", SELF),)),
    ("kill", ((0, "==", 0),)),
    ("tkill", ((0, "==", SELF),)),
    ("tgkill", ((0, "==", SELF),)),
    ("rt_sigqueueinfo", ((0, "==", SELF),)),
    ("rt_tgsigqueueinfo", ((0, "==", SELF),)),
    ("prlimit64", ((0, "==", 0),)),
    ("prlimit64", ((0, "==", SELF),)),
    # any handler but for SIGXFSZ, which stays fatal: a file or output over its cap ends the
    # program (CPython would ignore it, and the cap would be an error a program can catch).
    # Each signal by its number ("==" on the whole register: high bits match nothing)
    *(("rt_sigaction", ((0, "==", number),)) for number in range(1, 65) if number != SIGXFSZ),
    ("rt_sigaction", ((0, "==", SIGXFSZ), (1, "==", 0))),  # reading it is fine
    # no setuid or setgid bit on anything it creates
    ("open", ((2, "&==", 0, 0o6000),)),
    ("openat", ((3, "&==", 0, 0o6000),)),
    ("creat", ((1, "&==", 0, 0o6000),)),
    ("mkdir", ((1, "&==", 0, 0o6000),)),
    ("mkdirat", ((2, "&==", 0, 0o6000),)),
    # fcntl and ioctl: the commands ordinary I/O uses; none can signal another process
    # (F_SETOWN, F_SETSIG) or type into a terminal (TIOCSTI)
    *(
        ("fcntl", ((1, "==", command),))
        for command in (0, 1, 2, 3, 4, 5, 6, 7, 36, 37, 38, 1030, 1032)
    ),  # F_DUPFD..F_SETLKW, F_OFD_GETLK/SETLK/SETLKW, F_DUPFD_CLOEXEC, F_GETPIPE_SZ
    *(
        ("ioctl", ((1, "==", request),))
        for request in (0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)
    ),  # TCGETS (isatty), TIOCGWINSZ, FIONREAD, FIONBIO, FIONCLEX, FIOCLEX
)

# refused with ENOSYS rather than EPERM, so the C library falls back to a call above
# (clone3 -> clone, which is refused: no threads; openat2 -> openat; statx stays)
UNSUPPORTED = ("clone3", "openat2")
