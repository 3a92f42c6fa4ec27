"""gpt2np: GPT-2 written from scratch in NumPy.

    from gpt2np import Tokenizer, GPT2, Config, generate

The modules, in the order data flows through them:

- ``tokenizer``  text <-> token ids (byte-level BPE, byte-exact with OpenAI's encoder)
- ``layers``     the formulas of the forward pass as pure NumPy functions
- ``kernels``    the same block rearranged for speed (in place, attention in tiles): what the model runs
- ``model``      ``Config``, the params tree and ``GPT2`` (forward, KV cache, trace)
- ``sampling``   logits processors, sampling and the generation loop
- ``formats``    reading and writing weight files (TF checkpoint V2, safetensors, .npz)
- ``hub``        downloading OpenAI's checkpoints into a local cache
- ``tasks``      GPT-2's zero-shot uses: summarize, translate, answer, continue
"""

from .tokenizer import Tokenizer
from .model import Config, GPT2, KVCache
from .sampling import generate

__version__ = "0.1.0"

__all__ = ["Tokenizer", "Config", "GPT2", "KVCache", "generate", "__version__"]
