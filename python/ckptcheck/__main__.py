"""``python -m ckptcheck ARGS``: run the installed ``ckptcheck`` binary with ARGS.

The binary replaces this process (POSIX), so its stdout, stderr and exit code (0 clean,
1 findings, 2 could not run) are exactly those of ``ckptcheck ARGS``.
"""

import os
import subprocess
import sys

from ckptcheck._find import find_ckptcheck_bin


def main() -> int:
    try:
        binary = find_ckptcheck_bin()
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = [binary, *sys.argv[1:]]
    if sys.platform == "win32":
        # No exec on Windows that keeps the console and the exit code: wait for the child.
        return subprocess.run(args).returncode
    os.execv(binary, args)
    return 2  # not reached: execv replaces the process or raises


if __name__ == "__main__":
    sys.exit(main())
