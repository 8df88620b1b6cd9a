"""ckptcheck: does a saved, merged or quantized LLM checkpoint still behave like its source?

This package ships the ``ckptcheck`` binary (a Rust program) and nothing else: ``pip install``
puts it on PATH, ``python -m ckptcheck ARGS`` runs it, and ``find_ckptcheck_bin()`` says where it
is. Every command, option and exit code is the binary's own (``ckptcheck --help``).
"""

from ckptcheck._find import find_ckptcheck_bin

__all__ = ["find_ckptcheck_bin"]
