"""ckptcheck: does a saved, merged or quantized LLM checkpoint still behave like its source?

This package ships the ``ckptcheck`` binary (a Rust program): ``pip install`` puts it on PATH,
``python -m ckptcheck ARGS`` runs it, and ``bisect``, ``compare``, ``lint`` and ``inspect`` run it
with ``--json`` and return the report as a dict (for notebooks). Every command, option and exit
code is the binary's own (``ckptcheck --help``); ``find_ckptcheck_bin()`` says where it is.
"""

from ckptcheck._api import CkptcheckError, bisect, compare, inspect, lint, run_json
from ckptcheck._find import find_ckptcheck_bin

__all__ = ["CkptcheckError", "bisect", "compare", "find_ckptcheck_bin", "inspect", "lint", "run_json"]
