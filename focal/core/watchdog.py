"""Run a command as a process group that dies with an owner process: the model server's launcher.

    python -I focal/core/watchdog.py --owner PID [--grace-s 30] -- CMD [ARG ...]   # what focal.serving.server runs
    python -m focal.core.watchdog --owner 0 -- CMD [ARG ...]                       # no owner: only a stop ends it

The watchdog leads its own process group (focal.serving.server starts it in a new session)
and runs CMD in that group, so CMD's own children (vLLM's engine process) are in
it too. It exits with CMD's exit code. Every 0.5 s it checks that the owner is
still alive (on Linux: same pid, same start time, not a zombie); once the owner is
gone it stops the whole group: SIGTERM, up to --grace-s for CMD to exit, then
SIGKILL to what is left of the group, itself included. So a server started by a
stage dies with the stage even on kill -9, without the stage's cooperation.

Second line, on Linux: CMD gets PR_SET_PDEATHSIG(SIGTERM), so if the watchdog
itself is killed, CMD is told to shut down. SIGTERM sent to the group (what
`focal.serving.server.stop_group` does) reaches CMD directly; the watchdog ignores it and
stays to collect CMD's exit code. It imports only the standard library, so it
runs from any python, in isolated mode.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from pathlib import Path

POLL_S = 0.5
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def identity(pid: int) -> str | None:
    """A token for this process that a later process reusing the pid will not share; None if it is gone.

    On Linux, its start time from /proc (a zombie counts as gone); elsewhere "alive" while the pid exists.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "alive"
    return None if fields[0] in ("Z", "X") else fields[19]  # fields[0] is stat's 3rd field; starttime is the 22nd


def _pdeathsig_setter():
    """A preexec function: SIGTERM the child when this process dies (Linux, via prctl); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def set_pdeathsig() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the watchdog died before prctl took effect
            os._exit(1)

    return set_pdeathsig


def stop_group(child: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM this process group, wait up to grace_s for the child, then SIGKILL the group (and this process)."""
    os.killpg(0, signal.SIGTERM)  # this process ignores it (see run)
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(0, signal.SIGKILL)


def run(cmd: list[str], owner: int, grace_s: float) -> int:
    """Run cmd in this process group until it exits (its exit code) or the owner dies (the group is killed)."""
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)  # lead a group of our own: stop_group must never reach the caller's group
    since = identity(owner) if owner else None
    if owner and since is None:
        print(f"watchdog: owner {owner} is already gone; not starting {cmd[0]}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: None)  # the group's SIGTERM reaches cmd itself; stay to reap it
    child = subprocess.Popen(cmd, preexec_fn=_pdeathsig_setter())  # exec resets the handler: cmd gets SIGTERM
    while True:
        try:
            code = child.wait(timeout=POLL_S)
            return code if code >= 0 else 128 - code
        except subprocess.TimeoutExpired:
            pass
        if owner and identity(owner) != since:
            print(f"watchdog: owner {owner} is gone; stopping process group {os.getpgrp()}", file=sys.stderr,
                  flush=True)
            stop_group(child, grace_s)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--owner", type=int, required=True, help="pid whose death stops the group (0: none)")
    ap.add_argument("--grace-s", type=float, default=30.0, help="after SIGTERM, wait this long before SIGKILL")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command: pass it after --")
    sys.exit(run(cmd, args.owner, args.grace_s))


if __name__ == "__main__":
    main()
