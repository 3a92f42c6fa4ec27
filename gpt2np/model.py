"""GPT-2 model (placeholder: the forward-pass issue writes this module).

The block marked DOORS below is the only place where model.py reaches the
``formats`` and ``hub`` rooms; keep it as it is when writing the rest.
"""

from __future__ import annotations


class Config:
    pass


class KVCache:
    pass


class GPT2:
    # ---- DOORS into formats/ and hub (thin constructors; keep as they are) ----
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

    @classmethod
    def from_pretrained(cls, size: str = "124M", **kwargs) -> "GPT2":
        """OpenAI's weights for ``size``: downloaded, verified and converted once, then loaded from the cache."""
        from .hub import pretrained_npz

        return cls.load(pretrained_npz(size, **kwargs))
    # ---- end of DOORS ----
