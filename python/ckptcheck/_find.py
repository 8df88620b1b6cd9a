"""Locate the ``ckptcheck`` binary this package installed.

pip and uv put a wheel's binary in the scripts directory of the scheme it was installed under:
the environment's (a venv, or the interpreter's prefix), the user's (``pip install --user``), or
``TARGET/bin`` beside the package (``pip install --target TARGET``). Nothing is searched on PATH:
the binary found belongs to this installation, never some other ``ckptcheck``.
"""

import os
import sys
import sysconfig
from pathlib import Path
from typing import List


def _exe_name() -> str:
    return "ckptcheck" + (sysconfig.get_config_var("EXE") or "")


def _user_scheme() -> str:
    if sys.version_info >= (3, 10):
        return sysconfig.get_preferred_scheme("user")
    if os.name == "nt":
        return "nt_user"
    if sys.platform == "darwin" and getattr(sys, "_framework", None):
        return "osx_framework_user"
    return "posix_user"


def _candidates() -> List[Path]:
    exe = _exe_name()
    dirs = [Path(sysconfig.get_path("scripts"))]
    try:
        dirs.append(Path(sysconfig.get_path("scripts", scheme=_user_scheme())))
    except KeyError:
        pass
    # `pip install --target TARGET`: TARGET/ckptcheck/_find.py, the binary in TARGET/bin.
    target = Path(__file__).resolve().parent.parent
    dirs.append(target / ("Scripts" if os.name == "nt" else "bin"))
    return [d / exe for d in dirs]


def find_ckptcheck_bin() -> str:
    """The path of the installed ``ckptcheck`` binary; FileNotFoundError naming where it looked."""
    tried = _candidates()
    for path in tried:
        if path.is_file():
            return os.fsdecode(path)
    raise FileNotFoundError(
        "the ckptcheck binary is not where this package's installation puts it; looked in: "
        + ", ".join(str(p) for p in tried)
        + ". Reinstall the wheel (`pip install --force-reinstall ckptcheck`)."
    )
