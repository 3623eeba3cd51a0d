"""Runs inside the sandbox child before the model's code: installs the audit hook, then execs the code.

Usage (by :mod:`areal_agent.sandbox`): ``python -I -B sandbox_guard.py SCRATCH`` with the code on
stdin. The hook (PEP 578; it cannot be removed once installed) raises ``PermissionError`` for

- opening a file for writing, and creating / removing / renaming / chmod-ing a path, outside SCRATCH;
- creating a socket (network);
- starting a process (subprocess, os.system, exec*, spawn*, fork) and loading native code via ctypes.

This module imports only the standard library and nothing after the hook is installed is trusted.
"""

import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
               "os.truncate", "os.utime", "os.replace", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
DENIED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
          "ctypes.", "pty.", "os.kill", "os.killpg", "signal.pthread_kill", "os.chroot", "os.setuid")


def install(scratch: str) -> None:
    root = os.path.realpath(scratch) + os.sep
    realpath, fspath, startswith = os.path.realpath, os.fspath, str.startswith

    def inside(path) -> bool:
        try:
            p = fspath(path)
        except TypeError:
            return False  # a file descriptor: writing through one opened inside is fine, others were denied
        p = p.decode() if isinstance(p, bytes) else p
        return startswith(realpath(p) + os.sep, root)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & WRITE_FLAGS)
            if writes and not isinstance(path, int) and not inside(path):
                raise PermissionError(f"sandbox: writing outside the scratch dir is denied: {path!r}")
        elif event in PATH_EVENTS:
            for p in args[:2]:
                if isinstance(p, (str, bytes, os.PathLike)) and not inside(p):
                    raise PermissionError(f"sandbox: {event} outside the scratch dir is denied: {p!r}")
        elif event.startswith(DENIED):
            raise PermissionError(f"sandbox: {event} is denied (no network, no processes, no native code)")

    sys.addaudithook(hook)


def main() -> None:
    scratch = sys.argv[1]
    code = sys.stdin.read()
    install(scratch)
    sys.argv = ["sandbox"]
    exec(compile(code, "<model code>", "exec"), {"__name__": "__main__"})


if __name__ == "__main__":
    main()
