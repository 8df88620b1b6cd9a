"""A tiny Llama with a SentencePiece vocabulary (the Llama 2 / Mistral kind), its GGUFs and goldens.

    <main venv python> spm.py tokenizer   # sentencepiece BPE, vocab 1000, byte fallback -> spm-tokenizer/
    <main venv python> spm.py model       # transformers tokenizer + LlamaForCausalLM, trained briefly
    <main venv python> spm.py goldens     # transformers f32 logits on the golden sequences
    <main venv python> spm.py gguf        # convert_hf_to_gguf.py F16, llama-quantize Q8_0, the wrong-EOS
                                          # and lost-scores conversions, llama.cpp logits and token ids
    <main venv python> spm.py all

The main venv needs torch, transformers, tokenizers, sentencepiece and gguf (gguf-py); llama.cpp's
`llama-quantize` and its libllama (called through ctypes: `LlamaCpp`), built from the same checkout
as the converter, replace the llama-cpp-python binding the other GGUF stages use.

Outputs:
  spm-tokenizer/tokenizer.model                the trained SentencePiece model (committed: an input)
  models/spm-llama/                            transformers save_pretrained (tokenizer legacy=True) +
                                               the tokenizer.model a Llama 2 repository ships
  models/spm-llama-t5default/                  the same weights with the tokenizer transformers 5
                                               builds by default (legacy=False: no space after
                                               special tokens): a lint target
  gguf/spm-llama-{f16,q8_0,wrong-eos,flat-scores-q8_0}.gguf
  goldens/spm-llama.safetensors                transformers f32 logits (+ hidden states)
  goldens/gguf-spm-llama-{f16,q8_0}.safetensors  llama.cpp logits on the same ids
  goldens/spm-tokenize.json                    llama.cpp and transformers token ids of probe strings
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "models"
GOLD = ROOT / "goldens"
GGUF_DIR = ROOT / "gguf"
TOK_DIR = ROOT / "spm-tokenizer"
SCRATCH = Path(os.environ.get("ZOO_SCRATCH", "/work/scratch/zoo")) / "spm"
LLAMACPP = Path(os.environ.get("ZOO_LLAMACPP_SRC", "/work/llama.cpp"))
LLAMACPP_BIN = Path(os.environ.get("ZOO_LLAMACPP_BIN", str(LLAMACPP / "build/bin")))
MEASURED = ROOT / "measured_spm.json"
# /work/llama.cpp has no git metadata (build-info says commit "unknown"); its libllama soname is 0.5.0.
LLAMACPP_VERSION = "llama.cpp libllama 0.5.0 (ggml 0.25.3), /work/llama.cpp checkout of 2026-12-02"
NAME = "spm-llama"
SEED = 0
UNK, BOS, EOS = 0, 1, 2
VOCAB = 1000
MAX_NEW = 24

# Llama 2's chat template, without the system-prompt branch.
TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)

# Strings the GGUF tokenizer rebuild is checked on against llama.cpp and transformers: spaces,
# newlines, digits, characters outside the vocabulary (byte fallback), special and added tokens.
PROBES = [
    "Count from 3 to 8.",
    "Hello world",
    "  two  leading spaces and  double  spaces ",
    "line one\nline two\n\n\ttabbed",
    "digits 1234567890 and 3.14",
    "unicode: café, Grüße, 日本語, emoji 🙂",
    "[INST] Reverse: apple river stone [/INST] stone river apple</s><s>[INST] again [/INST]",
    "</s>",
    "",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def record(name: str, props: dict) -> None:
    m = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
    m.setdefault(name, {}).update(props)
    MEASURED.write_text(json.dumps(m, indent=1, sort_keys=True) + "\n")


def task_mod():
    """generate.py's synthetic chat tasks (imported without peft, which only generate.py's lora
    stages need)."""
    import types

    had = "peft" in sys.modules
    sys.modules.setdefault("peft", types.ModuleType("peft"))
    sys.path.insert(0, str(ROOT))
    import generate as G

    if not had:  # transformers probes peft with find_spec later: leave no stub behind
        del sys.modules["peft"]
    return G


# ---------------------------------------------------------------------------------------------
# tokenizer


def stage_tokenizer() -> None:
    """SentencePiece BPE with Llama 2's trainer settings (identity normalization, byte fallback,
    split digits, no whitespace collapsing), on /usr/share/common-licenses and the task text."""
    import sentencepiece as spm

    G = task_mod()
    lines = []
    for f in sorted(glob.glob("/usr/share/common-licenses/*")):
        try:
            lines += Path(f).read_text(errors="ignore").splitlines()
        except (IsADirectoryError, PermissionError):
            continue
    rng = random.Random(SEED)
    for _ in range(20000):
        q, a = G.task(rng)
        lines += [q, a, f"[INST] {q} [/INST] {a}"]
    lines = [l for l in lines if l.strip()]
    TOK_DIR.mkdir(exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(TOK_DIR / "tokenizer"), model_type="bpe", vocab_size=VOCAB,
        byte_fallback=True, split_digits=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, character_coverage=0.9995, unk_id=UNK, bos_id=BOS, eos_id=EOS, pad_id=-1,
        num_threads=1, minloglevel=2, input_sentence_size=0, shuffle_input_sentence=False)
    (TOK_DIR / "tokenizer.vocab").unlink(missing_ok=True)
    log(f"tokenizer: {TOK_DIR / 'tokenizer.model'} ({(TOK_DIR / 'tokenizer.model').stat().st_size} bytes)")


def load_hf_tokenizer(legacy: bool):
    """What a user gets from transformers 5 for a directory holding only tokenizer.model.
    `legacy=True` keeps a space prefix on every text segment (Metaspace prepend_scheme `always`, as
    Llama 2's own tokenizer.json and llama.cpp do); transformers 5's default, `legacy=False`,
    prefixes only the start of the text (`first`). transformers 5.24 does not write a `legacy`
    passed to from_pretrained into tokenizer_config.json (and rebuilds the pre-tokenizer from
    tokenizer_config on load, not from tokenizer.json), so it is recorded in init_kwargs: without
    it the saved tokenizer.json says `always` while transformers reloads it as `first`."""
    from transformers import LlamaTokenizer

    src = SCRATCH / "tok-src"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copy(TOK_DIR / "tokenizer.model", src / "tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(src, legacy=legacy, add_prefix_space=True)
    tok.init_kwargs["legacy"] = legacy
    tok.chat_template = TEMPLATE
    return tok


# ---------------------------------------------------------------------------------------------
# model


def chat_ids(tok, q: str, a: str | None):
    """(ids, prompt_len): the rendered conversation tokenized as one text, as apply_chat_template does."""
    msgs = [{"role": "user", "content": q}]
    prompt = tok.apply_chat_template(msgs, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    if a is None:
        return p_ids, len(p_ids)
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": a}], tokenize=False)
    ids = tok(full, add_special_tokens=False)["input_ids"]
    assert ids[: len(p_ids)] == p_ids, (prompt, full)
    return ids, len(p_ids)


def train_chat(model, tok, name: str, steps: int, batch: int, lr: float, seed: int) -> None:
    """AdamW on generate.py's chat tasks rendered with `tok`'s template (warmup 10 steps, then
    linear decay to 10 %), loss on the answer and the closing </s> only; `model` is left in train mode."""
    import torch

    G = task_mod()
    log(f"{name}: training {steps} steps, AdamW {lr}, batch {batch}, loss on the answer + </s>")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10) * max(0.1, 1 - s / steps))
    rng = random.Random(seed)
    model.train()
    for step in range(steps):
        exs = [chat_ids(tok, *G.task(rng)) for _ in range(batch)]
        n = max(len(e[0]) for e in exs)
        ids = torch.full((batch, n), EOS, dtype=torch.long)
        lab = torch.full((batch, n), -100, dtype=torch.long)
        att = torch.zeros((batch, n), dtype=torch.long)
        for i, (x, plen) in enumerate(exs):
            ids[i, : len(x)] = torch.tensor(x)
            lab[i, plen : len(x)] = torch.tensor(x[plen:])
            att[i, : len(x)] = 1
        out = model(input_ids=ids, attention_mask=att, labels=lab)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 50 == 0 or step == steps - 1:
            log(f"  step {step} loss {out.loss.item():.3f}")


def stage_model() -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(2)
    tok = load_hf_tokenizer(legacy=True)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=BOS, eos_token_id=EOS)
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(cfg).float()
    train_chat(model, tok, NAME, steps=400, batch=16, lr=3e-3, seed=1)
    model.eval()
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS)
    for name, legacy in [(NAME, True), (f"{NAME}-t5default", False)]:
        out = MODELS / name
        if out.exists():
            shutil.rmtree(out)
        model.save_pretrained(out)
        load_hf_tokenizer(legacy).save_pretrained(out)
        re = AutoTokenizer.from_pretrained(out)
        first = re.convert_ids_to_tokens(re("<s>[INST]", add_special_tokens=False)["input_ids"])[1]
        assert first == ("\u2581[" if legacy else "["), (name, first)
        # Llama 2 / Mistral repositories ship the SentencePiece model beside tokenizer.json; the
        # converter reads it (`_set_vocab_sentencepiece`) in preference to tokenizer.json.
        shutil.copy(TOK_DIR / "tokenizer.model", out / "tokenizer.model")
        log(f"saved {out}: {sorted(p.name for p in out.iterdir())}")


# ---------------------------------------------------------------------------------------------
# transformers goldens


def load_model(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()


def golden_sequences(model, tok):
    import torch

    G = task_mod()
    seqs = []
    for p in G.golden_prompts():
        text = tok.apply_chat_template(p["messages"], tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out, stopped = list(ids), False
        with torch.no_grad():
            for _ in range(MAX_NEW):
                nxt = int(model(input_ids=torch.tensor([out])).logits[0, -1].argmax())
                if nxt == EOS:
                    stopped = True
                    break
                out.append(nxt)
        seqs.append({"prompt_len": len(ids), "input_ids": out + [EOS], "stopped": stopped, "prompt_text": text})
    return seqs


def save_goldens(name: str) -> None:
    """transformers f32 logits + hidden states of models/`name` on its own greedy answers to the
    golden prompts, as goldens/`name`.safetensors; P(EOS) and stop rate recorded."""
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    torch.set_num_threads(2)
    path = MODELS / name
    model = load_model(path)
    tok = AutoTokenizer.from_pretrained(path)
    seqs = golden_sequences(model, tok)
    tensors, meta = {}, {"variant": name, "v_torch": torch.__version__, "v_transformers": transformers.__version__,
                         "producer": "transformers f32 eager forward of the bf16 checkpoint (upcast on load)"}
    p_eos = []
    with torch.no_grad():
        for i, s in enumerate(seqs):
            ids = torch.tensor(s["input_ids"])
            out = model(input_ids=ids[None], output_hidden_states=True)
            tensors[f"input_ids.{i}"] = ids
            tensors[f"logits.{i}"] = out.logits[0].float().contiguous()
            tensors[f"hidden.{i}"] = torch.stack([h[0] for h in out.hidden_states]).float().contiguous()
            meta[f"prompt_len.{i}"] = str(s["prompt_len"])
            p_eos.append(float(torch.softmax(out.logits[0, -2].double(), -1)[EOS]))
            log(f"  {i}: {tok.decode(s['input_ids'])!r} stopped={s['stopped']}")
    save_file(tensors, str(GOLD / f"{name}.safetensors"), metadata=meta)
    record(name, {"p_eos_turn_end": p_eos, "greedy_stop_rate": sum(s["stopped"] for s in seqs) / len(seqs),
                  "T": [len(s["input_ids"]) for s in seqs], "prompt_len": [s["prompt_len"] for s in seqs]})


def stage_goldens() -> None:
    save_goldens(NAME)


# ---------------------------------------------------------------------------------------------
# GGUF


def run_converter(model_dir: Path, out: Path, outtype: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(LLAMACPP / "gguf-py"))
    cmd = [sys.executable, str(LLAMACPP / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(out),
           "--outtype", outtype]
    log("  " + " ".join(cmd[1:]))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


class LlamaCpp:
    """llama.cpp's libllama through ctypes (what llama-cpp-python does, without building it): only
    the calls the goldens need. Structs passed by value are opaque buffers larger than llama.h's
    (a struct over 16 bytes travels in memory on x86-64, so extra bytes after it are ignored);
    the context fields set are the first nine `uint32_t`/`int32_t` of `llama_context_params`."""

    def __init__(self, gguf: Path, n_ctx: int = 256, threads: int = 2):
        import ctypes as C

        self.C = C
        lib = C.CDLL(str(LLAMACPP_BIN / "libllama.so"))

        class Blob(C.Structure):
            _fields_ = [("b", C.c_ubyte * 1024)]

        class Batch(C.Structure):
            _fields_ = [("n_tokens", C.c_int32), ("token", C.POINTER(C.c_int32)), ("embd", C.POINTER(C.c_float)),
                        ("pos", C.POINTER(C.c_int32)), ("n_seq_id", C.POINTER(C.c_int32)),
                        ("seq_id", C.POINTER(C.POINTER(C.c_int32))), ("logits", C.POINTER(C.c_int8))]

        self.Batch = Batch
        lib.llama_backend_init.restype = None
        lib.llama_backend_init()
        lib.llama_model_default_params.restype = Blob
        lib.llama_context_default_params.restype = Blob
        lib.llama_model_load_from_file.restype = C.c_void_p
        lib.llama_model_load_from_file.argtypes = [C.c_char_p, Blob]
        lib.llama_init_from_model.restype = C.c_void_p
        lib.llama_init_from_model.argtypes = [C.c_void_p, Blob]
        lib.llama_model_get_vocab.restype = C.c_void_p
        lib.llama_model_get_vocab.argtypes = [C.c_void_p]
        lib.llama_vocab_n_tokens.restype = C.c_int32
        lib.llama_vocab_n_tokens.argtypes = [C.c_void_p]
        lib.llama_tokenize.restype = C.c_int32
        lib.llama_tokenize.argtypes = [C.c_void_p, C.c_char_p, C.c_int32, C.POINTER(C.c_int32), C.c_int32, C.c_bool, C.c_bool]
        lib.llama_batch_init.restype = Batch
        lib.llama_batch_init.argtypes = [C.c_int32, C.c_int32, C.c_int32]
        lib.llama_batch_free.restype = None
        lib.llama_batch_free.argtypes = [Batch]
        lib.llama_decode.restype = C.c_int32
        lib.llama_decode.argtypes = [C.c_void_p, Batch]
        lib.llama_get_logits_ith.restype = C.POINTER(C.c_float)
        lib.llama_get_logits_ith.argtypes = [C.c_void_p, C.c_int32]
        lib.llama_free.argtypes = [C.c_void_p]
        lib.llama_model_free.argtypes = [C.c_void_p]
        self.lib = lib
        self.model = lib.llama_model_load_from_file(str(gguf).encode(), lib.llama_model_default_params())
        assert self.model, f"llama.cpp could not load {gguf}"
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx = n_ctx
        self.threads = threads

    def tokenize(self, text: str, add_special: bool, parse_special: bool = True) -> list[int]:
        C = self.C
        raw = text.encode()
        buf = (C.c_int32 * (len(raw) + 8))()
        n = self.lib.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), add_special, parse_special)
        assert n >= 0, n
        return list(buf[:n])

    def logits(self, ids: list[int]):
        """Every position's logits for `ids` fed as one sequence to a fresh context."""
        import numpy as np

        C = self.C
        cp = self.lib.llama_context_default_params()
        words = (C.c_uint32 * 9).from_buffer(cp)
        words[0] = words[1] = words[2] = self.n_ctx  # n_ctx, n_batch, n_ubatch
        words[7] = words[8] = self.threads  # n_threads, n_threads_batch
        ctx = self.lib.llama_init_from_model(self.model, cp)
        assert ctx, "llama_init_from_model failed"
        b = self.lib.llama_batch_init(len(ids), 0, 1)
        for i, t in enumerate(ids):
            b.token[i] = t
            b.pos[i] = i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1
        b.n_tokens = len(ids)
        rc = self.lib.llama_decode(ctx, b)
        assert rc == 0, f"llama_decode: {rc}"
        out = np.stack([np.ctypeslib.as_array(self.lib.llama_get_logits_ith(ctx, i), shape=(self.n_vocab,)).copy()
                        for i in range(len(ids))])
        self.lib.llama_batch_free(b)
        self.lib.llama_free(ctx)
        return out.astype(np.float32)


def golden_context(name: str):
    """models/`name`'s transformers golden (tensors, metadata) and its 4 prompts rendered by its
    own chat template: what the llama.cpp goldens are made and checked on."""
    from safetensors import safe_open
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    ref_path = GOLD / f"{name}.safetensors"
    ref = load_file(str(ref_path))
    with safe_open(str(ref_path), "np") as st:
        rmeta = st.metadata()
    tok = AutoTokenizer.from_pretrained(MODELS / name)
    prompts = [tok.apply_chat_template(p["messages"], tokenize=False) for p in task_mod().golden_prompts()]
    return ref, rmeta, prompts


def llama_cpp_golden(name: str, path: Path, tag: str, ref, rmeta, prompts) -> dict:
    """llama.cpp's logits for GGUF `path` on the golden ids of `ref` (golden_context), saved as
    goldens/gguf-`name`-`tag`.safetensors; its distance to transformers and whether its own
    tokenization of each prompt gives the same ids recorded and returned."""
    import numpy as np
    from safetensors.numpy import save_file

    llm = LlamaCpp(path)
    tensors = {}
    meta = {"variant": f"gguf-{name}-{tag}", "gguf_file": f"gguf/{path.name}", "v_llama_cpp": LLAMACPP_VERSION,
            "producer": "llama.cpp libllama (ctypes): llama_decode of input_ids as one batch, logits at every position"}
    dmax, same, kls, tok_equal = 0.0, [], [], []
    for i in range(len([k for k in ref if k.startswith("input_ids.")])):
        ids = [int(x) for x in ref[f"input_ids.{i}"]]
        logits = llm.logits(ids)
        plen = int(rmeta[f"prompt_len.{i}"])
        # llama.cpp's own tokenization of the rendered prompt (BOS is in the text: no BOS added)
        tok_equal.append(llm.tokenize(prompts[i], add_special=False) == ids[:plen])
        tensors[f"input_ids.{i}"] = np.array(ids, dtype=np.int64)
        tensors[f"logits.{i}"] = np.ascontiguousarray(logits)
        meta[f"prompt_len.{i}"] = rmeta[f"prompt_len.{i}"]
        a = ref[f"logits.{i}"].astype(np.float64)
        b = logits.astype(np.float64)
        dmax = max(dmax, float(np.abs(a - b).max()))
        la = a - a.max(-1, keepdims=True); la -= np.log(np.exp(la).sum(-1, keepdims=True))
        lb = b - b.max(-1, keepdims=True); lb -= np.log(np.exp(lb).sum(-1, keepdims=True))
        kls.extend((np.exp(la) * (la - lb)).sum(-1).tolist())
        same.extend((a.argmax(-1) == b.argmax(-1)).tolist())
    save_file(tensors, str(GOLD / f"gguf-{name}-{tag}.safetensors"), metadata=meta)
    props = {"prompt_tokens_equal_hf": tok_equal, "max_abs_dlogit_vs_hf_f32": dmax,
             "kl_mean_vs_hf_f32": sum(kls) / len(kls), "same_top1_vs_hf_f32": sum(same) / len(same),
             "size_bytes": path.stat().st_size}
    record(f"gguf-{name}-{tag}", props)
    log(f"gguf-{name}-{tag}: {props}")
    return props


def stage_gguf() -> None:
    from transformers import AutoTokenizer

    SCRATCH.mkdir(parents=True, exist_ok=True)
    GGUF_DIR.mkdir(exist_ok=True)
    f16 = GGUF_DIR / f"{NAME}-f16.gguf"
    log(f"convert {NAME} -> f16")
    run_converter(MODELS / NAME, f16, "f16")
    q8 = GGUF_DIR / f"{NAME}-q8_0.gguf"
    log(f"llama-quantize {f16.name} -> {q8.name}")
    subprocess.run([str(LLAMACPP_BIN / "llama-quantize"), str(f16), str(q8), "Q8_0", "2"], check=True,
                   capture_output=True)

    # The wrong EOS, made the way users make it: the local copy's tokenizer_config.json names
    # `<unk>` as eos_token (Llama 2 fine-tuning scripts juggle `pad_token = unk_token`; here it
    # landed on eos) and the copy is converted. gguf-py's SpecialVocab takes eos from
    # tokenizer_config.json before config.json / generation_config.json.
    bad = SCRATCH / f"{NAME}-edited-eos"
    if bad.exists():
        shutil.rmtree(bad)
    shutil.copytree(MODELS / NAME, bad)
    tc = json.loads((bad / "tokenizer_config.json").read_text())
    tc["eos_token"] = "<unk>"
    (bad / "tokenizer_config.json").write_text(json.dumps(tc, indent=2) + "\n")
    wrong = GGUF_DIR / f"{NAME}-wrong-eos.gguf"
    log(f"convert {bad.name} (tokenizer_config eos_token = <unk>) -> f16")
    run_converter(bad, wrong, "f16")

    # Scores lost: the directory transformers 5 saves has no tokenizer.model (save_pretrained writes
    # tokenizer.json only); the converter then reads tokenizer.json through gguf-py's LlamaHfVocab,
    # which gives every token the score -1000 (`get_token_score` is a placeholder), and llama.cpp's
    # merge-by-score tokenizer degenerates to merging the leftmost pair.
    nomodel = SCRATCH / f"{NAME}-no-tokenizer-model"
    if nomodel.exists():
        shutil.rmtree(nomodel)
    shutil.copytree(MODELS / NAME, nomodel)
    (nomodel / "tokenizer.model").unlink()
    flat = GGUF_DIR / f"{NAME}-flat-scores-q8_0.gguf"
    log(f"convert {nomodel.name} (no tokenizer.model) -> q8_0")
    run_converter(nomodel, flat, "q8_0")

    ref, rmeta, prompts = golden_context(NAME)
    n = len([k for k in ref if k.startswith("input_ids.")])
    tok = AutoTokenizer.from_pretrained(MODELS / NAME)
    for path, tag in [(f16, "f16"), (q8, "q8_0")]:
        llama_cpp_golden(NAME, path, tag, ref, rmeta, prompts)
    record(f"gguf-{NAME}-wrong-eos", {"size_bytes": wrong.stat().st_size})
    fl = LlamaCpp(flat)
    record(f"gguf-{NAME}-flat-scores-q8_0", {"size_bytes": flat.stat().st_size, "prompt_tokens_equal_hf": [
        fl.tokenize(prompts[i], add_special=False) == [int(x) for x in ref[f"input_ids.{i}"]][: int(rmeta[f"prompt_len.{i}"])]
        for i in range(n)]})

    # Token ids of the probes and of the golden prompts: llama.cpp (special tokens parsed, no BOS
    # added) and the two transformers tokenizers, legacy (models/spm-llama) and transformers 5's default.
    tok5 = AutoTokenizer.from_pretrained(MODELS / f"{NAME}-t5default")
    llm = LlamaCpp(f16)
    rows = []
    for text in PROBES + prompts:
        rows.append({"text": text, "llama_cpp": llm.tokenize(text, add_special=False),
                     "transformers_legacy": tok(text, add_special_tokens=False)["input_ids"],
                     "transformers_default": tok5(text, add_special_tokens=False)["input_ids"]})
        if rows[-1]["llama_cpp"] != rows[-1]["transformers_legacy"]:
            log(f"  probe {text!r}: llama.cpp {rows[-1]['llama_cpp']} != transformers {rows[-1]['transformers_legacy']}")
        if rows[-1]["llama_cpp"] != rows[-1]["transformers_default"]:
            log(f"  probe {text!r}: llama.cpp != transformers 5 default")
    doc = {"gguf_file": f"gguf/{f16.name}", "v_llama_cpp": LLAMACPP_VERSION,
           "producer": "llama.cpp llama_tokenize(add_special=false, parse_special=true); "
                       "transformers tokenizer(text, add_special_tokens=False)", "probes": rows}
    (GOLD / "spm-tokenize.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    stages = {"tokenizer": stage_tokenizer, "model": stage_model, "goldens": stage_goldens, "gguf": stage_gguf}
    for s in (list(stages) if sys.argv[1:] == ["all"] else sys.argv[1:]):
        stages[s]()
