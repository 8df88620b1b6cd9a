"""Vision-language checkpoints (issue 14): the language model of a VLM, as transformers saves it, run
by the one decoder; and the text GGUF llama.cpp's converter makes of it, with and without the
`mmproj` file a VLM GGUF needs beside it.

    <main venv python> vlm.py hf gguf gguf-golden manifest     # ~20 s (the golden needs libllama, see moe.py)

`models/gemma3-vlm`: `Gemma3ForConditionalGeneration(Gemma3Config(text_config = Gemma3TextConfig(hidden 64,
intermediate 128, 2 sliding layers, 2 heads of 32, 1 kv head, window 16), vision_config =
SiglipVisionConfig(hidden 32, 1 layer, 28 px images in 14 px patches), mm_tokens_per_image 4))` — the
layout of every Gemma 3 from 4B up: `model.language_model.*`, `model.vision_tower.*`,
`model.multi_modal_projector.*`, config nested in `text_config`. Both layers slide (window 16): llama.cpp
0.3.36 runs Gemma 3 with its fixed 5-sliding-to-1-global pattern whatever `layer_types` says, so this
keeps the GGUF the same model as the HF directory (the zoo's gemma3 covers mixed layers). Random init (parity only), seed
`SEED + 80`, stored bf16 with the zoo tokenizer; golden as phi.py (transformers f32, the VLM's own
forward on text-only ids: logits + hidden states on moe.py's `golden_seqs`).

`models/qwen2.5-vl`: `Qwen2_5_VLForConditionalGeneration` (text: hidden 64, 2 layers, 2 heads, 1 kv head,
qkv bias, tied, rope 1e6 with mrope sections [4, 6, 6]; vision: a 1-block windowed ViT of width 32
merged to 64), seed `SEED + 81`; transformers 5.24 saves the hub's layout (`model.layers.*`, `visual.*`).
For text-only ids transformers gives all three mrope sections the same positions: plain 1-D rope.
`gguf/qwen2.5-vl-f16.gguf`: the converter's `qwen2vl` text GGUF (`rope.dimension_sections`
[4, 6, 6, 0]); `goldens/gguf-qwen2.5-vl-f16.safetensors`: llama.cpp's logits through llama_logits.c.

`gguf/gemma3-vlm-f16.gguf` (`convert_hf_to_gguf.py`, the text model; vision tensors skipped) and
`gguf/mmproj-gemma3-vlm-f16.gguf` (the same converter with `--mmproj`: the vision tower + projector,
`general.architecture = clip`). No llama.cpp golden: the text GGUF is a plain `gemma3` GGUF, whose graph
gguf-gemma3-{f16,q8_0} already hold the engine to; the test holds the engine on this GGUF to the
VLM's transformers golden at F16 tolerance (testdata is near its 200 MB cap).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import moe as M  # noqa: E402  (golden_seqs; imports generate as G with the peft stub)

G = M.G
GEMMA = "gemma3-vlm"
QWEN = "qwen2.5-vl"


def _dir_size(out: Path) -> int:
    return sum(f.stat().st_size for f in out.iterdir())


@torch.no_grad()
def stage_hf() -> None:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=256,
                            sliding_window=16, layer_types=["sliding_attention", "sliding_attention"], rms_norm_eps=1e-6,
                            query_pre_attn_scalar=32, bos_token_id=None, eos_token_id=G.IM_END, pad_token_id=G.PAD)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14, vision_use_head=False)
    cfg = Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                       eos_token_id=G.IM_END, pad_token_id=G.PAD, bos_token_id=None)
    torch.manual_seed(G.SEED + 80)
    model = Gemma3ForConditionalGeneration(cfg).float().eval()
    # transformers initialises the projector matrix to zeros (trained checkpoints never are): lint
    # would rightly call an all-zero matrix broken.
    model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.02)
    out = G.MODELS / GEMMA
    G.save_hf(model.to(torch.bfloat16), G.load_tok(), out)
    # What a Gemma 3 repository ships beside the weights (the mmproj converter reads its mean and
    # std), with google/gemma-3-4b-it's fields at this size; written as JSON because
    # Gemma3ImageProcessor needs torchvision, which the main venv does not have.
    import json

    (out / "preprocessor_config.json").write_text(json.dumps({
        "do_convert_rgb": None, "do_normalize": True, "do_pan_and_scan": None, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Gemma3ImageProcessor", "image_seq_length": 4,
        "image_std": [0.5, 0.5, 0.5], "processor_class": "Gemma3Processor", "resample": 2,
        "rescale_factor": 1 / 255, "size": {"height": 28, "width": 28}}, indent=2) + "\n")
    m = Gemma3ForConditionalGeneration.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    names = list(m.state_dict())
    assert any(n.startswith("model.language_model.layers.") for n in names), names[:5]
    M.save_hf_golden(m, GEMMA)
    G.log(f"{GEMMA}: {_dir_size(out)} bytes on disk; golden {(G.GOLD / f'{GEMMA}.safetensors').stat().st_size} bytes")

    # Qwen2.5-VL: a Qwen2 decoder (qkv bias) with mrope sections, a windowed ViT tower.
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    qcfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=256, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=G.IM_END, pad_token_id=G.PAD),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[0]),
        tie_word_embeddings=True, eos_token_id=G.IM_END, pad_token_id=G.PAD, bos_token_id=None,
        image_token_id=1000, video_token_id=1001, vision_start_token_id=1002, vision_end_token_id=1003)
    torch.manual_seed(G.SEED + 81)
    model = Qwen2_5_VLForConditionalGeneration(qcfg).float().eval()
    out = G.MODELS / QWEN
    G.save_hf(model.to(torch.bfloat16), G.load_tok(), out)
    m = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    M.save_hf_golden(m, QWEN)
    G.log(f"{QWEN}: {_dir_size(out)} bytes on disk; golden {(G.GOLD / f'{QWEN}.safetensors').stat().st_size} bytes")


def stage_gguf() -> None:
    import gguf_stage as S

    S.LLAMACPP = M.LLAMACPP
    text = S.GGUF_DIR / f"{GEMMA}-f16.gguf"
    S.run_converter(G.MODELS / GEMMA, text, "f16")
    # The projector: transformers 5.24 saves the SigLIP tower as `vision_tower.*`, the converter maps
    # the hub's `vision_tower.vision_model.*` (how google/gemma-3-*-it store it) and stops at the
    # first unknown name; a scratch copy with the hub's names is converted.
    import shutil
    from safetensors.torch import load_file, save_file

    import os

    hub = Path(os.environ.get("ZOO_SCRATCH", "/work/scratch/zoo")) / f"{GEMMA}-hub-names"
    if hub.exists():
        shutil.rmtree(hub)
    shutil.copytree(G.MODELS / GEMMA, hub)
    st = load_file(str(hub / "model.safetensors"))
    st = {("vision_tower.vision_model." + k[len("vision_tower."):] if k.startswith("vision_tower.") else k): v for k, v in st.items()}
    save_file(st, str(hub / "model.safetensors"), metadata={"format": "pt"})
    proj = S.GGUF_DIR / f"mmproj-{GEMMA}-f16.gguf"
    S.run_converter(hub, proj, "f16", ("--mmproj",))
    qwen = S.GGUF_DIR / f"{QWEN}-f16.gguf"
    S.run_converter(G.MODELS / QWEN, qwen, "f16")
    for p in (text, proj, qwen):
        G.log(f"{p.name}: {p.stat().st_size} bytes")


def stage_gguf_golden() -> None:
    """llama.cpp's logits for the Qwen2.5-VL text GGUF (`qwen2vl`: M-RoPE over
    `rope.dimension_sections`, which for text positions is plain rope), via llama_logits.c."""
    M.save_llama_cpp_golden(G.ROOT / "gguf" / f"{QWEN}-f16.gguf", f"gguf-{QWEN}-f16")


def G_canonical(name: str) -> str:
    """The text model's name of a VLM tensor (ckptcheck's `format::names::canonical_name`)."""
    for stored, canonical in [("language_model.model.", "model."), ("language_model.lm_head.", "lm_head."),
                              ("model.language_model.", "model.")]:
        if name.startswith(stored):
            return canonical + name[len(stored):]
    return name


def stage_manifest() -> None:
    """Adds (or refreshes) this script's entries in zoo.json; every other entry is left as it is."""
    import hashlib
    import json
    import math

    import transformers
    from safetensors import safe_open

    zoo = json.loads((G.ROOT / "zoo.json").read_text())
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()[:16]  # noqa: E731
    for name, cls in [(GEMMA, "Gemma3ForConditionalGeneration"), (QWEN, "Qwen2_5_VLForConditionalGeneration")]:
        d = G.MODELS / name
        cfg = json.loads((d / "config.json").read_text())
        st = safe_open(str(d / "model.safetensors"), "pt")
        shapes = {G_canonical(k): list(st.get_slice(k).get_shape()) for k in st.keys()}
        zoo["variants"][name] = {
            "dir": f"models/{name}", "kind": "hf", "arch": cfg["model_type"],
            "dtypes": sorted({str(st.get_slice(k).get_dtype()) for k in st.keys()}),
            "tool": f"transformers {transformers.__version__} save_pretrained ({cls}, random init)",
            "command": "python vlm.py hf", "expected_fault": None, "tensor_count": len(shapes),
            # Shapes under the text model's names (Gemma 3 stores `language_model.model.*`).
            "embed_shape": shapes.get("model.embed_tokens.weight"), "lm_head_shape": shapes.get("lm_head.weight"),
            "tokenizer_added_tokens": len(json.loads((d / "tokenizer.json").read_text())["added_tokens"]),
            "weights_sha256_16": sha(d / "model.safetensors"),
            "measured": {"params": sum(math.prod(s) for s in shapes.values())},
            "golden": {"path": f"goldens/{name}.safetensors", "has_hidden": True},
            "properties": {"text_model_type": cfg["text_config"]["model_type"], "vision_model_type": cfg["vision_config"]["model_type"]},
        }
    for name, what, parent in [(f"{GEMMA}-f16.gguf", "the text model", GEMMA),
                               (f"mmproj-{GEMMA}-f16.gguf", "--mmproj: vision tower + projector", GEMMA),
                               (f"{QWEN}-f16.gguf", "the text model, arch qwen2vl", QWEN)]:
        path = G.ROOT / "gguf" / name
        zoo["variants"]["gguf-" + name.removesuffix(".gguf")] = {
            "dir": "gguf", "path": f"gguf/{name}", "kind": "gguf", "arch": None, "dtypes": None,
            "tool": f"llama.cpp convert_hf_to_gguf.py --outtype f16 ({what}; {M.LLAMACPP})",
            "command": "python vlm.py gguf", "expected_fault": None, "parent": parent,
            "tensor_count": None, "embed_shape": None, "lm_head_shape": None, "tokenizer_added_tokens": None,
            "weights_sha256_16": sha(path), "measured": {"size_bytes": path.stat().st_size},
            "golden": ({"path": f"goldens/gguf-{QWEN}-f16.safetensors", "has_hidden": False} if parent == QWEN else None),
        }
    (G.ROOT / "zoo.json").write_text(json.dumps(zoo, indent=1) + "\n")
    G.log("zoo.json: VLM entries added")


if __name__ == "__main__":
    for stage in sys.argv[1:] or ["hf", "gguf", "gguf-golden", "manifest"]:
        {"hf": stage_hf, "gguf": stage_gguf, "gguf-golden": stage_gguf_golden, "manifest": stage_manifest}[stage]()
