"""Mistral's tekken vocabulary in a GGUF (issue 14): a byte-level BPE whose split regex is
Mistral NeMo's (`tokenizer.ggml.pre = "tekken"` in llama.cpp: that regex, ignore_merges, BOS added).

    /work/venvs/main/bin/python tekken.py      # ~10 s; needs /work/llama.cpp (converter, libllama)

Writes:
  models/mistral-tekken/        MistralForCausalLM (hidden 64, 2 layers, random init: parity only)
                                with a tokenizer trained here by `tokenizers` (BpeTrainer, vocab
                                1024) under NeMo's pre-tokenizer: Split(the tekken regex, Isolated)
                                + ByteLevel(use_regex false), specials <unk> <s> </s> [INST] [/INST],
                                a BOS post-processor and NeMo's `[INST]…[/INST]` chat template
  gguf/mistral-tekken-f16.gguf  llama.cpp's convert_hf_to_gguf.py --outtype f16. The converter names
                                the pre-tokenizer by the hash of the tokenizer's output on its probe
                                text (`get_vocab_base_pre`); NeMo's hash cannot come from a vocabulary
                                trained here, so this vocabulary's hash is registered as "tekken", as
                                convert_hf_to_gguf_update.py registers a new model's
  goldens/tekken-tokenize.json  llama.cpp's llama_tokenize ids and transformers' for probe strings
                                and the rendered golden prompts
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate as G  # noqa: E402

NAME = "mistral-tekken"
OUT = G.MODELS / NAME
GGUF = G.ROOT / "gguf" / f"{NAME}-f16.gguf"
# Mistral NeMo's tokenizer.json Split regex (llama.cpp quotes it as tekken's "original regex").
TEKKEN_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
                r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
TEMPLATE = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
            "{{ '[INST]' + message['content'] + '[/INST]' }}{% else %}{{ message['content'] + eos_token }}"
            "{% endif %}{% endfor %}")
PROBES = [
    "Count from 3 to 8.",
    "Hello World, HELLO world, helloWorld",
    "  two  leading spaces and  double  spaces ",
    "line one\nline two\n\n\ttabbed\r\nwindows",
    "digits 1234567890 and 3.14",
    "path/to/file.txt and a/b/c // comment",
    "unicode: café, Grüße, ÉCOLE, 日本語, emoji 🙂",
    "[INST]Reverse: apple river stone[/INST]stone river apple</s><s>[INST]again[/INST]",
    "</s>",
    "",
]


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers, Regex

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(TEKKEN_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(G.corpus_text().splitlines(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    return tok


def hf_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    t = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    t.chat_template = TEMPLATE
    return t


@torch.no_grad()
def stage_hf():
    from transformers import GenerationConfig, MistralConfig, MistralForCausalLM

    tok = hf_tokenizer(train_tokenizer())
    assert [tok.convert_tokens_to_ids(s) for s in SPECIALS] == [0, 1, 2, 3, 4]
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                        rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None, bos_token_id=1, eos_token_id=2,
                        pad_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(G.SEED + 80)
    model = MistralForCausalLM(cfg).eval()
    if OUT.exists():
        shutil.rmtree(OUT)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2)
    model.to(torch.bfloat16).save_pretrained(OUT)
    tok.save_pretrained(OUT)
    G.log(f"{NAME}: vocab {len(tok)}, {sum(f.stat().st_size for f in OUT.iterdir())} bytes")


def stage_gguf():
    import gguf_stage as S
    import moe

    S.LLAMACPP = moe.LLAMACPP
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / NAME
        shutil.copytree(OUT, src)
        S.run_converter(src, GGUF, "f16", unknown_pre="tekken")
    G.log(f"{GGUF.name}: {GGUF.stat().st_size} bytes")


def stage_tokenize_golden():
    from transformers import AutoTokenizer

    import spm

    tok = AutoTokenizer.from_pretrained(OUT)
    llm = spm.LlamaCpp(GGUF)
    prompts = [tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False) for p in G.golden_prompts()]
    rows, differ = [], 0
    for text in PROBES + prompts:
        row = {"text": text, "llama_cpp": llm.tokenize(text, add_special=False),
               "llama_cpp_add_special": llm.tokenize(text, add_special=True),
               "transformers": tok(text, add_special_tokens=False)["input_ids"]}
        if row["llama_cpp"] != row["transformers"]:
            differ += 1
            G.log(f"  {text!r}: llama.cpp {row['llama_cpp']} != transformers {row['transformers']}")
        rows.append(row)
    doc = {"gguf_file": f"gguf/{GGUF.name}", "producer": "llama.cpp llama_tokenize(parse_special=true) with "
           "add_special false and true; transformers tokenizer(text, add_special_tokens=False)", "probes": rows}
    (G.GOLD / "tekken-tokenize.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    G.log(f"tekken-tokenize.json: {len(rows)} strings, {differ} where llama.cpp and transformers differ")


if __name__ == "__main__":
    for s in sys.argv[1:] or ["hf", "gguf", "tokenize"]:
        {"hf": stage_hf, "gguf": stage_gguf, "tokenize": stage_tokenize_golden}[s]()
