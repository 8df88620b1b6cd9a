"""A vocabulary-trimmed copy of llama-sft-good: the same model over a smaller, re-indexed id space.

    /work/venvs/main/bin/python vocab_trim.py      # after generate.py (needs models/llama-sft-good)

What vocabulary trimmers do to ship a model for one language or domain (LLM-vocab-trimmer and the
like): keep the tokens a target corpus uses (here corpus.txt, the zoo's prompts and the model's own
greedy answers to them), close the set under the BPE merges that build them, drop every other
token, and renumber the rest compactly in their old order. The embedding rows of the kept tokens
and the head rows are selected (`index_select`), nothing else changes; transformers saves the
result (`save_pretrained`, bf16 as the source) and the tokenizers library the trimmed tokenizer.

The dropped tokens include the byte-level alphabet's unused bytes (ids 3..258), so almost every
kept id moves: the two tokenizers are different id spaces, and ckptcheck compares them only with
a declared token mapping (`compare --token-map auto`). On the kept tokens the trimmed model's
logits are the source's restricted to them, so its distribution is the source's renormalized
there: the exact answer a mapped comparison must give (KL ~0 on the shared vocabulary, the
source's mass outside it reported).

Writes models/llama-sft-good-vocab-trimmed and measured_vocab_trim.json (kept/dropped counts, the
source's probability mass on dropped tokens at each scored position of the golden prompts).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from generate import IM_END, MODELS, ROOT, golden_prompts, greedy, prompt_ids

SRC = MODELS / "llama-sft-good"
OUT = MODELS / "llama-sft-good-vocab-trimmed"
torch.set_num_threads(2)


def merge_parts(merges) -> dict[str, tuple[str, str]]:
    out = {}
    for m in merges:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        out.setdefault(a + b, (a, b))
    return out


@torch.no_grad()
def main() -> None:
    tok = AutoTokenizer.from_pretrained(SRC)
    model = AutoModelForCausalLM.from_pretrained(SRC, dtype=torch.float32).eval()
    raw = json.loads((SRC / "tokenizer.json").read_text())
    vocab: dict[str, int] = raw["model"]["vocab"]
    inv = {i: t for t, i in vocab.items()}

    # Tokens the target text uses: the corpus, the prompts as the template renders them, and the
    # model's own greedy answers (what compare teacher-forces).
    seen: set[int] = set(tok(( ROOT / "corpus.txt").read_text(), add_special_tokens=False)["input_ids"])
    seqs = []
    for p in golden_prompts():
        ids = prompt_ids(tok, p)
        ans, stopped = greedy(model, ids)
        seen.update(ids)
        seen.update(ans)
        seqs.append(ids + (ans if stopped else ans + [IM_END]))
    special = {t["id"] for t in raw["added_tokens"]}
    keep = set(seen) | special
    parts = merge_parts(raw["model"]["merges"])
    todo = [inv[i] for i in keep if i in inv]
    while todo:  # close under the merges that build a kept token
        t = todo.pop()
        for part in parts.get(t, ()):
            if vocab[part] not in keep:
                keep.add(vocab[part])
                todo.append(part)
    kept = sorted(keep)
    new_id = {old: new for new, old in enumerate(kept)}

    raw["model"]["vocab"] = {inv[old]: new_id[old] for old in kept if old in inv}
    kept_tokens = set(raw["model"]["vocab"])
    merges = []
    for m in raw["model"]["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in kept_tokens and b in kept_tokens and a + b in kept_tokens:
            merges.append(m)
    raw["model"]["merges"] = merges
    for t in raw["added_tokens"]:
        t["id"] = new_id[t["id"]]

    if OUT.exists():
        shutil.rmtree(OUT)
    src_dtype = AutoModelForCausalLM.from_pretrained(SRC).dtype
    trimmed = AutoModelForCausalLM.from_pretrained(SRC, dtype=src_dtype).eval()
    index = torch.tensor(kept)
    emb = trimmed.get_input_embeddings().weight.data.index_select(0, index).clone()
    head = trimmed.get_output_embeddings().weight.data.index_select(0, index).clone()
    trimmed.resize_token_embeddings(len(kept))
    trimmed.get_input_embeddings().weight.data.copy_(emb)
    trimmed.get_output_embeddings().weight.data.copy_(head)
    cfg = trimmed.config
    for k in ("eos_token_id", "pad_token_id", "bos_token_id"):
        if getattr(cfg, k, None) is not None:
            setattr(cfg, k, new_id[getattr(cfg, k)])
        g = getattr(trimmed.generation_config, k, None)
        if g is not None:
            setattr(trimmed.generation_config, k, new_id[g])
    trimmed.save_pretrained(OUT, safe_serialization=True)
    tok.save_pretrained(OUT)
    Tokenizer.from_str(json.dumps(raw)).save(str(OUT / "tokenizer.json"))
    # tokenizer_config.json's special tokens keep their text; only ids moved.

    # The source's mass on dropped tokens where compare scores (each answer position).
    dropped = torch.tensor(sorted(set(range(len(vocab))) - keep))
    mass = []
    for plen, full in [(len(prompt_ids(tok, p)), s) for p, s in zip(golden_prompts(), seqs)]:
        probs = model(input_ids=torch.tensor([full])).logits[0].double().softmax(-1)
        mass += probs[plen - 1 : len(full) - 1][:, dropped].sum(-1).tolist()
    check = AutoTokenizer.from_pretrained(OUT)
    same_tokens = all(
        [kept[i] for i in check(text, add_special_tokens=False)["input_ids"]] == tok(text, add_special_tokens=False)["input_ids"]
        for text in [tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False) for p in golden_prompts()]
    )
    res = {
        "source": SRC.name, "kept": len(kept), "dropped": len(vocab) - len(kept),
        "ids_unchanged": sum(1 for new, old in enumerate(kept) if new == old),
        "prompts_tokenize_the_same": same_tokens,
        "source_mass_on_dropped_mean": sum(mass) / len(mass), "source_mass_on_dropped_max": max(mass),
        "scored_positions": len(mass),
    }
    (ROOT / "measured_vocab_trim.json").write_text(json.dumps(res, indent=1) + "\n")
    print(res)


if __name__ == "__main__":
    main()
