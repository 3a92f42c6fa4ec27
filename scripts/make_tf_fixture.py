"""Write tiny TensorFlow checkpoints that the NumPy reader must reproduce exactly (dev only).

Run with the TensorFlow venv:  /work/venvs/tf/bin/python scripts/make_tf_fixture.py

Writes under tests/fixtures/tf_tiny/:
- gpt2/       a GPT-2-named checkpoint (2 layers, n_embd 8, n_vocab 20, n_ctx 8, n_head 2)
              written by tf.compat.v1.train.Saver in graph mode, plus hparams.json;
- gpt2_expected.npz   the same arrays (OpenAI names -> arrays, w with its leading 1 axis);
- dtypes/     a checkpoint of one tensor per dtype (float64, int32, float16, bfloat16, int64,
              uint8, bool, a scalar, an empty tensor), and dtypes_expected.npz
              (bfloat16 stored there as its float32 value);
- made_by.json  the script and the versions.
"""

import json
import pathlib
import platform
import shutil

import numpy as np
import tensorflow as tf

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tf_tiny"
HP = {"n_vocab": 20, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 2}


def gpt2_arrays(rng):
    d, out = HP["n_embd"], {}
    out["model/wte"] = rng.standard_normal((HP["n_vocab"], d))
    out["model/wpe"] = rng.standard_normal((HP["n_ctx"], d))
    for i in range(HP["n_layer"]):
        p = f"model/h{i}/"
        out[p + "ln_1/g"] = 1 + 0.1 * rng.standard_normal(d)
        out[p + "ln_1/b"] = rng.standard_normal(d)
        out[p + "attn/c_attn/w"] = rng.standard_normal((1, d, 3 * d))
        out[p + "attn/c_attn/b"] = rng.standard_normal(3 * d)
        out[p + "attn/c_proj/w"] = rng.standard_normal((1, d, d))
        out[p + "attn/c_proj/b"] = rng.standard_normal(d)
        out[p + "ln_2/g"] = 1 + 0.1 * rng.standard_normal(d)
        out[p + "ln_2/b"] = rng.standard_normal(d)
        out[p + "mlp/c_fc/w"] = rng.standard_normal((1, d, 4 * d))
        out[p + "mlp/c_fc/b"] = rng.standard_normal(4 * d)
        out[p + "mlp/c_proj/w"] = rng.standard_normal((1, 4 * d, d))
        out[p + "mlp/c_proj/b"] = rng.standard_normal(d)
    out["model/ln_f/g"] = 1 + 0.1 * rng.standard_normal(d)
    out["model/ln_f/b"] = rng.standard_normal(d)
    return {k: (0.02 * v if k.endswith("/w") or k.endswith("wte") or k.endswith("wpe") else v).astype(np.float32)
            for k, v in out.items()}


def save(folder: pathlib.Path, arrays: dict, tf_dtypes: dict | None = None):
    """Variables named exactly like ``arrays``' keys, saved by the v1 Saver as folder/model.ckpt."""
    folder.mkdir(parents=True)
    graph = tf.Graph()
    with graph.as_default():
        variables = []
        for name, value in arrays.items():
            dtype = (tf_dtypes or {}).get(name)
            init = tf.constant(value, dtype=dtype) if dtype is not None else tf.constant(value)
            variables.append(tf.compat.v1.get_variable(name, initializer=init))
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(folder / "model.ckpt"), write_meta_graph=False)
            # read back through TF itself: the expected values are what TF holds
            return {v.op.name: sess.run(v) for v in variables}


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    rng = np.random.default_rng(20190214)

    got = save(OUT / "gpt2", gpt2_arrays(rng))
    (OUT / "gpt2" / "hparams.json").write_text(json.dumps(HP, indent=2) + "\n")
    np.savez(OUT / "gpt2_expected.npz", **got)

    dt = {
        "f64": (rng.standard_normal((2, 3)), tf.float64),
        "i32": (rng.integers(-1000, 1000, (4,)), tf.int32),
        "f16": (rng.standard_normal((3, 2)), tf.float16),
        "bf16": (rng.standard_normal((5,)), tf.bfloat16),
        "i64": (rng.integers(-2**40, 2**40, (2, 2)), tf.int64),
        "u8": (rng.integers(0, 256, (3,)), tf.uint8),
        "flag": (np.array([True, False, True]), tf.bool),
        "scalar": (np.array(3.5), tf.float32),
        "empty": (np.zeros((0, 3)), tf.float32),
    }
    got = save(OUT / "dtypes", {k: v for k, (v, _) in dt.items()}, {k: t for k, (_, t) in dt.items()})
    expected = {}
    for k, v in got.items():
        v = np.asarray(v)
        if k == "bf16":
            v = v.astype(np.float32)  # numpy has no bfloat16: compare as float32 values
        expected[k] = v
    np.savez(OUT / "dtypes_expected.npz", **expected)

    (OUT / "made_by.json").write_text(json.dumps({
        "script": "scripts/make_tf_fixture.py",
        "tensorflow": tf.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "hparams": HP,
    }, indent=2) + "\n")
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(p.relative_to(OUT), p.stat().st_size)


if __name__ == "__main__":
    main()
