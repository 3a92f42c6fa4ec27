"""Write tiny safetensors files with Hugging Face's own library (dev only).

Run with the dev venv:  /work/venvs/dev/bin/python scripts/make_safetensors_fixture.py

Writes under tests/fixtures/st_tiny/:
- gpt2.safetensors         HF GPT-2 names without prefix (wte.weight, h.0.attn.c_attn.weight, ...),
                           the h.<i>.attn.bias causal-mask buffers, F32;
                           n_vocab 20, n_ctx 8, n_embd 64, n_layer 2 (so n_head = 1 is inferable)
- gpt2_prefixed.safetensors  'transformer.'-prefixed names, attn.masked_bias scalars, a tied
                           lm_head.weight; n_embd 8, n_head 2 (config must be given)
- gpt2_f16.safetensors     the prefixed model's weights in F16 (no buffers)
- mixed.safetensors        one tensor per dtype, written from torch: BF16, F16, F64, I64, I32, U8, BOOL
- *_expected.npz           the arrays each file holds (flattened gpt2np names for the models,
                           float32 values for F16/BF16), written with numpy
- made_by.json             the script and the versions.
"""

import json
import pathlib
import platform
import shutil

import numpy as np
import safetensors
import torch
from safetensors.numpy import save_file as np_save
from safetensors.torch import save_file as torch_save

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "st_tiny"


def model(rng, n_vocab, n_ctx, d, n_layer):
    """HF names -> float32 arrays, and the same arrays under gpt2np's flat names."""
    hf, flat = {}, {}

    def put(hf_name, flat_name, shape, scale=0.02, offset=0.0):
        a = (offset + scale * rng.standard_normal(shape)).astype(np.float32)
        hf[hf_name], flat[flat_name] = a, a

    put("wte.weight", "wte", (n_vocab, d))
    put("wpe.weight", "wpe", (n_ctx, d), 0.01)
    for i in range(n_layer):
        h, b = f"h.{i}.", f"blocks.{i}."
        put(h + "ln_1.weight", b + "ln_1.g", (d,), 0.1, 1.0)
        put(h + "ln_1.bias", b + "ln_1.b", (d,), 0.1)
        put(h + "attn.c_attn.weight", b + "attn.c_attn.w", (d, 3 * d))
        put(h + "attn.c_attn.bias", b + "attn.c_attn.b", (3 * d,))
        put(h + "attn.c_proj.weight", b + "attn.c_proj.w", (d, d))
        put(h + "attn.c_proj.bias", b + "attn.c_proj.b", (d,))
        put(h + "ln_2.weight", b + "ln_2.g", (d,), 0.1, 1.0)
        put(h + "ln_2.bias", b + "ln_2.b", (d,), 0.1)
        put(h + "mlp.c_fc.weight", b + "mlp.c_fc.w", (d, 4 * d))
        put(h + "mlp.c_fc.bias", b + "mlp.c_fc.b", (4 * d,))
        put(h + "mlp.c_proj.weight", b + "mlp.c_proj.w", (4 * d, d))
        put(h + "mlp.c_proj.bias", b + "mlp.c_proj.b", (d,))
    put("ln_f.weight", "ln_f.g", (d,), 0.1, 1.0)
    put("ln_f.bias", "ln_f.b", (d,), 0.1)
    return hf, flat


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    rng = np.random.default_rng(2019)

    # 1. plain HF names + causal-mask buffers, like openai-community/gpt2's file
    hp1 = {"n_vocab": 20, "n_ctx": 8, "n_embd": 64, "n_head": 1, "n_layer": 2}
    hf, flat = model(rng, 20, 8, 64, 2)
    mask = np.tril(np.ones((8, 8), np.float32)).reshape(1, 1, 8, 8)
    for i in range(2):
        hf[f"h.{i}.attn.bias"] = mask
    np_save(hf, OUT / "gpt2.safetensors", metadata={"format": "pt"})
    np.savez(OUT / "gpt2_expected.npz", **flat, **{"hparams." + k: np.int64(v) for k, v in hp1.items()})

    # 2. 'transformer.' prefix, masked_bias buffers, tied lm_head
    hp2 = {"n_vocab": 20, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 2}
    hf, flat = model(rng, 20, 8, 8, 2)
    pre = {"transformer." + k: v for k, v in hf.items()}
    for i in range(2):
        pre[f"transformer.h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
        pre[f"transformer.h.{i}.attn.bias"] = mask
    pre["lm_head.weight"] = hf["wte.weight"].copy()
    np_save(pre, OUT / "gpt2_prefixed.safetensors")
    np.savez(OUT / "gpt2_prefixed_expected.npz", **flat, **{"hparams." + k: np.int64(v) for k, v in hp2.items()})

    # 3. the same weights in F16
    np_save({k: v.astype(np.float16) for k, v in hf.items()}, OUT / "gpt2_f16.safetensors")
    np.savez(OUT / "gpt2_f16_expected.npz", **{k: v.astype(np.float16).astype(np.float32) for k, v in flat.items()})

    # 4. one tensor per dtype, from torch (numpy has no bfloat16)
    t = {
        "bf16": torch.tensor(rng.standard_normal(6), dtype=torch.bfloat16).reshape(2, 3),
        "f16": torch.tensor(rng.standard_normal(4), dtype=torch.float16),
        "f64": torch.tensor(rng.standard_normal((2, 2)), dtype=torch.float64),
        "i64": torch.tensor(rng.integers(-2**40, 2**40, 3), dtype=torch.int64),
        "i32": torch.tensor(rng.integers(-1000, 1000, 3), dtype=torch.int32),
        "u8": torch.tensor(rng.integers(0, 256, 5), dtype=torch.uint8),
        "flag": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros((0, 4)),
    }
    torch_save(t, str(OUT / "mixed.safetensors"))
    np.savez(OUT / "mixed_expected.npz",
             **{k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in t.items()})

    (OUT / "made_by.json").write_text(json.dumps({
        "script": "scripts/make_safetensors_fixture.py",
        "safetensors": safetensors.__version__, "torch": torch.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
        "hparams": {"gpt2.safetensors": hp1, "gpt2_prefixed.safetensors": hp2, "gpt2_f16.safetensors": hp2},
    }, indent=2) + "\n")
    for p in sorted(OUT.iterdir()):
        print(p.name, p.stat().st_size)


if __name__ == "__main__":
    main()
