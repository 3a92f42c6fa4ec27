"""GPT-2 the model: ``GPT2(config, params)``, with everything a user needs around the formulas.

The forward pass is :func:`gpt2np.layers.gpt2`, the composition of the formulas of
:mod:`gpt2np.layers` (embedding, the blocks, the final norm, the tied head); ``GPT2.__call__``
computes it with the fast block of :mod:`gpt2np.kernels`, and ``tests/test_kernels.py`` proves
the two equal.  Around it: shape checks with useful errors, left-padded batches (an attention
mask), a preallocated KV cache for generation, ``trace`` (every intermediate by name, from
``layers.gpt2`` with a Record), ``loss``, ``generate_ids`` (the loop of
:mod:`gpt2np.generation`), and loading and saving (through :mod:`gpt2np.formats` and
:mod:`gpt2np.hub`, imported where they are used).  ``Config`` and the params tree's shapes live
in :mod:`gpt2np.config` (see docs/architecture.md).
"""

from __future__ import annotations

import functools
import json
import pathlib

import numpy as np

from . import kernels, layers, parallel
from .layers import MASKED, embedding, layer_norm, log_softmax
from .config import PRESETS, Config, check_params, float_dtype, map_tree, param_shapes, walk  # noqa: F401
# (Config, PRESETS and param_shapes are defined in gpt2np/config.py and re-exported here)


# --------------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------------


class KVCache:
    """Keys and values of the tokens seen so far, so each new token runs through the model alone.

    Preallocated once for ``max_len`` positions and filled in place (never re-concatenated):

    - ``keys``, ``values``: ``[n_layer, B, H, max_len, dh]``; layer i's are ``keys[i]``
    - ``mask``: ``[B, max_len]`` bool, True where a real token (not padding) is stored
    - ``next_position``: ``[B]``, the position id the next real token of each row gets
    - ``length``: how many positions are filled (the same for every row; padding included)

    Make one with :meth:`GPT2.new_cache`; pass it to every call of the model.
    """

    def __init__(self, config: Config, batch_size: int = 1, max_len: int | None = None, dtype=np.float32):
        max_len = config.n_ctx if max_len is None else int(max_len)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 1 <= max_len <= config.n_ctx:
            raise ValueError(f"max_len must be between 1 and n_ctx={config.n_ctx}, got {max_len}")
        shape = (config.n_layer, int(batch_size), config.n_head, max_len, config.head_dim)
        self.keys = np.zeros(shape, dtype=dtype)
        self.values = np.zeros(shape, dtype=dtype)
        self.mask = np.zeros((int(batch_size), max_len), dtype=bool)
        self.next_position = np.zeros(int(batch_size), dtype=np.int64)
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    @property
    def dtype(self) -> np.dtype:
        return self.keys.dtype

    def reset(self) -> None:
        """Forget every stored token (the arrays are reused)."""
        self.mask[:] = False
        self.next_position[:] = 0
        self.length = 0

    def _append(self, layer: int, k: np.ndarray, v: np.ndarray):
        """Write this call's keys/values ``[B, H, T, dh]`` after the stored ones and return
        all of them, ``[B, H, length + T, dh]`` (views into the preallocated arrays)."""
        end = self.length + k.shape[-2]
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def __repr__(self) -> str:
        return (f"KVCache(batch_size={self.batch_size}, length={self.length}, max_len={self.max_len}, "
                f"dtype={self.dtype})")


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class GPT2:
    """GPT-2 in NumPy: ``GPT2(config, params)`` with the params tree of docs/architecture.md.

    The computation runs in the params' dtype (float32, or float64 after ``astype(np.float64)``).
    """

    def __init__(self, config: Config, params: dict):
        if not isinstance(config, Config):
            raise TypeError(f"config must be a gpt2np.Config, found {type(config).__name__}")
        self.dtype = check_params(config, params)
        self.config = config
        self.params = params

    # ---- construction helpers ----------------------------------------------------------------

    @classmethod
    def random(cls, config: "Config | str" = "124M", seed: int = 0, dtype=np.float32) -> "GPT2":
        """A model with deterministic random weights, initialised as GPT-2 was trained from:

        weights ~ N(0, 0.02²), the residual projections (``c_proj``) ~ N(0, (0.02/√(2L))²),
        biases 0, layer norms g = 1, b = 0.  The same seed gives the same weights in any dtype
        (they are drawn in float64 and then rounded).
        """
        config = Config.preset(config) if isinstance(config, str) else config
        dtype = float_dtype(dtype)
        rng = np.random.default_rng(seed)
        proj_std = 0.02 / (2 * config.n_layer) ** 0.5

        def init(path, shape):  # path: ("blocks", 0, "attn", "c_proj", "w"), ...; drawn in the tree's order
            if any(str(key).startswith("ln") for key in path):
                return (np.ones if path[-1] == "g" else np.zeros)(shape, dtype=dtype)
            if path[-1] == "b":
                return np.zeros(shape, dtype=dtype)
            std = proj_std if path[-2:] == ("c_proj", "w") else 0.02
            return (rng.standard_normal(shape) * std).astype(dtype)

        return cls(config, map_tree(init, param_shapes(config)))

    def astype(self, dtype) -> "GPT2":
        """The same model computing in ``dtype`` (float32 or float64); arrays already in that dtype are shared."""
        dtype = float_dtype(dtype)
        return GPT2(self.config, map_tree(lambda _, a: a.astype(dtype, copy=False), self.params))

    def num_params(self) -> int:
        """Number of weights in the params tree (124,439,808 for 124M)."""
        return sum(a.size for _, a in walk(self.params))

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> KVCache:
        """An empty KV cache for ``batch_size`` rows and up to ``max_len`` positions (default n_ctx)."""
        return KVCache(self.config, batch_size, max_len, dtype=self.dtype)

    def __repr__(self) -> str:
        c = self.config
        return (f"GPT2(n_layer={c.n_layer}, n_embd={c.n_embd}, n_head={c.n_head}, n_ctx={c.n_ctx}, "
                f"n_vocab={c.n_vocab}, dtype={self.dtype}, params={self.num_params():,})")

    # ---- the forward pass --------------------------------------------------------------------

    def __call__(self, ids, attention_mask=None, cache: KVCache | None = None, last_only: bool = False):
        """Logits of the next token after each position.

        ids ``[T]`` -> ``[T, V]``, or ids ``[B, T]`` -> ``[B, T, V]``; with ``last_only`` only the
        final position's logits, ``ids.shape[:-1] + (V,)``.

        attention_mask ``[B, T]`` (or ``[T]``): 1 = token, 0 = padding (pad on the left).  Each
        token's position id is the number of real tokens before it in its row, and padded
        tokens are hidden from every query, so each real row gives what it would alone.

        cache: a :class:`KVCache`.  The tokens are appended after those already stored; their
        positions and visibility continue from the stored ones.  Only these tokens are computed.
        """
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache (from model.new_cache), found {type(cache).__name__}")
        ids, single = self._check_ids(ids)
        B, T = ids.shape
        real = self._check_mask(attention_mask, ids.shape)  # [B, T] bool
        past = 0 if cache is None else cache.length
        self._check_length(past, T, cache, B)
        p = self.params

        start = np.zeros(B, np.int64) if cache is None else cache.next_position
        positions = np.maximum(start[:, None] + np.cumsum(real, axis=1) - 1, 0)  # [B, T]
        if cache is not None:
            cache.mask[:, past:past + T] = real
            cache.next_position = start + real.sum(axis=1)
            real = cache.mask[:, :past + T]  # [B, S]: which keys are real tokens
        mask = self._attention_mask(real, T)  # [B, 1, T, S] or None (no padding)
        causal = T > 1  # (one new token sees every stored key: nothing to hide)

        # layers.gpt2, computed by the kernels (in place, attention in tiles, threads for long inputs)
        x = embedding(ids, positions, p["wte"], p["wpe"])  # [B, T, d]
        workers = parallel.threads_for(B * T)  # a long input's rows are shared among the cores
        with parallel.threads(workers):
            for i, blk in enumerate(p["blocks"]):
                kv_store = None if cache is None else functools.partial(cache._append, i)
                x = kernels.block(x, blk, self.config.n_head, mask, kv_store, causal, workers)  # in place
            if last_only:
                x = x[:, -1]  # [B, d]: the head (the largest matmul) only where it is needed
            logits = kernels.tied_head(layer_norm(x, **p["ln_f"]), p["wte"], workers)  # [B, (T,) V]
        if cache is not None:
            cache.length = past + T
        return logits[0] if single else logits

    def _attention_mask(self, real: np.ndarray, T: int):
        """Additive mask for T queries over the S = real.shape[1] keys: causal, and padded keys
        hidden.  None when no key is padding: the kernels then apply the causal part themselves
        (to the few scores it touches)."""
        S = real.shape[1]
        if real.all():
            return None
        visible = np.tri(T, S, k=S - T, dtype=bool) & real[:, None, :]  # [B, T, S]
        return np.where(visible, 0.0, MASKED).astype(self.dtype)[:, None]  # [B, 1, T, S]

    # ---- input checks ------------------------------------------------------------------------

    def _check_ids(self, ids):
        """ids as an int64 ``[B, T]`` array, and whether a single ``[T]`` sequence was given."""
        try:
            arr = np.asarray(ids)
        except ValueError:  # NumPy refuses ragged nested lists
            raise ValueError("ids must be a [T] or [B, T] array; left-pad rows of different lengths "
                             "and pass attention_mask (0 = padding)") from None
        if arr.size == 0:
            raise ValueError(f"ids is empty (shape {arr.shape}); expected at least one token id")
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"ids must be integer token ids, found dtype {arr.dtype}")
        if arr.ndim not in (1, 2):
            raise ValueError(f"ids must have shape [T] or [B, T], found shape {arr.shape}")
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi >= self.config.n_vocab:
            bad = int(lo if lo < 0 else hi)
            raise ValueError(
                f"token id {bad} is out of range: the vocabulary has n_vocab={self.config.n_vocab} "
                f"ids (0..{self.config.n_vocab - 1})"
            )
        single = arr.ndim == 1
        return arr.astype(np.int64, copy=False).reshape(-1, arr.shape[-1]), single  # [B, T]

    def _check_mask(self, attention_mask, shape):
        """attention_mask as a bool ``[B, T]`` array (all True when None)."""
        if attention_mask is None:
            return np.ones(shape, dtype=bool)
        m = np.asarray(attention_mask)
        if m.shape != shape and not (shape[0] == 1 and m.shape == shape[1:]):
            want = f"{shape}" if shape[0] > 1 else f"{shape} or {shape[1:]}"
            raise ValueError(f"attention_mask has shape {m.shape}; expected {want}, the shape of ids")
        if not np.isin(m, (0, 1)).all():
            raise ValueError("attention_mask must contain only 0 (padding) and 1 (token)")
        return m.astype(bool).reshape(shape)

    def _check_length(self, past: int, T: int, cache, B: int) -> None:
        n_ctx = self.config.n_ctx
        if past + T > n_ctx:
            what = f"{past} cached + {T} new = {past + T}" if past else f"{T}"
            raise ValueError(f"sequence too long: {what} tokens, but n_ctx={n_ctx} is the longest GPT-2 can read")
        if cache is None:
            return
        c = self.config
        if cache.keys.shape[0::2] != (c.n_layer, c.n_head, c.head_dim):
            raise ValueError("cache was made for a model of another shape; use model.new_cache()")
        if cache.batch_size != B:
            raise ValueError(f"cache holds {cache.batch_size} rows but ids has {B}")
        if cache.dtype != self.dtype:
            raise ValueError(f"cache dtype {cache.dtype} differs from the model's {self.dtype}; use model.new_cache()")
        if past + T > cache.max_len:
            raise ValueError(
                f"cache full: {past} cached + {T} new = {past + T} tokens, but max_len={cache.max_len}"
            )

    # ---- trace, loss, generate ---------------------------------------------------------------

    def trace(self, ids) -> dict:
        """Every intermediate of the forward pass of one sequence, by name (docs/architecture.md):

        ``embed`` [T, d]; for block i: ``h{i}.ln_1`` [T, d], ``h{i}.attn.q|k|v`` [H, T, dh],
        ``h{i}.attn.scores`` [H, T, T] (scaled and masked, before softmax), ``h{i}.attn.probs``
        [H, T, T], ``h{i}.attn.out`` [T, d] (after c_proj), ``h{i}.resid`` [T, d] (x after the
        attention residual), ``h{i}.ln_2`` [T, d], ``h{i}.mlp.fc`` [T, 4d] (before GELU),
        ``h{i}.mlp.gelu`` [T, 4d], ``h{i}.mlp.out`` [T, d], ``h{i}.out`` [T, d]; then ``ln_f``
        [T, d] and ``logits`` [T, V].

        The functions of :mod:`gpt2np.layers` (``layers.gpt2``), noting each step in a
        :class:`~gpt2np.layers.Record`.
        """
        ids, _ = self._check_ids(ids)
        if ids.shape[0] != 1:
            raise ValueError(f"trace takes one sequence ([T] or [1, T]), found shape {ids.shape}")
        self._check_length(0, ids.shape[1], None, 1)
        record = layers.Record(drop={"heads"})  # the heads side by side are attn.out before c_proj
        layers.gpt2(ids[0], self.params, self.config.n_head, record=record)
        # contiguous copies, so a trace owns its arrays and q/k/v are not views of one buffer
        return {name: np.ascontiguousarray(value) for name, value in record.values.items()}

    def loss(self, ids) -> float:
        """Mean next-token cross-entropy in nats: -1/(N) Σ_t log p(ids[t+1] | ids[..t]).

        ids ``[T]`` or ``[B, T]`` with T >= 2 (the average runs over all B·(T-1) predictions);
        the same number as Hugging Face's ``GPT2LMHeadModel(ids, labels=ids).loss``.
        """
        ids, _ = self._check_ids(ids)
        if ids.shape[1] < 2:
            raise ValueError(f"loss needs at least 2 tokens per sequence (one to predict), found {ids.shape[1]}")
        logp = log_softmax(self(ids)[:, :-1])  # [B, T-1, V]
        targets = ids[:, 1:, None]  # [B, T-1, 1]
        return float(-np.take_along_axis(logp, targets, axis=-1).mean())

    def generate_ids(self, ids, max_new_tokens: int | None = None, *, settings=None, **options):
        """Continue ``ids`` by up to ``max_new_tokens`` tokens and return the new ids only.

        Calls :func:`gpt2np.generation.generate_ids` (see there): ids ``[T]`` -> a list of new
        ids; a ragged batch (list of sequences of any lengths) or ``[B, T]`` -> a list of lists.
        ``settings`` is a :class:`gpt2np.generation.GenerationSettings`; ``options``
        (``temperature=``, ``top_k=``, ``top_p=``, ``repetition_penalty=``, ``seed=``,
        ``stop_ids=``) override its fields.  Greedy and 50 tokens by default; each row stops at
        one of ``stop_ids`` (default ``<|endoftext|>``; not returned) or after
        ``max_new_tokens``.  Runs on the KV cache.
        """
        from .generation import generate_ids

        if max_new_tokens is not None:
            options["max_new_tokens"] = max_new_tokens
        return generate_ids(self, ids, settings=settings, **options)

    def generate(self, ids, max_new_tokens: int, temperature: float = 0.0, top_k=None, top_p=None,
                 repetition_penalty=None, seed=None, stop_ids=None):
        """Deprecated name of :meth:`generate_ids` (the old positional arguments; ``stop_ids=None``
        means ``<|endoftext|>``); goes away in the next release."""
        import warnings

        warnings.warn("GPT2.generate is deprecated: use GPT2.generate_ids (the same arguments); "
                      "the old name goes away in the next release", DeprecationWarning, stacklevel=2)
        options = dict(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                       seed=seed, stop_ids=stop_ids)
        return self.generate_ids(ids, max_new_tokens, **{k: v for k, v in options.items() if v is not None})

    # ---- loading and saving: thin layers over gpt2np.formats and gpt2np.hub ----
    @classmethod
    def from_tf_checkpoint(cls, folder, verify: bool = True) -> "GPT2":
        """Load OpenAI's TensorFlow checkpoint folder (hparams.json + model.ckpt.*) without TensorFlow."""
        from .formats import read_tf_checkpoint

        hparams, params = read_tf_checkpoint(folder, verify=verify)
        return cls(Config(**hparams), params)

    @classmethod
    def from_safetensors(cls, file, config: "Config | None" = None) -> "GPT2":
        """Load a Hugging Face ``model.safetensors``; the config is inferred from the shapes if not given."""
        from .formats import read_safetensors_model

        hparams = None if config is None else config.to_dict()
        hparams, params = read_safetensors_model(file, hparams=hparams)
        return cls(Config(**hparams), params)

    @classmethod
    def load(cls, path) -> "GPT2":
        """Load a model saved by :meth:`save` (an ``.npz`` of the params tree and the config)."""
        from .formats import load_npz

        hparams, params = load_npz(path)
        return cls(Config(**hparams), params)

    def save(self, path) -> None:
        """Save the params tree and the config as one ``.npz`` file (written atomically)."""
        from .formats import save_npz

        save_npz(path, self.config.to_dict(), self.params)

    def save_safetensors(self, path) -> pathlib.Path:
        """Save for PyTorch: transformers' ``model.safetensors`` and its ``config.json`` beside it.

        ``path`` is a ``.safetensors`` file, or a folder (which gets ``model.safetensors``).  The
        tensors get transformers' names (``transformer.wte.weight``, ``transformer.h.0.attn.c_attn.weight``,
        ...; Conv1D weights are ``[n_in, n_out]`` in both, so nothing is transposed; the head is tied
        to ``wte`` and not stored), and ``config.json`` is a ``GPT2Config`` of this shape (``gelu_new``,
        ``layer_norm_epsilon`` 1e-5, tied embeddings), so that
        ``GPT2LMHeadModel.from_pretrained(folder)`` computes the same logits.  Both files are
        written atomically.  Returns the path of the ``.safetensors`` file.
        """
        import json

        from .formats import flatten, write_safetensors
        from .formats.atomic import atomic_write
        from .formats.names import hf_to_flat

        path = pathlib.Path(path)
        if path.suffix != ".safetensors":
            path = path / "model.safetensors"

        def hf_name(flat_name: str) -> str:  # the inverse of formats.names.hf_to_flat
            *parts, leaf = flat_name.split(".")
            if not parts:  # wte, wpe: embeddings are "weight"
                parts, leaf = [leaf], "w"
            elif parts[0] == "blocks":
                parts[0] = "h"
            name = ".".join(parts + ["bias" if leaf == "b" else "weight"])
            assert hf_to_flat(name) == flat_name, (flat_name, name)
            return "transformer." + name

        tensors = {hf_name(k): v for k, v in flatten(self.params).items()}
        c = self.config
        eot = 50256 if c.n_vocab > 50256 else None  # <|endoftext|>, when the vocabulary has it
        hf_config = {
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "vocab_size": c.n_vocab, "n_positions": c.n_ctx, "n_embd": c.n_embd, "n_layer": c.n_layer,
            "n_head": c.n_head, "n_inner": None, "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "resid_pdrop": 0.1, "embd_pdrop": 0.1,
            "attn_pdrop": 0.1, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "add_cross_attention": False, "tie_word_embeddings": True,
            "use_cache": True, "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": None,
            "summary_type": "cls_index", "summary_use_proj": True, "summary_activation": None,
            "summary_proj_to_labels": True, "summary_first_dropout": 0.1, "dtype": str(self.dtype),
        }
        write_safetensors(path, tensors, metadata={"format": "pt"})
        with atomic_write(path.parent / "config.json", "w") as f:
            f.write(json.dumps(hf_config, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, size: str = "124M", **kwargs) -> "GPT2":
        """OpenAI's weights for ``size``: downloaded, verified and converted once, then loaded from the cache.

        ``gpt2np.BUNDLED_MODEL`` ("gpt2np-mini", or "mini", "bundled") is gpt2np's own small
        model, read from the package (:mod:`gpt2np.bundled`): no network, no cache, so the
        download options (``base_url``, ``offline``, ``cache_dir``, ...) do not apply to it."""
        from .config import is_bundled

        if is_bundled(size):
            from .bundled import load

            return load()
        from .hub import pretrained_npz

        return cls.load(pretrained_npz(size, **kwargs))
