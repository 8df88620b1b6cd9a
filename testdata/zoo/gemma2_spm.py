"""Gemma 2 with a SentencePiece vocabulary, and the Gemma 2 GGUF llama.cpp's converter makes of it
(issue 14: Gemma 2 GGUFs; the converter's Gemma2Model reads only a SentencePiece tokenizer.model,
which the zoo's other models, sharing one byte-level BPE tokenizer, do not have).

    <main venv python> gemma2_spm.py model goldens gguf    # ~3 min (training), needs libllama (see spm.py)

`models/gemma2-spm`: `Gemma2ForCausalLM(Gemma2Config(vocab 1000 (spm-tokenizer/tokenizer.model),
hidden 64, intermediate 128, 2 layers [sliding (window 16), full], 2 heads of 32, 1 kv head,
attention softcap 50, final softcap 30, query_pre_attn_scalar 32, tied embeddings))`, trained 300
steps on spm.py's chat tasks with Llama 2's template (the vocabulary has no <start_of_turn>), loss
on the answer + </s>, stored bf16; transformers 5's GemmaTokenizer from the SentencePiece model (no
space prefix, byte fallback) + the tokenizer.model a Gemma repository ships.
`goldens/gemma2-spm.safetensors`: transformers f32 eager (softcapping needs eager), its own greedy
answers on the 4 golden prompts, logits + hidden states. `gguf/gemma2-spm-f16.gguf`:
`convert_hf_to_gguf.py --outtype f16` (Gemma2Model: `+1` folded into the norms,
`gemma2.attn_logit_softcapping`, `.final_logit_softcapping`, `.attention.sliding_window`,
`add_space_prefix = false`); `goldens/gguf-gemma2-spm-f16.safetensors`: llama.cpp's logits on the
same ids (libllama through ctypes, spm.py's `LlamaCpp`), with llama.cpp's own tokenization of each
rendered prompt recorded in measured_spm.json.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spm as S  # noqa: E402

NAME = "gemma2-spm"
STEPS = 300


def load_tokenizer():
    from transformers import GemmaTokenizer

    src = S.SCRATCH / "tok-src"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copy(S.TOK_DIR / "tokenizer.model", src / "tokenizer.model")
    # The vocabulary has no <pad> or <mask>: <unk> pads (Gemma's own pad id is 0 too), and no mask
    # token is added past the 1000 ids the embedding has.
    tok = GemmaTokenizer.from_pretrained(src, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>",
                                         mask_token=None)
    assert len(tok) == S.VOCAB, len(tok)
    tok.chat_template = S.TEMPLATE
    return tok


def stage_model() -> None:
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM, GenerationConfig

    torch.set_num_threads(2)
    tok = load_tokenizer()
    cfg = Gemma2Config(vocab_size=S.VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, head_dim=32, max_position_embeddings=256, rms_norm_eps=1e-6,
                       sliding_window=16, layer_types=["sliding_attention", "full_attention"], attn_logit_softcapping=50.0,
                       final_logit_softcapping=30.0, query_pre_attn_scalar=32, tie_word_embeddings=True,
                       bos_token_id=S.BOS, eos_token_id=S.EOS, pad_token_id=S.UNK)
    torch.manual_seed(S.SEED + 90)
    model = Gemma2ForCausalLM(cfg).float()
    model.config._attn_implementation = "eager"
    S.train_chat(model, tok, NAME, steps=STEPS, batch=16, lr=3e-3, seed=2)
    model.eval()
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=S.BOS, eos_token_id=S.EOS, pad_token_id=S.UNK)
    out = S.MODELS / NAME
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # transformers records the scratch path it converted from; a real repository has no such field.
    tc = json.loads((out / "tokenizer_config.json").read_text())
    tc.pop("vocab_file", None)
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    # Gemma repositories ship the SentencePiece model beside tokenizer.json; the converter needs it.
    shutil.copy(S.TOK_DIR / "tokenizer.model", out / "tokenizer.model")
    S.log(f"saved {out}: {sorted(p.name for p in out.iterdir())}")


def stage_goldens() -> None:
    S.save_goldens(NAME)


def stage_gguf() -> None:
    S.GGUF_DIR.mkdir(exist_ok=True)
    f16 = S.GGUF_DIR / f"{NAME}-f16.gguf"
    S.log(f"convert {NAME} -> f16")
    S.run_converter(S.MODELS / NAME, f16, "f16")
    S.llama_cpp_golden(NAME, f16, "f16", *S.golden_context(NAME))


if __name__ == "__main__":
    stages = {"model": stage_model, "goldens": stage_goldens, "gguf": stage_gguf}
    for s in sys.argv[1:] or list(stages):
        stages[s]()
