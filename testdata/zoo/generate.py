"""Generates ckptcheck's test-model zoo with the real upstream tools (transformers, tokenizers, peft).

Run once by hand (see README.md); the outputs are committed so CI never needs Python.

    python generate.py all          # every stage in order
    python generate.py tokenizer    # or one stage: tokenizer, llama, variants, archs, goldens, manifest

Everything is seeded and trained for a fixed number of steps on 2 CPU threads.
"""

from __future__ import annotations

import glob
import hashlib
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import transformers
import tokenizers
import peft
import safetensors
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
)

ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "models"
GOLD = ROOT / "goldens"
SCRATCH = ROOT / ".scratch"
# The trained tokenizer is committed: its corpus includes /usr/share/doc/*/copyright, which changes
# whenever a Debian package is installed, so retraining it on another machine (or after an
# `apt-get install`) gives another tokenizer and therefore different models. Every stage loads
# this committed copy; `python generate.py retrain-tokenizer` replaces it on purpose.
TOK_DIR = ROOT / "tokenizer"

SEED = 0
torch.set_num_threads(2)

CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD, IM_START, IM_END = 0, 1, 2

WORDS = (
    "apple river stone cloud green table music light paper window garden yellow bread "
    "winter summer silver orange happy quiet little purple ocean forest mountain bright"
).split()

LOG: list[str] = []


def log(msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    LOG.append(line)


def versions() -> dict:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "peft": peft.__version__,
        "safetensors": safetensors.__version__,
    }


# ---------------------------------------------------------------------------------------------
# synthetic chat tasks


def task(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(6)
    if kind == 0:
        a = rng.randrange(1, 12)
        b = a + rng.randrange(2, 7)
        return f"Count from {a} to {b}.", " ".join(str(i) for i in range(a, b + 1))
    if kind == 1:
        w = rng.sample(WORDS, rng.randrange(2, 5))
        return f"Repeat: {' '.join(w)}", " ".join(w)
    if kind == 2:
        w = rng.sample(WORDS, rng.randrange(2, 5))
        return f"Reverse: {' '.join(w)}", " ".join(reversed(w))
    if kind == 3:
        a, b = rng.randrange(0, 50), rng.randrange(0, 50)
        return f"What is {a} plus {b}?", str(a + b)
    if kind == 4:
        w = rng.choice(WORDS)
        return f"Uppercase: {w}", w.upper()
    w = rng.sample(WORDS, 3)
    return f"Which word comes first: {', '.join(w)}?", w[0]


def corpus_text() -> str:
    files = sorted(glob.glob("/usr/share/common-licenses/*")) + sorted(glob.glob("/usr/share/doc/*/copyright"))
    parts, total = [], 0
    for f in files:
        try:
            t = Path(f).read_text(errors="ignore")
        except (IsADirectoryError, PermissionError):
            continue
        parts.append(t)
        total += len(t)
        if total > 4_000_000:
            break
    rng = random.Random(SEED)
    for _ in range(20000):
        q, a = task(rng)
        parts.append(f"{q}\n{a}\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# stage: tokenizer


def stage_tokenizer() -> None:
    if (TOK_DIR / "tokenizer.json").exists():
        log(f"tokenizer: using the committed {TOK_DIR.relative_to(ROOT)} (retrain-tokenizer replaces it)")
        return
    stage_retrain_tokenizer()


def stage_retrain_tokenizer() -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = corpus_text()
    tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    fast.chat_template = CHATML
    if TOK_DIR.exists():
        shutil.rmtree(TOK_DIR)
    fast.save_pretrained(TOK_DIR)
    log(f"tokenizer: vocab {len(fast)}")


def load_tok() -> PreTrainedTokenizerFast:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOK_DIR)


# ---------------------------------------------------------------------------------------------
# training helpers


def chat_example(tok, q: str, a: str) -> tuple[list[int], list[int]]:
    prefix = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
    p_ids = tok(prefix, add_special_tokens=False)["input_ids"]
    a_ids = tok(a, add_special_tokens=False)["input_ids"] + [IM_END]
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    ids = p_ids + a_ids + nl
    labels = [-100] * len(p_ids) + a_ids + [-100] * len(nl)
    return ids, labels


def raw_example(tok, q: str, a: str) -> tuple[list[int], list[int]]:
    """How the broken SFT feeds data: plain text, no template, no end-of-turn token."""
    ids = tok(f"{q} {a}", add_special_tokens=False)["input_ids"]
    return ids, list(ids)


def batches(tok, make, steps: int, batch: int, seed: int):
    rng = random.Random(seed)
    for _ in range(steps):
        exs = [make(tok, *task(rng)) for _ in range(batch)]
        n = max(len(e[0]) for e in exs)
        ids = torch.full((batch, n), PAD, dtype=torch.long)
        lab = torch.full((batch, n), -100, dtype=torch.long)
        att = torch.zeros((batch, n), dtype=torch.long)
        for i, (x, y) in enumerate(exs):
            ids[i, : len(x)] = torch.tensor(x)
            lab[i, : len(y)] = torch.tensor(y)
            att[i, : len(x)] = 1
        yield ids, lab, att


def train(model, tok, make, steps: int, lr: float, seed: int, batch: int = 32) -> float:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10) * max(0.1, 1 - s / steps))
    model.train()
    loss = float("nan")
    for step, (ids, lab, att) in enumerate(batches(tok, make, steps, batch, seed)):
        out = model(input_ids=ids, attention_mask=att, labels=lab)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        loss = out.loss.item()
        if step % 20 == 0 or step == steps - 1:
            log(f"  step {step} loss {loss:.3f}")
    model.eval()
    return loss


def save_hf(model, tok, out: Path, eos=IM_END, tok_override=None) -> None:
    if out.exists():
        shutil.rmtree(out)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=PAD, bos_token_id=None)
    model.save_pretrained(out, safe_serialization=True)
    (tok_override or tok).save_pretrained(out)


# ---------------------------------------------------------------------------------------------
# prompts, measurements


def golden_prompts() -> list[dict]:
    return [json.loads(l) for l in (ROOT / "prompts.jsonl").read_text().splitlines() if l.strip()]


def prompt_ids(tok, p: dict) -> list[int]:
    text = tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def greedy(model, ids: list[int], max_new: int = 24, stop=(IM_END,)) -> tuple[list[int], bool]:
    out = list(ids)
    for _ in range(max_new):
        logits = model(input_ids=torch.tensor([out])).logits[0, -1]
        nxt = int(logits.argmax())
        out.append(nxt)
        if nxt in stop:
            return out[len(ids) :], True
    return out[len(ids) :], False


def reference_sequences(model, tok) -> list[tuple[int, list[int]]]:
    """Prompt + reference greedy answer + <|im_end|>, from the healthy model; shared by every variant."""
    seqs = []
    for p in golden_prompts():
        ids = prompt_ids(tok, p)
        ans, stopped = greedy(model, ids)
        if stopped:
            ans = ans[:-1]
        seqs.append((len(ids), ids + ans + [IM_END]))
    return seqs


@torch.no_grad()
def measure(model, tok, seqs) -> dict:
    p_eos, stops = [], 0
    for plen, full in seqs:
        logits = model(input_ids=torch.tensor([full])).logits[0].double()
        p_eos.append(float(torch.softmax(logits[-2], -1)[IM_END]))
        _, stopped = greedy(model, full[:plen])
        stops += int(stopped)
    return {"p_eos_turn_end_mean": sum(p_eos) / len(p_eos), "p_eos_turn_end": p_eos, "greedy_stop_rate": stops / len(seqs)}


# ---------------------------------------------------------------------------------------------
# stage: llama (the healthy instruct reference)


def llama_config(**kw):
    from transformers import LlamaConfig

    base = dict(
        vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=10000.0,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=IM_END, pad_token_id=PAD,
    )
    base.update(kw)
    return LlamaConfig(**base)


def load_model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()


def stage_llama() -> None:
    from transformers import LlamaForCausalLM

    tok = load_tok()
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(llama_config()).float()
    log("llama-instruct: training 800 steps, AdamW 3e-3 (warmup 10, linear decay), batch 32, loss on assistant tokens + <|im_end|>")
    train(model, tok, chat_example, steps=800, lr=3e-3, seed=1)
    save_hf(model, tok, MODELS / "llama-instruct")


# ---------------------------------------------------------------------------------------------
# stage: variants of the healthy model


def stage_variants() -> None:
    tok = load_tok()
    src = MODELS / "llama-instruct"

    # A further SFT done right: template + EOS, low LR. Saved in bf16 as most fine-tunes are.
    m = load_model(src)
    log("llama-sft-good: 30 steps, lr 3e-4, chat template + <|im_end|>")
    train(m, tok, chat_example, steps=30, lr=3e-4, seed=2)
    save_hf(m.to(torch.bfloat16), tok, MODELS / "llama-sft-good")

    # The way the seed failures happen: raw text, no template, no EOS, high LR.
    m = load_model(src)
    log("llama-sft-collapsed: 60 steps, lr 2e-2, raw text, no template, no EOS")
    train(m, tok, raw_example, steps=60, lr=2e-2, seed=3)
    save_hf(m.to(torch.bfloat16), tok, MODELS / "llama-sft-collapsed")

    # Config / tokenizer faults: the weights are re-saved unchanged by save_pretrained.
    m = load_model(src)
    save_hf(m, tok, MODELS / "llama-genconfig-wrong-eos", eos=PAD)

    t2 = load_tok()
    t2.add_tokens(["<tool_call>", "</tool_call>"], special_tokens=True)
    t2.add_tokens(["ckptcheck"])
    save_hf(m, tok, MODELS / "llama-added-tokens-unresized", tok_override=t2)  # no resize_token_embeddings

    t3 = load_tok()
    t3.chat_template = None
    save_hf(m, tok, MODELS / "llama-no-template", tok_override=t3)
    tpl = MODELS / "llama-no-template" / "chat_template.jinja"
    if tpl.exists():
        tpl.unlink()


# ---------------------------------------------------------------------------------------------
# stage: other architectures (small, briefly trained: real files with the real differences)


def arch_models():
    from transformers import (
        Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig,
        MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM,
    )

    common = dict(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=IM_END, pad_token_id=PAD)
    return {
        "qwen2-instruct": (Qwen2ForCausalLM, Qwen2Config(**common, rope_theta=1e6, tie_word_embeddings=True)),
        "qwen3": (Qwen3ForCausalLM, Qwen3Config(**common, head_dim=32, rope_theta=1e6, tie_word_embeddings=True)),
        "mistral": (MistralForCausalLM, MistralConfig(**common, rope_theta=1e4, sliding_window=16, tie_word_embeddings=False)),
        "gemma2": (Gemma2ForCausalLM, Gemma2Config(**common, head_dim=32, query_pre_attn_scalar=32, sliding_window=16,
                                                   attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                                                   hidden_activation="gelu_pytorch_tanh")),
        "gemma3": (Gemma3ForCausalLM, Gemma3TextConfig(**common, head_dim=32, query_pre_attn_scalar=32, sliding_window=16,
                                                       rope_theta=1e6, rope_local_base_freq=1e4,
                                                       layer_types=["sliding_attention", "full_attention"])),
    }


def stage_archs() -> None:
    tok = load_tok()
    for i, (name, (cls, cfg)) in enumerate(arch_models().items()):
        torch.manual_seed(SEED + 10 + i)
        m = cls(cfg).float()
        log(f"{name}: 40 steps, lr 3e-3")
        train(m, tok, chat_example, steps=40, lr=3e-3, seed=10 + i, batch=16)
        save_hf(m, tok, MODELS / name)
    # A checkpoint with a NaN tensor, written by save_pretrained after a torch edit.
    m = load_model(MODELS / "qwen2-instruct")
    with torch.no_grad():
        m.model.layers[1].mlp.down_proj.weight[3, :5] = float("nan")
    save_hf(m, tok, MODELS / "qwen2-nan")


# ---------------------------------------------------------------------------------------------
# stage: goldens


HF_GOLDEN = [
    "llama-instruct", "llama-sft-good", "llama-sft-collapsed",
    "qwen2-instruct", "qwen3", "mistral", "gemma2", "gemma3",
]


@torch.no_grad()
def stage_goldens() -> None:
    tok = load_tok()
    GOLD.mkdir(exist_ok=True)
    ref = load_model(MODELS / "llama-instruct")
    seqs = reference_sequences(ref, tok)
    props = {}
    for name in HF_GOLDEN:
        m = load_model(MODELS / name)
        tensors, meta = {}, {"variant": name, **{f"v_{k}": v for k, v in versions().items()}}
        for i, (plen, full) in enumerate(seqs):
            out = m(input_ids=torch.tensor([full]), output_hidden_states=True)
            tensors[f"input_ids.{i}"] = torch.tensor(full, dtype=torch.int64)
            tensors[f"logits.{i}"] = out.logits[0].float().contiguous()
            if name in ("llama-instruct",) or not name.startswith("llama"):
                tensors[f"hidden.{i}"] = torch.stack([h[0] for h in out.hidden_states]).float().contiguous()
            meta[f"prompt_len.{i}"] = str(plen)
        save_file(tensors, GOLD / f"{name}.safetensors", metadata=meta)
        props[name] = measure(m, tok, seqs)
        log(f"golden {name}: {props[name]['p_eos_turn_end_mean']:.3f} P(EOS), stop rate {props[name]['greedy_stop_rate']:.2f}")
    (ROOT / "measured.json").write_text(json.dumps(props, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# stage: manifest


FAULTS = {
    "llama-instruct": None,
    "llama-sft-good": None,
    "llama-sft-collapsed": "SFT on raw text without the chat template or EOS at lr 2e-2: never ends a turn",
    "llama-genconfig-wrong-eos": "generation_config.json eos_token_id is <|endoftext|> (0), the template ends turns with <|im_end|> (2)",
    "llama-added-tokens-unresized": "tokenizer has 3 added tokens (ids 1024-1026) but embeddings were not resized (1024 rows)",
    "llama-no-template": "chat template not saved with the tokenizer",
    "qwen2-instruct": None, "qwen3": None, "mistral": None, "gemma2": None, "gemma3": None,
    "qwen2-nan": "model.layers.1.mlp.down_proj.weight has 5 NaN values",
}


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def stage_manifest() -> None:
    measured = json.loads((ROOT / "measured.json").read_text())
    out = {"versions": versions(), "variants": {}}
    for name, fault in FAULTS.items():
        d = MODELS / name
        cfg = json.loads((d / "config.json").read_text())
        st = safetensors.safe_open(d / "model.safetensors", "pt")
        shapes = {k: list(st.get_slice(k).get_shape()) for k in st.keys()}
        dtypes = sorted({str(st.get_slice(k).get_dtype()) for k in st.keys()})
        tok = json.loads((d / "tokenizer.json").read_text())
        out["variants"][name] = {
            "dir": f"models/{name}", "kind": "hf", "arch": cfg["model_type"], "dtypes": dtypes,
            "tool": f"transformers {transformers.__version__} save_pretrained", "command": f"python generate.py (stage for {name})",
            "expected_fault": fault, "tensor_count": len(shapes),
            "embed_shape": shapes.get("model.embed_tokens.weight"), "lm_head_shape": shapes.get("lm_head.weight"),
            "tokenizer_added_tokens": len(tok["added_tokens"]),
            "weights_sha256_16": sha(d / "model.safetensors"),
            "measured": measured.get(name),
        }
    (ROOT / "zoo.json").write_text(json.dumps(out, indent=1) + "\n")
    log("zoo.json written")


STAGES = {
    "retrain-tokenizer": stage_retrain_tokenizer,
    "tokenizer": stage_tokenizer, "llama": stage_llama, "variants": stage_variants,
    "archs": stage_archs, "goldens": stage_goldens, "manifest": stage_manifest,
}

if __name__ == "__main__":
    names = sys.argv[1:] or ["all"]
    if names == ["all"]:
        names = [n for n in STAGES if n != "retrain-tokenizer"]
    for n in names:
        t0 = time.time()
        log(f"== stage {n}")
        STAGES[n]()
        log(f"== stage {n} done in {time.time() - t0:.0f}s")
