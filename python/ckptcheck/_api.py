"""Reports as dicts, for notebooks: each function runs the installed ``ckptcheck`` binary with
``--json`` and returns its JSON report parsed, so there is one engine and no second code path.

Keyword options map to the command's flags one to one: ``max_prompts=4`` is ``--max-prompts 4``,
``layers=True`` is ``--layers``, ``False`` or ``None`` leaves the flag out; ``--help`` of each
command lists them. A report whose verdict fails (exit 1) is returned like any other: read its
``verdict``. Exit 2 ("could not run": a bad path, an invalid manifest) raises CkptcheckError
with ckptcheck's own message.
"""

import json
import os
import subprocess
from typing import Any, Dict, List, Union

from ckptcheck._find import find_ckptcheck_bin

PathLike = Union[str, "os.PathLike[str]"]


class CkptcheckError(RuntimeError):
    """ckptcheck could not run (exit 2) or printed no JSON report."""

    def __init__(self, message: str, returncode: int, args: List[str]):
        super().__init__(message)
        self.returncode = returncode
        self.command = args


def _flags(options: Dict[str, Any]) -> List[str]:
    out: List[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        else:
            out += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return out


def run_json(command: str, *args: PathLike, **options: Any) -> Dict[str, Any]:
    """``ckptcheck COMMAND ARGS... --json [--flag value...]``: its report as a dict."""
    argv = [find_ckptcheck_bin(), command, *(os.fspath(a) for a in args), "--json", *_flags(options)]
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode not in (0, 1):
        message = done.stderr.strip() or f"ckptcheck exited {done.returncode}"
        raise CkptcheckError(message, done.returncode, argv)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as e:
        raise CkptcheckError(f"ckptcheck printed no JSON report ({e}): {done.stderr.strip()}", done.returncode, argv) from e


def bisect(*inputs: PathLike, **options: Any) -> Dict[str, Any]:
    """A lineage manifest, or two or more steps in order: the bisect report (docs/report-schema.json)."""
    return run_json("bisect", *inputs, **options)


def compare(reference: PathLike, candidate: PathLike, **options: Any) -> Dict[str, Any]:
    """Two variants compared on the reference's answers: the compare report."""
    return run_json("compare", reference, candidate, **options)


def lint(path: PathLike, **options: Any) -> Dict[str, Any]:
    """Static checks of one checkpoint: the lint report (its findings)."""
    return run_json("lint", path, **options)


def inspect(path: PathLike, **options: Any) -> Dict[str, Any]:
    """What a checkpoint is: the inspect report."""
    return run_json("inspect", path, **options)
