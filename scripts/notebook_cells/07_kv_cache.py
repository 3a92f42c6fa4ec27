# %% [markdown]
# # 07 · The KV cache
#
# GPT-2 writes one token at a time: run the model on the text so far, pick the next token from the
# last position's logits, append it, repeat. Done naively, step $t$ pushes all $t$ tokens through
# every block again, although only one of them is new.
#
# Because attention is causal (notebook 03), a token's keys and values never change once it has been
# computed: later tokens cannot influence it. So each block can **store** its keys and values and,
# at every step, compute only the new token's $q, k, v$, append $k, v$ to the store, and attend
# over all stored keys:
#
# $$o_t = \mathrm{softmax}\!\left(\frac{q_t\,[k_1 \cdots k_t]^\top}{\sqrt{d_k}}\right)[v_1 \cdots v_t]^\top$$
#
# No mask is needed for that single query: everything in the store is in its past.

# %%
SETUP

# %%
import os
import time
from gpt2np import layers

tok = Tokenizer.gpt2()
cfg = model.config
ids = tok.encode("The KV cache stores the keys and values of every token seen so far, so")
T = len(ids)
print(f"prompt: {T} tokens; model: {cfg.n_layer} blocks, {cfg.n_head} heads, d = {cfg.n_embd}")

# %% [markdown]
# ## 1. Filling the cache with the prompt ("prefill")
#
# `model.new_cache(batch_size, max_len)` allocates, once, the arrays for the keys and values of
# every block, $[L, B, H, T_{\max}, d_k]$ ($T_{\max}$ = `max_len`). Passing it to the model stores the keys and values
# of the tokens it runs. They are exactly the keys and values of an ordinary forward pass:

# %%
cache = model.new_cache(1, max_len=T + 1)
logits = model(np.array(ids), cache=cache, last_only=True)    # [V]: only the last position's logits
print(cache, "  keys:", cache.keys.shape)
trace = model.trace(ids)
for i in range(cfg.n_layer):   # float32 rounding: the fast path against the readable formulas
    np.testing.assert_allclose(cache.keys[i, 0, :, :T], trace[f"h{i}.attn.k"], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(cache.values[i, 0, :, :T], trace[f"h{i}.attn.v"], rtol=2e-5, atol=2e-5)
print("stored keys and values == the trace's, for every block")

# %% [markdown]
# ## 2. One step with the cache
#
# Now only the new token goes in. Its logits must equal those of the full forward pass over all
# $T + 1$ tokens, and block 0's attention for it must equal the last row of the full attention
# matrix. We redo that attention by hand from the cache: one query against $T + 1$ stored keys.

# %%
nxt = int(np.argmax(logits))                                         # greedy: the most likely next token
print(f"prompt {tok.decode(ids)!r} -> most likely next token {tok.decode([nxt])!r}")
step_logits = model(np.array([nxt]), cache=cache, last_only=True)     # [V], one token through the blocks
full = model(np.array(ids + [nxt]))                                   # [T+1, V], everything again
np.testing.assert_allclose(step_logits, full[-1], rtol=1e-4, atol=1e-4)
print(f"cached step == full forward pass (largest difference {np.abs(step_logits - full[-1]).max():.1e});",
      "cache length now", cache.length)

full_trace = model.trace(ids + [nxt])
q_new = full_trace["h0.attn.q"][:, -1:]                   # [H, 1, dh]: the new token's query
K, V = cache.keys[0, 0, :, :T + 1], cache.values[0, 0, :, :T + 1]   # [H, T+1, dh]
w = layers.softmax(q_new @ K.transpose(0, 2, 1) / np.sqrt(cfg.head_dim))   # [H, 1, T+1], no mask
np.testing.assert_allclose(w, full_trace["h0.attn.probs"][:, -1:], rtol=1e-4, atol=1e-6)
np.testing.assert_allclose(w @ V, layers.attention(q_new, K, V), rtol=1e-4, atol=1e-6)
print("attention of the new token over the cache == last row of the full attention")

# %% [markdown]
# ## 3. What it saves, in operations
#
# Count multiply-adds (MACs) per generated token, at position $t$. Each block has $12d^2$ weights
# that every token it processes must pass through, plus attention ($2\,t\,d$ MACs per query for
# $QK^\top$ and $PV$); the tied head costs $dV$ for the one position we need:
#
# $$\text{without cache: } \; t \cdot L\,(12 d^2 + 2 t d)\; + dV \qquad\qquad
# \text{with cache: } \; L\,(12 d^2 + 2 t d) + dV$$
#
# Summed over $n$ generated tokens the first grows like $n^2$ (and its attention part like $n^3$),
# the second like $n$ (plus an $n^2$ attention term with a small constant, $L d\, n^2$).
# The price is memory: $2 \cdot L \cdot t \cdot d$ numbers per sequence.

# %%
def macs(c, t, cached):
    per_token = c.n_layer * (12 * c.n_embd**2 + 2 * t * c.n_embd)
    return (per_token if cached else t * per_token) + c.n_embd * c.n_vocab

c124 = Config.preset("124M")
n = np.arange(1, c124.n_ctx + 1)
total_without = np.cumsum([macs(c124, t, False) for t in n])
total_with = np.cumsum([macs(c124, t, True) for t in n])
print(f"GPT-2 124M, 1024 tokens: {total_without[-1] / 1e12:.1f} T MACs without cache, "
      f"{total_with[-1] / 1e12:.2f} T with ({total_without[-1] / total_with[-1]:.0f}x fewer)")
for size in ("124M", "1558M"):
    c = Config.preset(size)
    print(f"cache for {size} at {c.n_ctx} tokens, float32: "
          f"{2 * c.n_layer * c.n_ctx * c.n_embd * 4 / 2**20:.0f} MiB per sequence")
fig, ax = plt.subplots(figsize=(5.5, 2.8))
ax.plot(n, total_without / 1e12, label="without cache  ~ n²")
ax.plot(n, total_with / 1e12, label="with cache  ~ n")
ax.set_xlabel("tokens generated, n"); ax.set_ylabel("total T MACs (124M)"); ax.legend(); ax.grid(alpha=0.3)
fig.tight_layout()

# %% [markdown]
# ## 4. Measured: time per token, with and without the cache
#
# Greedy generation both ways on this notebook's model, timing every step. Both must produce the same
# tokens, and the same as the library's own `model.generate_ids`; the cell prints the continuation.
#
# Read the timings with care. They were measured on one CPU core (`scripts/build_notebooks.py` runs
# the notebooks with one BLAS thread; the cell prints the setting) of a machine that was running
# other programs at the same time, so single steps are noisy; taking, per step, the fastest of three
# runs removes most interruptions but not all. The absolute numbers say little about another
# machine. The shapes of the curves are the point: rising with the position without a cache, flat
# with it.

# %%
n_new = 32 if REAL else 160
start = tok.encode("It was a fine morning, and Elizabeth")

def step_times(use_cache):
    seq, times = list(start), []
    cache = model.new_cache(1, len(start) + n_new) if use_cache else None
    if use_cache:
        logits = model(np.array(seq), cache=cache, last_only=True)          # prefill, not timed
    for _ in range(n_new):
        t0 = time.perf_counter()
        if not use_cache:
            logits = model(np.array(seq), last_only=True)                    # all tokens again
        seq.append(int(np.argmax(logits)))
        if use_cache:
            logits = model(np.array(seq[-1:]), cache=cache, last_only=True)  # the new token only
        times.append(time.perf_counter() - t0)
    return seq, np.array(times)

step_times(True)                                         # warm up (first calls allocate)
# Three runs each way; per step the fastest of the three, to filter out other programs' interruptions.
runs_without = [step_times(False) for _ in range(3)]
runs_with = [step_times(True) for _ in range(3)]
seq_without, seq_with = runs_without[0][0], runs_with[0][0]
t_without = np.min([t for _, t in runs_without], axis=0)
t_with = np.min([t for _, t in runs_with], axis=0)
assert seq_with == seq_without, "cached and uncached greedy generation differ"
lib_ids = model.generate_ids(start, n_new, stop_ids=())         # greedy by default, on the cache
assert seq_with[len(start):] == lib_ids, "our greedy loop differs from model.generate_ids"
print(f"greedy continuation (the first 40 of {n_new} tokens, identical both ways and from generate_ids):\n"
      f"  {tok.decode(start)!r} + {tok.decode(seq_with[len(start):len(start) + 40])!r}")
pos = len(start) + np.arange(n_new)
print("BLAS threads (OPENBLAS_NUM_THREADS):", os.environ.get("OPENBLAS_NUM_THREADS", "library default"))
print(f"{n_new} tokens: without cache {t_without.sum():.2f} s, with cache {t_with.sum():.2f} s "
      f"({t_without.sum() / t_with.sum():.1f}x)")
print(f"ms per token, first 10 -> last 10 steps: without {1e3 * np.median(t_without[:10]):.2f} -> "
      f"{1e3 * np.median(t_without[-10:]):.2f};  with {1e3 * np.median(t_with[:10]):.2f} -> "
      f"{1e3 * np.median(t_with[-10:]):.2f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(pos, 1e3 * t_without, ".", ms=3, label="without cache")
axes[0].plot(pos, 1e3 * t_with, ".", ms=3, label="with cache")
axes[0].set_xlabel("position of the new token"); axes[0].set_ylabel("ms per token"); axes[0].legend()
axes[0].set_ylim(0, None); axes[0].grid(alpha=0.3)
axes[1].plot(pos, np.cumsum(t_without), label="without cache")
axes[1].plot(pos, np.cumsum(t_with), label="with cache")
axes[1].set_xlabel("position of the new token"); axes[1].set_ylabel("total seconds"); axes[1].legend()
axes[1].grid(alpha=0.3)
fig.suptitle("greedy generation, one BLAS thread, " + ("GPT-2 124M" if REAL else f"bundled {gpt2np.BUNDLED_MODEL}"))
fig.tight_layout()

# %% [markdown]
# **Counted versus measured.** Section 3's formula, applied to this notebook's model at the last
# step, predicts how many times fewer multiply-adds a cached step does; the measured ratio of the
# times is smaller. The MAC count leaves out the fixed cost of every step (Python, allocating and
# copying small arrays, calling BLAS), which is the same with or without the cache and weighs most
# when the model is small. A cached step of a small model also spends a large share of its MACs in
# the tied head ($d\,V$), which the cache cannot save.

# %%
t_last = int(pos[-1]) + 1                                 # tokens in the model at the last step
counted = macs(cfg, t_last, False) / macs(cfg, t_last, True)
measured = np.median(t_without[-10:]) / np.median(t_with[-10:])
print(f"last steps (t = {t_last}): {counted:.0f}x fewer MACs with the cache; measured {measured:.1f}x less time")
print(f"share of the tied head in one cached step's MACs: {cfg.n_embd * cfg.n_vocab / macs(cfg, t_last, True):.0%}")

# %% [markdown]
# The text itself: greedy decoding always takes the most likely token, and a small model soon falls
# into a loop. For the bundled model the greedy tokens above repeat a phrase of 8 tokens (checked
# below). Sampling (notebook 06) avoids the loop; it changes which token is picked, not how the cache
# works. `gpt2np.generate_text` runs the same cached loop and samples when given a temperature:

# %%
cont = seq_with[len(start):]
eight = [tuple(cont[i:i + 8]) for i in range(len(cont) - 7)]
repeats = len(eight) - len(set(eight))
print(f"{repeats} of the {len(eight)} 8-token windows of the greedy continuation occurred earlier in it")
if not REAL:   # the paragraph above describes the bundled model
    assert repeats > 0
sampled = gpt2np.generate_text(model, tok, tok.decode(start), 40, temperature=0.8, top_k=40, seed=0)
print("sampled (temperature 0.8, top-k 40, seed 0):", repr(tok.decode(start)), "+", repr(sampled))

# %% [markdown]
# `model.generate_ids` and `gpt2np.generate_text` always use the cache: one forward pass over the prompt,
# then one token per step. The same cache also serves a batch of prompts of different lengths
# (left-padded, with an attention mask); its `mask` and `next_position` remember, per row, which
# stored positions are real tokens and which position id the next token gets.
