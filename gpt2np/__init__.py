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
- ``bundled``    the small model trained by gpt2np and shipped in the package (``BUNDLED_MODEL``)
- ``tasks``      GPT-2's zero-shot uses: summarize, translate, answer, continue
- ``backward``   the gradient of each formula, and ``loss_and_grads``
- ``optim``      AdamW, gradient clipping and the learning-rate schedule
- ``train``      training on text files: token files, batches, checkpoints (``gpt2np train``)
"""

from .tokenizer import Tokenizer
from .model import Config, GPT2, KVCache
from .config import BUNDLED_MODEL  # "gpt2np-mini": the small model shipped in the package (GPT2.from_pretrained)
from . import bundled  # its card and files: gpt2np.bundled.read_card(), .model_path()
from .generation import GenerationSettings, generate, generate_text  # generate: deprecated, use generate_text
from .backward import loss_and_grads
from .optim import AdamW, clip_grad_norm, cosine_lr
from .train import TrainSettings, prepare_tokens, train_text  # (gpt2np.train is the module: train.train)

__version__ = "0.1.0"

__all__ = ["Tokenizer", "Config", "GPT2", "KVCache", "BUNDLED_MODEL", "GenerationSettings", "generate_text", "generate",
           "loss_and_grads", "AdamW", "clip_grad_norm", "cosine_lr", "TrainSettings", "prepare_tokens",
           "train_text", "__version__"]
