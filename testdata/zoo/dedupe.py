"""Keeps one copy of byte-identical weight files under models/ on disk.

Several zoo models are another model's weights with only a config or tokenizer changed
(llama-instruct's under four rope scalings, a wrong generation_config, a missing template, ...),
and most share the zoo tokenizer. Git stores such files once anyway; a checkout does not. This
replaces each duplicate `*.safetensors` (equal bytes, whatever the file's name) and `tokenizer.json`
by a relative symlink to the copy in the directory with the shortest name (llama-instruct,
spm-llama; qwen3 for the shared tokenizer.json), which saves ~76 MB of testdata/.

    python dedupe.py          # after regenerating: link duplicates
    python dedupe.py --undo   # before regenerating: turn links back into copies, so that a
                              # save_pretrained into a linked directory cannot write through the link

Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

MODELS = Path(__file__).resolve().parent / "models"


def digest(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def linked_files() -> list[Path]:
    """The files linked when equal: weights, and tokenizer.json (most zoo models share the zoo
    tokenizer's, 54 kB each)."""
    return sorted([*MODELS.glob("*/*.safetensors"), *MODELS.glob("*/tokenizer.json")])


def link() -> None:
    # By content alone: a shard of one sharded save can equal another save's (the untouched
    # embedding shard of three QLoRA merges, the unquantized head of two compressed-tensors saves).
    groups: dict[str, list[Path]] = {}
    for p in linked_files():
        if not p.is_symlink():
            groups.setdefault(digest(p), []).append(p)
    for files in groups.values():
        keep = min(files, key=lambda p: (len(p.parent.name), p.parent.name))
        for p in files:
            if p != keep:
                p.unlink()
                p.symlink_to(os.path.relpath(keep, p.parent))
                print(f"{p.relative_to(MODELS)} -> {keep.relative_to(MODELS)}")


def undo() -> None:
    for p in linked_files():
        if p.is_symlink():
            target = p.resolve()
            p.unlink()
            shutil.copyfile(target, p)
            print(f"{p.relative_to(MODELS)}: copy of {target.relative_to(MODELS)}")


if __name__ == "__main__":
    undo() if sys.argv[1:] == ["--undo"] else link()
