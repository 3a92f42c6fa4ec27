# %% [markdown]
# # 06 · Sampling: from logits to the next token
#
# The model gives a score $z_i$ (a logit) for every token $i$ of the vocabulary. *Decoding* decides
# which token comes next. `gpt2np.sampling` applies, in this order (the order Hugging Face's
# `generate` uses):
#
# $$z \xrightarrow{\text{repetition penalty}} \xrightarrow{\;/\,\tau\;} \xrightarrow{\text{top-}k}
# \xrightarrow{\text{top-}p} \mathrm{softmax} \xrightarrow{\text{draw}} \text{next id}$$
#
# To see what each step does we use one small, readable distribution: twelve candidate words after
# "The weather today is", with logits chosen by hand. Every processor works the same on the model's
# 50257 logits (section 7).

# %%
SETUP

# %%
from gpt2np import sampling

words = [" sunny", " cold", " nice", " warm", " beautiful", " perfect",
         " terrible", " rainy", " great", " good", " bad", " hot"]
z = np.array([3.1, 2.6, 2.4, 2.0, 1.5, 1.2, 0.9, 0.6, 0.2, -0.3, -0.8, -1.5], dtype=np.float32)

def show(ax, probs, title, kept=None):
    """Bar chart of a distribution over the twelve words; grey bars for removed tokens."""
    colors = ["tab:blue" if kept is None or kept[i] else "lightgray" for i in range(len(words))]
    ax.bar(range(len(words)), probs, color=colors)
    ax.set_xticks(range(len(words)), words, rotation=60, fontsize=7)
    ax.set_ylim(0, 1); ax.set_title(title, fontsize=9)

# %% [markdown]
# ## 1. Softmax
#
# $$p_i = \frac{e^{z_i}}{\sum_j e^{z_j}}$$
#
# Only differences between logits matter: adding a constant to all of them changes nothing.

# %%
p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
np.testing.assert_allclose(p, sampling.next_token_probs(z), rtol=1e-6)
np.testing.assert_allclose(p, sampling.next_token_probs(z + 100), rtol=1e-5)  # float32: z + 100 rounds
for w, pi in zip(words[:4], p[:4]):
    print(f"p({w!r}) = {pi:.3f}")

# %% [markdown]
# ## 2. Greedy decoding
#
# Always take the most likely token, $\hat\imath = \arg\max_i z_i$. Deterministic, and prone to
# loops ("the the the …" or a repeated sentence), because the most likely continuation of a
# repetition is often more repetition. In gpt2np greedy is `temperature=0`: the distribution becomes
# one-hot at the argmax.

# %%
greedy = sampling.next_token_probs(z, temperature=0)
assert greedy[np.argmax(z)] == 1 and greedy.sum() == 1
print("greedy picks", repr(words[int(np.argmax(greedy))]))

# %% [markdown]
# ## 3. Temperature
#
# $$p_i(\tau) = \frac{e^{z_i/\tau}}{\sum_j e^{z_j/\tau}}$$
#
# $\tau < 1$ sharpens the distribution (towards greedy as $\tau \to 0$), $\tau > 1$ flattens it
# (towards uniform as $\tau \to \infty$). Its entropy $H(p) = -\sum_i p_i \log p_i$ grows with $\tau$.

# %%
taus = [0.5, 1.0, 2.0]
fig, axes = plt.subplots(1, 3, figsize=(10, 2.8), sharey=True)
for ax, tau in zip(axes, taus):
    pt = np.exp(z / tau - (z / tau).max()); pt /= pt.sum()
    np.testing.assert_allclose(pt, sampling.next_token_probs(z, temperature=tau), rtol=1e-5)
    entropy = -(pt * np.log(pt)).sum()
    show(ax, pt, f"τ = {tau}:  H = {entropy:.2f} nats")
fig.tight_layout()

# %% [markdown]
# ## 4. Top-$k$
#
# Keep only the $k$ largest logits and renormalise (Fan et al., 2018): with $z_{(k)}$ the $k$-th
# largest logit,
#
# $$\tilde z_i = \begin{cases} z_i & z_i \ge z_{(k)} \\ -\infty & \text{otherwise}\end{cases}$$
#
# This cuts off the long tail of unlikely tokens, where most of the nonsense comes from; but a fixed
# $k$ is too many when the model is sure and too few when it is not.

# %%
k = 4
kth = np.sort(z)[-k]
zk = np.where(z >= kth, z, -np.inf)
pk = np.exp(zk - zk.max()); pk /= pk.sum()
np.testing.assert_allclose(pk, sampling.next_token_probs(z, top_k=k), rtol=1e-6)
np.testing.assert_array_equal(zk, sampling.apply_top_k(z, k))
print(f"top-{k} keeps {[w for w, keep in zip(words, np.isfinite(zk)) if keep]}")

fig, axes = plt.subplots(1, 3, figsize=(10, 2.8), sharey=True)
show(axes[0], p, "softmax(z): all 12 words")
show(axes[1], greedy, "greedy (τ = 0): one-hot at the argmax")
show(axes[2], pk, f"top-k, k = {k}: renormalised", kept=np.isfinite(zk))
fig.tight_layout()

# %% [markdown]
# ## 5. Top-$p$ (nucleus sampling)
#
# Holtzman et al. (2019): sort by probability, and keep the smallest set of most likely tokens
# whose probabilities add up to at least $p$:
#
# $$V^{(p)} = \text{the smallest prefix } \{i_1, \dots, i_m\} \text{ of the tokens sorted by } p_i
# \text{ with } \sum_{r=1}^{m} p_{i_r} \ge p$$
#
# The number of tokens kept adapts to the model's confidence.

# %%
top_p = 0.8
order = np.argsort(-p)                                   # most likely first
cum = np.cumsum(p[order])
m = int(np.searchsorted(cum, top_p)) + 1                 # first prefix reaching top_p
keep = np.zeros(len(z), dtype=bool); keep[order[:m]] = True
pp = np.where(keep, p, 0); pp /= pp.sum()
np.testing.assert_allclose(pp, sampling.next_token_probs(z, top_p=top_p), rtol=1e-5, atol=1e-7)
print(f"top-p {top_p} keeps {m} tokens, holding {cum[m - 1]:.3f} of the probability")

fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
axes[0].bar(range(len(z)), p[order], color=["tab:blue" if r < m else "lightgray" for r in range(len(z))])
axes[0].plot(range(len(z)), cum, "k.-", label="cumulative")
axes[0].axhline(top_p, color="tab:red", ls="--", label=f"p = {top_p}")
axes[0].set_xticks(range(len(z)), [words[i] for i in order], rotation=60, fontsize=7)
axes[0].legend(fontsize=8); axes[0].set_title("sorted probabilities")
show(axes[1], pp, f"after top-p = {top_p}", kept=keep)
fig.tight_layout()

# %% [markdown]
# ## 6. Repetition penalty
#
# CTRL (Keskar et al., 2019): every distinct token $i$ that already occurs in the text is made less
# likely by a factor $\theta > 1$ applied to its logit,
#
# $$\tilde z_i = \begin{cases} z_i / \theta & z_i > 0 \\ z_i \cdot \theta & z_i \le 0 \end{cases}
# \qquad \text{for } i \in \text{previous tokens}$$
#
# (dividing a negative logit would *raise* it, hence the two cases).

# %%
theta = 1.8
previous = [0, 7, 10]                                    # " sunny", " rainy" and " bad" occurred before
zr = z.copy()
zr[previous] = np.where(z[previous] > 0, z[previous] / theta, z[previous] * theta)
np.testing.assert_allclose(zr, sampling.apply_repetition_penalty(z, previous, theta), rtol=1e-6)
pr = np.exp(zr - zr.max()); pr /= pr.sum()
np.testing.assert_allclose(pr, sampling.next_token_probs(z, repetition_penalty=theta, previous_ids=previous),
                           rtol=1e-5)
fig, axes = plt.subplots(1, 2, figsize=(9, 2.8), sharey=True)
show(axes[0], p, "no penalty")
show(axes[1], pr, f"repetition penalty θ = {theta} on {[words[i] for i in previous]}")
fig.tight_layout()

# %% [markdown]
# ## 7. Drawing the token
#
# With the final distribution $p$, one uniform number $u \in [0, 1)$ picks the first token whose
# cumulative probability exceeds it: $\text{next} = \min\{\, i : \sum_{j \le i} p_j > u \,\}$
# (inverse transform sampling). Drawn many times, the frequencies approach $p$:

# %%
final = sampling.next_token_probs(z, temperature=0.9, top_k=8, top_p=0.95)
rng = sampling.make_rng(0)
draws = np.array([sampling.sample(final, rng) for _ in range(20000)])
freq = np.bincount(draws, minlength=len(z)) / len(draws)
assert np.all(freq[final == 0] == 0)                     # removed tokens are never drawn
np.testing.assert_allclose(freq, final, atol=0.015)
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.bar(np.arange(len(z)) - 0.2, final, width=0.4, label="p (τ=0.9, top-k 8, top-p 0.95)")
ax.bar(np.arange(len(z)) + 0.2, freq, width=0.4, label="frequency in 20000 draws")
ax.set_xticks(range(len(z)), words, rotation=60, fontsize=7); ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## 8. On the model
#
# The same steps on GPT-2's real output: 50257 logits for the token after a prompt. We compare how
# many tokens each setting leaves in play, check greedy generation against a hand-written argmax
# loop, and generate with a few settings (a fixed `seed` makes sampling reproducible).

# %%
model, REAL = load_model()
tok = Tokenizer.gpt2()
prompt = "The weather today is"
ids = tok.encode(prompt)
logits = model(ids)[-1]                                  # [V]
for name, kw in [("τ=1", {}), ("τ=0.7", dict(temperature=0.7)), ("top-k 40", dict(top_k=40)),
                 ("top-p 0.9", dict(top_p=0.9))]:
    q = sampling.next_token_probs(logits, **kw)
    print(f"{name:10} tokens with p > 0: {int((q > 0).sum()):6d}   largest p: {q.max():.3g}")

# greedy generation is an argmax loop (the library's runs on the KV cache; this one does not)
by_hand = list(ids)
for _ in range(8):
    by_hand.append(int(np.argmax(model(np.array(by_hand))[-1])))
assert list(model.generate_ids(ids, max_new_tokens=8, stop_ids=[])) == by_hand[len(ids):]

print("\ngreedy:     ", repr(gpt2np.generate_text(model, tok, prompt, max_new_tokens=12)))
for seed in (1, 2):
    text = gpt2np.generate_text(model, tok, prompt, max_new_tokens=12, temperature=0.8, top_p=0.9, seed=seed)
    print(f"seed {seed}:     ", repr(text))
print("penalty 1.5:", repr(gpt2np.generate_text(model, tok, prompt, max_new_tokens=12, repetition_penalty=1.5)))
if not REAL:
    print("\n(The small random stand-in model produces arbitrary tokens: its text is not meaningful.)")
