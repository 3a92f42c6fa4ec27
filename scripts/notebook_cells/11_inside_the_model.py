# %% [markdown]
# # 11 · Inside the trained model
#
# Notebooks 02–05 built GPT-2's forward pass and checked it number by number. This one asks what a
# *trained* model computes with it, with four simple tools:
#
# 1. **The logit lens**: read the residual stream after every block through the final layer norm and
#    the output head, as if the model stopped there. How early does it know the next token?
# 2. **Attention patterns**: every head's attention map for one sentence, one row of pictures per layer,
#    and a few numbers per head (how far it looks, how spread out, how much on the first and on the
#    previous token, whether it copies).
# 3. **Ablation**: zero one head's output and measure how much worse the next-token loss gets.
# 4. **The embedding space**: which tokens have similar rows in $W_{te}$.
#
# Everything that depends on the weights is measured below and printed; the prose only describes
# the method, except where a cell asserts what it says.

# %%
SETUP

# %%
from gpt2np import layers

tok = Tokenizer.gpt2()
cfg = model.config
p = model.params
L, H, d, dh, V = cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.head_dim, cfg.n_vocab
# a few sentences in the style of the bundled model's corpus (Austen, the Bible, 19th-century novels),
# written for this notebook, so they are not lines the model has seen in training
sentences = [
    "Elizabeth could not help smiling at her sister, for she was very happy.",
    "Mr. Knightley walked into the room and said that he had seen three ladies in the garden.",
    "Then the king of Israel said to his servants, Go and bring the prophet to me.",
    "She had never been so happy in her life, and she thanked God for it.",
    "The people of the city went out to meet him, and they praised the Lord.",
]
all_ids = [np.array(tok.encode(s)) for s in sentences]
ids = all_ids[0]                                   # the sentence of the tables and pictures
T = len(ids)
labels = [tok.decode([i]) for i in ids]
print(f"L={L} layers, H={H} heads of {dh}, d={d}; sentence lengths {[len(x) for x in all_ids]} tokens")
print(labels)

# %% [markdown]
# ## 1. The logit lens
#
# The residual stream $x^{(\ell)} \in \mathbb{R}^{T \times d}$ is what flows between the blocks:
# $x^{(0)}$ is the embedding, $x^{(\ell)}$ the output of block $\ell$ (the input of block $\ell + 1$).
# The model only ever reads the *last* one, through the final layer norm and the tied head:
#
# $$z = \mathrm{LN}_f\big(x^{(L)}\big)\, W_{te}^\top .$$
#
# The logit lens applies the same read-out at every depth:
#
# $$z^{(\ell)} = \mathrm{LN}_f\big(x^{(\ell)}\big)\, W_{te}^\top, \qquad \ell = 0, \dots, L,$$
#
# and asks how good a next-token prediction $z^{(\ell)}$ already is. Every block only *adds* to the
# stream ($x^{(\ell)} = x^{(\ell-1)} + \mathrm{MHA}(\cdot) + \mathrm{MLP}(\cdot)$), so all depths live in
# the same $d$-dimensional space and one read-out fits them all. At $\ell = L$ the lens is the model
# itself; we check that first.

# %%
trace = model.trace(ids)
stream = [trace["embed"]] + [trace[f"h{l}.out"] for l in range(L)]       # L+1 arrays [T, d]
lens = np.stack([layers.tied_head(layers.layer_norm(x, **p["ln_f"]), p["wte"]) for x in stream])  # [L+1, T, V]

np.testing.assert_allclose(lens[L], model(ids), rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(lens[L], layers.gpt2(ids, p, H), rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(lens[L], trace["logits"], rtol=1e-5, atol=1e-5)
print(f"lens at depth {L} = model(ids): largest difference {np.abs(lens[L] - model(ids)).max():.1e}")

# %% [markdown]
# The top token of $z^{(\ell)}$ at each position, depth by depth (columns), with the token that really
# comes next in the last column:

# %%
top = lens.argmax(-1)                                                # [L+1, T]
show = lambda i: repr(tok.decode([int(i)]))[:11]
print(f"{'token':>12} | " + " ".join(f"{'depth ' + str(l):>11}" for l in range(L + 1)) + " | next")
for t in range(T):
    row = " ".join(f"{show(top[l, t]):>11}" for l in range(L + 1))
    print(f"{show(ids[t]):>12} | {row} | {show(ids[t + 1]) if t + 1 < T else ''}")
same_as_input = (top[0] == ids).mean()
same_as_final = (top == top[L]).mean(-1)                             # [L+1]
print(f"\ndepth 0 returns the input token itself at {same_as_input:.0%} of the positions")
print("share of positions whose top token already equals the final one, by depth:", np.round(same_as_final, 2))

# %% [markdown]
# Depth 0 is the embedding alone, $x^{(0)}_t = W_{te}[i_t] + W_{pe}[t]$, and the tied head scores each
# token by the dot product of its row with the (normalised) stream. A row has a large dot product with
# itself, so for the bundled model the lens at depth 0 mostly "predicts" the token it was given (the
# odd exceptions are explained in section 4). Each block then moves the stream away from *this
# token* towards *the next token*.
#
# How good is each depth's prediction? The loss of the lens at depth $\ell$ is the usual cross-entropy
# of the true next tokens,
#
# $$\mathcal{L}^{(\ell)} = -\frac{1}{T-1} \sum_{t=0}^{T-2} \log \mathrm{softmax}\big(z^{(\ell)}_t\big)_{i_{t+1}},$$
#
# measured on all five sentences and on a held-out passage of the corpus (never trained on; it
# ships in `tests/fixtures/`). At $\ell = L$ it is `model.loss`.

# %%
# README picture
heldout = np.array(tok.encode(open("../tests/fixtures/bundled_heldout_sample.txt", encoding="utf-8").read()))[:128]
lens_nll, lens_hit = {}, {}               # text -> [L+1, N] loss of each next token; whether it was the top one
for name, texts in [("sentences", all_ids), ("held-out passage", [heldout])]:
    nlls, hits = [], []
    for one in texts:
        tr = model.trace(one)
        xs = [tr["embed"]] + [tr[f"h{l}.out"] for l in range(L)]
        nll, hit = np.zeros((L + 1, len(one) - 1)), np.zeros((L + 1, len(one) - 1), dtype=bool)
        for l, x in enumerate(xs):                                   # one depth at a time: [T-1, V] each
            z = layers.tied_head(layers.layer_norm(x[:-1], **p["ln_f"]), p["wte"])
            nll[l] = -layers.log_softmax(z)[np.arange(len(one) - 1), one[1:]]
            hit[l] = z.argmax(-1) == one[1:]
        np.testing.assert_allclose(nll[L].mean(), model.loss(one), rtol=1e-4)
        nlls.append(nll)
        hits.append(hit)
    lens_nll[name], lens_hit[name] = np.concatenate(nlls, axis=1), np.concatenate(hits, axis=1)
curves = {name: v.mean(1) for name, v in lens_nll.items()}          # [L+1] mean loss per depth
for name in curves:
    print(f"{name:17} loss by depth:", np.round(curves[name], 2),
          "  top-1 accuracy:", np.round(lens_hit[name].mean(1), 2), f"({lens_nll[name].shape[1]} predictions)")
print(f"uniform guess: log V = {np.log(V):.2f}")

import matplotlib.ticker as mpl_ticker

fig, (ax, ax2) = plt.subplots(1, 2, figsize=(7.6, 3.0), layout="constrained")
for name in curves:
    ax.plot(range(L + 1), curves[name], "o-", label=name)
    ax2.plot(range(L + 1), lens_hit[name].mean(1), "o-", label=name)
ax.axhline(np.log(V), color="gray", ls="--", label="log V (uniform)")
ax.set_yscale("log"); ax.set_xlabel("depth ℓ (0 = embedding)"); ax.set_ylabel("loss (nats, log scale)")
ax.yaxis.set_major_locator(mpl_ticker.LogLocator(subs=(1, 2, 5)))
ax.yaxis.set_major_formatter(mpl_ticker.ScalarFormatter()); ax.minorticks_off()
ax.set_title("logit-lens loss of the next token"); ax.legend(fontsize=7)
ax2.set_xlabel("depth ℓ"); ax2.set_ylabel("share of positions"); ax2.set_ylim(0, None)
ax2.set_title("lens's top token = the true next token")

# %% [markdown]
# With these weights the loss falls at every depth, on the sentences and on the held-out passage,
# and the last depth (the model's own output) is the best: every block contributes to the prediction,
# none of them finishes it alone. Depth 0 is far *worse* than a uniform guess ($\log V$): there the
# lens confidently predicts the input token, which is almost never the next one. The share of top-1
# hits is a coarser measure and rises less regularly (over some depths it stalls): the loss also rewards
# probability moved onto the right token while it is not yet the top one.

# %%
if not REAL:   # what the prose above and the table say of the bundled model
    assert same_as_input > 0.5
    for c in curves.values():
        assert np.all(np.diff(c) < 0), c
        assert c[0] > 2 * np.log(V)
    assert any(np.any(np.diff(hit.sum(1)) <= 0) for hit in lens_hit.values())
print("loss drop per block (sentences):", np.round(-np.diff(curves["sentences"]), 2))

# %% [markdown]
# ## 2. What every head looks at
#
# Head $j$ of block $\ell$ turns its queries and keys into the attention weights
#
# $$P^{(\ell, j)} = \mathrm{softmax}\!\left(\frac{Q_j K_j^\top}{\sqrt{d_k}} + M\right) \in \mathbb{R}^{T \times T}$$
#
# (notebook 03): row $t$ is how query $t$ spreads its attention over the keys $0..t$. The trace keeps
# them as `h{ℓ}.attn.probs` `[H, T, T]`; we recompute one layer's from its queries and keys, then draw
# all $L \cdot H$ maps for the sentence: one row of pictures per layer, one column per head. Row $t$ and
# column $s$ are token $t$ and token $s$ of the sentence (numbered from 0 = `'Elizabeth'`, as printed
# at the top); the hidden future keys are white.

# %%
probs = np.stack([trace[f"h{l}.attn.probs"] for l in range(L)])     # [L, H, T, T]
M = layers.causal_mask(T, T)
q, k = trace["h2.attn.q"], trace["h2.attn.k"]                        # [H, T, dh] of block 2
by_hand = layers.softmax(q @ k.swapaxes(-1, -2) / np.sqrt(dh) + M)
np.testing.assert_allclose(by_hand, probs[2], rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(probs[2].sum(-1), 1.0, rtol=1e-5)

side = min(1.15, 8.0 / max(L, H))                                    # inches per map (smaller for 124M's 12 x 12)
fig, axes = plt.subplots(L, H, figsize=(side * H + 0.8, side * L + 0.6), layout="constrained", squeeze=False)
hidden = np.triu(np.ones((T, T), dtype=bool), 1)                     # the masked keys, drawn white
for l in range(L):
    for j in range(H):
        ax = axes[l, j]
        ax.imshow(np.ma.masked_where(hidden, probs[l, j]), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([0, 5, 10] if l == L - 1 else []); ax.set_yticks([0, 5, 10] if j == 0 else [])
        ax.tick_params(length=2, labelsize=7)
        if l == 0:
            ax.set_title(f"head {j}", fontsize=8)
        if j == H - 1:
            ax.yaxis.set_label_position("right"); ax.set_ylabel(f"layer {l}", fontsize=8)
fig.suptitle("attention weights: row t = query token t, column s = key token s", fontsize=9)

# %% [markdown]
# A few numbers per head say more than the pictures of one short sentence. For every query $t \ge 1$
# (position 0 can only look at itself), averaged over the queries of a longer text:
#
# | summary | formula (per query $t$) | if attention were uniform over $0..t$ |
# |---|---|---|
# | mean attention distance | $\sum_{s \le t} P_{ts}\,(t - s)$ | $t/2$ |
# | entropy (nats) | $-\sum_{s \le t} P_{ts} \log P_{ts}$ | $\log(t+1)$ |
# | weight on the first token | $P_{t0}$ | $1/(t+1)$ |
# | weight on the previous token | $P_{t,t-1}$ | $1/(t+1)$ |
#
# A head with a small distance and a low entropy looks at a few nearby tokens; one close to the
# uniform values averages over everything it can see. We measure them on the first 128 tokens of
# the held-out passage.

# %%
tr_long = model.trace(heldout)
Tl = len(heldout)
P = np.stack([tr_long[f"h{l}.attn.probs"] for l in range(L)])[:, :, 1:, :]   # [L, H, Tl-1, Tl]: queries t >= 1
t_q = np.arange(1, Tl)[:, None]                                            # query positions
s_k = np.arange(Tl)[None, :]                                               # key positions
stats = {
    "distance": (P * np.maximum(t_q - s_k, 0)).sum(-1).mean(-1),         # [L, H]
    "entropy": -(P * np.log(np.where(P > 0, P, 1.0))).sum(-1).mean(-1),
    "first token": P[..., 0].mean(-1),
    "previous token": P[..., np.arange(Tl - 1), np.arange(Tl - 1)].mean(-1),
}
uniform = {"distance": (t_q[:, 0] / 2).mean(), "entropy": np.log(t_q[:, 0] + 1).mean(),
           "first token": (1 / (t_q[:, 0] + 1)).mean(), "previous token": (1 / (t_q[:, 0] + 1)).mean()}
# the same numbers for one head, the slow way: a Python loop over its queries
l0, j0 = 3, 1
rows = tr_long[f"h{l0}.attn.probs"][j0]
np.testing.assert_allclose(stats["distance"][l0, j0],
                           np.mean([sum(rows[t, s] * (t - s) for s in range(t + 1)) for t in range(1, Tl)]), rtol=1e-5)
np.testing.assert_allclose(stats["previous token"][l0, j0], np.mean([rows[t, t - 1] for t in range(1, Tl)]), rtol=1e-5)

print(f"{'head':>7} " + " ".join(f"{k:>15}" for k in stats))
for l in range(L):
    for j in range(H):
        print(f"{f'{l}.{j}':>7} " + " ".join(f"{stats[k][l, j]:15.3f}" for k in stats))
print(f"{'uniform':>7} " + " ".join(f"{uniform[k]:15.3f}" for k in stats))
fig, axes = plt.subplots(1, 4, figsize=(7.6, 2.7), layout="constrained")
for ax, (name, v) in zip(axes, stats.items()):
    fig.colorbar(ax.imshow(v, cmap="magma"), ax=ax, shrink=0.75)   # the numbers are in the table above
    ax.set_title(f"{name}\n(uniform: {uniform[name]:.2g})", fontsize=8)
    ax.set_xticks(range(H)); ax.set_yticks(range(L)); ax.set_xlabel("head")
axes[0].set_ylabel("layer")

# %%
flat = lambda a: divmod(int(a), H)                                   # index into [L*H] -> (layer, head)
nearest = flat(stats["distance"].argmin()); widest = flat(stats["distance"].argmax())
prev_head = flat(stats["previous token"].argmax()); first_head = flat(stats["first token"].argmax())
print(f"most local head: {nearest[0]}.{nearest[1]} (mean distance {stats['distance'][nearest]:.1f} tokens, "
      f"uniform {uniform['distance']:.1f})")
print(f"widest head:     {widest[0]}.{widest[1]} (mean distance {stats['distance'][widest]:.1f})")
print(f"most previous-token weight: {prev_head[0]}.{prev_head[1]} ({stats['previous token'][prev_head]:.2f})")
print(f"most first-token weight:    {first_head[0]}.{first_head[1]} ({stats['first token'][first_head]:.2f})")
print("mean distance by layer:", np.round(stats["distance"].mean(1), 1))

# %% [markdown]
# **Copying.** Trained language models often have *induction heads*: at the second occurrence of a
# token, they attend to the token that followed its first occurrence and copy it, which makes a
# repeated text much cheaper the second time. We test for them with a sentence of $n$ tokens
# repeated twice: for a query $t$ in the second copy, the *induction score* is the weight on key
# $t - n + 1$ (the token after the same one in the first copy).

# %%
rep = np.concatenate([all_ids[1], all_ids[1]])
n = len(all_ids[1])
tr_rep = model.trace(rep)
nll_rep = -layers.log_softmax(tr_rep["logits"][:-1])[np.arange(2 * n - 1), rep[1:]]
np.testing.assert_allclose(nll_rep.mean(), model.loss(rep), rtol=1e-4)
first_copy, second_copy = nll_rep[:n - 1].mean(), nll_rep[n:].mean()     # the same n-1 predictions, twice
q_pos = np.arange(n, 2 * n)
induction = np.stack([tr_rep[f"h{l}.attn.probs"][:, q_pos, q_pos - n + 1].mean(-1) for l in range(L)])  # [L, H]
best_ind = flat(induction.argmax())
print(f"loss of the sentence's tokens: first copy {first_copy:.2f}, second copy {second_copy:.2f} nats")
print("induction score per head (rows = layers):\n", np.round(induction, 3))
print(f"highest: head {best_ind[0]}.{best_ind[1]} with {induction[best_ind]:.3f}; "
      f"uniform attention would give {(1 / (q_pos + 1)).mean():.3f}")

# %% [markdown]
# With the bundled model the heads are soft: no head puts even half of its weight on one fixed
# relative position (previous token or first token), and no head is an induction head (the highest
# induction score stays far below one half, and the repeated sentence gets only a little cheaper the
# second time). The first two layers average most widely; the later ones look more locally, the
# middle layers most of all (mean distance by layer, printed above). This small, briefly trained model has not formed
# sharp heads of these kinds; with OpenAI's 124M in the cache, the same cells measure that model.

# %%
if not REAL:   # what the prose above says of the bundled model
    assert stats["previous token"].max() < 0.5 and stats["first token"].max() < 0.5
    assert induction.max() < 0.5 and first_copy - second_copy < 1.0
    by_layer = stats["distance"].mean(1)
    assert by_layer[2:].max() < min(by_layer[0], by_layer[1]) and 2 <= int(np.argmin(by_layer)) <= L - 2
print("previous-token weight max", round(float(stats["previous token"].max()), 3),
      "; first-token max", round(float(stats["first token"].max()), 3),
      "; induction max", round(float(induction.max()), 3))

# %% [markdown]
# ## 3. Which heads matter: zeroing one head's output
#
# The output of multi-head attention is a *sum over heads*: splitting $W_o$ into its $H$ blocks of
# $d_k$ rows, $W_o^{(j)} \in \mathbb{R}^{d_k \times d}$,
#
# $$\mathrm{MHA}(x) = [\,h_1 \;\cdots\; h_H\,]\, W_o + b_o = \sum_{j=1}^{H} h_j\, W_o^{(j)} + b_o,
# \qquad h_j = P_j V_j \in \mathbb{R}^{T \times d_k}.$$
#
# *Ablating* head $j$ means setting $h_j = 0$ (its slice of the attention output, before `c_proj`),
# so its term disappears from the sum, and running the rest of the model as usual. The increase of
# the loss says how much the model relies on that head. We run the ablated block by hand from the
# pieces in `gpt2np.layers`, starting from the residual stream that enters it (the blocks before it
# are not affected), and first check that with nothing zeroed the hand run is `model(ids)`.
#
# The five sentences run as one batch `[B, T]`, padded on the *right* to the longest: thanks to the
# causal mask a token never sees the padding after it, so the real positions are computed exactly as
# if each sentence ran alone (checked below); the padded positions are left out of the loss.

# %%
B, T_max = len(all_ids), max(len(one) for one in all_ids)
batch = np.full((B, T_max), tok.encode("<|endoftext|>", allowed_special="all")[0])
for b, one in enumerate(all_ids):
    batch[b, :len(one)] = one
real = np.arange(T_max)[None, :] < np.array([len(one) for one in all_ids])[:, None]     # [B, T_max]
rec = layers.Record()
batch_logits = layers.gpt2(batch, p, H, record=rec)                 # every intermediate, batched
for b, one in enumerate(all_ids):                                    # right padding changes nothing real
    np.testing.assert_allclose(batch_logits[b, :len(one)], model(one), rtol=1e-4, atol=1e-4)

def run_with_heads_zeroed(layer, zeroed=()):
    """Logits [B, T_max, V] of the batch when the heads `zeroed` of block `layer` output 0."""
    mask = layers.causal_mask(T_max, T_max)
    x = rec["embed"] if layer == 0 else rec[f"h{layer - 1}.out"]      # the stream entering block `layer`
    blk = p["blocks"][layer]
    a = layers.layer_norm(x, **blk["ln_1"])
    q, k, v = (layers.split_heads(t, H) for t in np.split(layers.linear(a, **blk["attn"]["c_attn"]), 3, axis=-1))
    heads = layers.merge_heads(layers.attention(q, k, v, mask))        # [B, T, d]: h_1 ... h_H side by side
    keep = np.ones(d, dtype=heads.dtype)
    for j in zeroed:
        keep[j * dh:(j + 1) * dh] = 0.0                                  # h_j = 0
    x = x + layers.linear(heads * keep, **blk["attn"]["c_proj"])
    x = x + layers.mlp(layers.layer_norm(x, **blk["ln_2"]), **blk["mlp"])
    for later in p["blocks"][layer + 1:]:
        x = layers.block(x, later, H, mask)
    h = layers.layer_norm(x, **p["ln_f"]).reshape(B * T_max, d)       # one 2-D matmul for the head: faster
    return layers.tied_head(h, p["wte"]).reshape(B, T_max, V)

model_logits = model(batch)
for layer in range(L):                                               # nothing zeroed: the model itself
    np.testing.assert_allclose(run_with_heads_zeroed(layer), model_logits, rtol=1e-4, atol=1e-4)

# zeroing head j removes exactly the term h_j W_o^(j) from the attention output
j, layer = 1, 2
c_proj = p["blocks"][layer]["attn"]["c_proj"]
h_all = layers.merge_heads(rec[f"h{layer}.attn.probs"] @ rec[f"h{layer}.attn.v"])       # [B, T, d]
np.testing.assert_allclose(layers.linear(h_all, **c_proj), rec[f"h{layer}.attn.out"], rtol=1e-4, atol=1e-5)
term = h_all[..., j * dh:(j + 1) * dh] @ c_proj["w"][j * dh:(j + 1) * dh]               # h_j W_o^(j)
keep = np.ones(d, dtype=h_all.dtype)
keep[j * dh:(j + 1) * dh] = 0.0
np.testing.assert_allclose(layers.linear(h_all * keep, **c_proj), rec[f"h{layer}.attn.out"] - term, rtol=1e-4, atol=1e-5)
print("the padded batch equals each sentence alone; the hand run equals model(batch) from every block;"
      " zeroing h_j removes exactly h_j W_o^(j)")

# %% [markdown]
# The loss over all the next-token predictions of the five sentences, with each of the $L \cdot H$
# heads zeroed in turn, and, for comparison, with a whole layer's attention zeroed:

# %%
valid = real[:, 1:]                                                  # [B, T_max-1]: predictions of real tokens
n_pred = int(valid.sum())
batch_loss = lambda z: float(-np.take_along_axis(layers.log_softmax(z[:, :-1]), batch[:, 1:, None], -1)[..., 0][valid].mean())
base = batch_loss(batch_logits)
np.testing.assert_allclose(base, np.sum([model.loss(one) * (len(one) - 1) for one in all_ids]) / n_pred, rtol=1e-5)
increase = np.array([[batch_loss(run_with_heads_zeroed(layer, [j])) - base for j in range(H)] for layer in range(L)])
layer_increase = np.array([batch_loss(run_with_heads_zeroed(layer, range(H))) - base for layer in range(L)])
print(f"loss of the {n_pred} predictions, nothing zeroed: {base:.3f} nats")
print("increase when one head is zeroed (rows = layers, columns = heads):\n", np.round(increase, 3))
print("increase when all heads of a layer are zeroed:", np.round(layer_increase, 3))
order = np.argsort(-increase, axis=None)
print("most important heads:", ", ".join(f"{flat(i)[0]}.{flat(i)[1]} (+{increase.flat[i]:.3f})" for i in order[:3]))
print("least important:     ", ", ".join(f"{flat(i)[0]}.{flat(i)[1]} ({increase.flat[i]:+.3f})" for i in order[-3:]))

fig, (ax, ax2) = plt.subplots(1, 2, figsize=(6.8, 3.0), layout="constrained", width_ratios=(H, 2.2))
lim = np.abs(increase).max()
im = ax.imshow(increase, cmap="RdBu_r", vmin=-lim, vmax=lim)
for l in range(L):
    for j in range(H):
        ax.text(j, l, f"{increase[l, j]:+.3f}", ha="center", va="center", fontsize=7,
                color="white" if abs(increase[l, j]) > 0.6 * lim else "black")
ax.set_xticks(range(H)); ax.set_yticks(range(L)); ax.set_xlabel("head"); ax.set_ylabel("layer")
ax.set_title("loss increase, one head zeroed (nats)")
fig.colorbar(im, ax=ax, shrink=0.8)
ax2.barh(range(L), layer_increase, color="tab:purple")
ax2.set_yticks(range(L)); ax2.invert_yaxis(); ax2.set_xlabel("nats")
ax2.set_title("whole layer zeroed")

# %% [markdown]
# In the bundled model one head matters far more than the others: zeroing it alone raises the loss by
# more than a tenth of what it is, while most heads cost less than a twentieth, and a few even help a
# little when removed (on these few sentences). Heads need not add up: in every layer but one,
# zeroing the whole layer's attention costs more than zeroing any one of its heads, but in one layer
# it costs less than zeroing that layer's most important head alone. The printout compares each
# layer's cost with the sum of its heads' costs and names the heads that matter most; compare them
# with the attention table of section 2.

# %%
if not REAL:   # what the prose above says of the bundled model
    assert increase.max() > 0.1 * base and np.mean(increase < 0.05 * base) > 0.5 and increase.min() < 0
    assert np.sum(layer_increase < increase.max(1)) == 1
print("whole layer vs the sum of its heads' increases:",
      "  ".join(f"{l}: {layer_increase[l]:.3f} vs {increase[l].sum():.3f}" for l in range(L)))
top_head = flat(increase.argmax())
print(f"largest single-head increase {increase.max():.3f} nats (head {top_head[0]}.{top_head[1]}: mean attention "
      f"distance {stats['distance'][top_head]:.1f}, first-token weight {stats['first token'][top_head]:.3f}, "
      f"induction score {induction[top_head]:.3f}); largest whole-layer increase {layer_increase.max():.3f} nats "
      f"(layer {layer_increase.argmax()})")

# %% [markdown]
# ## 4. The embedding space
#
# Row $i$ of $W_{te} \in \mathbb{R}^{V \times d}$ is token $i$'s vector, both where it enters the model
# and where the tied head scores it on the way out. Tokens that the model uses in similar ways end up
# with rows that point in similar directions. Their **cosine similarity**
#
# $$\cos(i, j) = \frac{W_{te}[i] \cdot W_{te}[j]}{\lVert W_{te}[i] \rVert\, \lVert W_{te}[j] \rVert}$$
#
# is the tied head itself applied to unit-length rows: `tied_head(u_i, U)` with $U$ the normalised
# table scores every token against $u_i$ at once. The five nearest neighbours of a few tokens:

# %%
wte = p["wte"]
norms = np.linalg.norm(wte, axis=1)                                  # [V]
U = wte / norms[:, None]                                             # unit rows
probe = [" king", " she", " Elizabeth", " God", " walked", " happy", " three"]
neighbours = {}
for word in probe:
    (i,) = tok.encode(word)                                          # each is a single token
    cos = layers.tied_head(U[i], U)                                  # [V]
    np.testing.assert_allclose(cos[i], 1.0, rtol=1e-5)
    j = int(np.argsort(-cos)[1])
    np.testing.assert_allclose(cos[j], wte[i] @ wte[j] / (norms[i] * norms[j]), rtol=1e-4)
    best = [int(b) for b in np.argsort(-cos) if b != i][:5]
    neighbours[word] = [tok.decode([b]) for b in best]
    print(f"{word!r:13} " + "  ".join(f"{tok.decode([b])!r} {cos[b]:.2f}" for b in best))

# %% [markdown]
# For the bundled model the neighbours are tokens of the same kind: names next to names, numbers
# next to numbers, " walked" next to other verbs of going, most of them in the past tense. Nobody
# told the model these categories;
# they come from predicting the next token, because words of one kind appear in the same contexts.
#
# A 2-D picture: the unit rows of a few dozen common words in six groups, projected on their first
# two principal components (the two directions along which these rows vary most: the top right
# singular vectors of the centred matrix). Two dimensions keep only part of the structure; the share
# of words whose nearest neighbour (in all $d$ dimensions) is in their own group says how much there is.

# %%
groups = {
    "names": [" Elizabeth", " Anne", " Emma", " Jane", " Mary", " John", " Moses", " David"],
    "numbers": [" two", " three", " four", " five", " six", " seven", " ten"],
    "pronouns": [" he", " she", " they", " we", " I", " you", " it"],
    "verbs": [" walked", " said", " went", " came", " ran", " sat", " spoke"],
    "Bible": [" God", " Lord", " heaven", " prophet", " temple", " priest", " sin"],
    "feelings": [" happy", " glad", " sorry", " pleased", " angry", " afraid", " proud"],
}
words = [w for ws in groups.values() for w in ws]
rows = np.array([U[tok.encode(w)[0]] for w in words])               # [n, d]
centred = rows - rows.mean(0)
_, sing, vt = np.linalg.svd(centred, full_matrices=False)
xy = centred @ vt[:2].T                                              # [n, 2]
# the same two directions as the top eigenvectors of the covariance matrix (up to sign)
_, eigvecs = np.linalg.eigh(centred.T @ centred)
np.testing.assert_allclose(np.abs(eigvecs[:, ::-1][:, :2].T @ vt[:2].T), np.eye(2), atol=1e-4)
print(f"the two components carry {np.sum(sing[:2] ** 2) / np.sum(sing ** 2):.0%} of the variance of these rows")
# how well do the groups separate? each word's nearest other word (full d dimensions), same group or not
cos_w = rows @ rows.T
np.fill_diagonal(cos_w, -2)
group_of = np.repeat(np.arange(len(groups)), [len(ws) for ws in groups.values()])
same_group = (group_of[cos_w.argmax(1)] == group_of).mean()
print(f"a word's nearest neighbour among these {len(words)} is in its own group for {same_group:.0%} of them")

fig, ax = plt.subplots(figsize=(5.8, 3.7))
for g, (name, ws) in enumerate(groups.items()):
    pts = xy[group_of == g]
    ax.scatter(pts[:, 0], pts[:, 1], s=14, label=name)
    for (x0, y0), w in zip(pts, ws):
        ax.annotate(w.strip(), (x0, y0), fontsize=7, xytext=(2, 2), textcoords="offset points")
ax.set_xlabel("PC 1"); ax.set_ylabel("PC 2"); ax.legend(fontsize=7, loc="best")
ax.set_title("token embeddings (unit rows of wte), first two principal components")
fig.tight_layout()

# %% [markdown]
# **A surprise in the lengths.** GPT-2's 50,257 tokens were made for web text; many of them (modern
# words, code, fragments) never occur in its old novels or the Bible. A row that is never the right answer
# only gets the softmax's push away from the stream: through the head, $\partial \mathcal{L} /
# \partial W_{te}[v] = \frac{1}{N}\sum_t p_{t,v}\, h_t$ (notebook 09), a positive mix of the same final
# vectors $h_t$ for every such row, so they all drift in similar directions. The histogram of the row
# lengths $\lVert W_{te}[i] \rVert$ shows what that did to the bundled model. We call the rows within 5%
# of the longest the *spike*; the printout says how many there are, how closely they share one
# direction, and how often real text uses them.

# %%
spike = norms > 0.95 * norms.max()
mean_dir = U[spike].mean(0)
mean_dir /= np.linalg.norm(mean_dir)
cos_to_mean = U[spike] @ mean_dir
probe_ids = [tok.encode(w)[0] for w in words]
print(f"row lengths: min {norms.min():.2f}, median {np.median(norms):.2f}, max {norms.max():.2f}")
print(f"the spike: {spike.sum():,} of {V:,} rows ({spike.mean():.0%}); cosine with their mean direction: "
      f"min {cos_to_mean.min():.4f}, median {np.median(cos_to_mean):.4f}")
print(f"in the spike: {spike[probe_ids].sum()} of the {len(words)} words of the picture, "
      f"{spike[heldout].mean():.1%} of the tokens of the held-out passage")
on_spike = layers.softmax(batch_logits)[..., spike].sum(-1)[real]   # [real positions]: p(next token is in the spike)
print(f"probability the model gives the whole spike as the next token, on the sentences: mean {on_spike.mean():.4f}, "
      f"max {on_spike.max():.4f}")
odd = top[0][top[0] != ids]                                          # depth-0 lens tops that are not the input
print("the odd depth-0 tokens of the lens table:", [tok.decode([int(i)]) for i in odd],
      "in the spike:", spike[odd].tolist())
rng = np.random.default_rng(0)
for name, rows_of in [("the spike", spike), ("length < 1", norms < 1), ("between", ~spike & (norms >= 1))]:
    pool = np.flatnonzero(rows_of)
    print(f"a sample of {name + ':':12}", [tok.decode([int(i)]) for i in rng.choice(pool, min(8, len(pool)), replace=False)])
fig, ax = plt.subplots(figsize=(6.0, 2.6))
ax.hist(norms, bins=100, log=True)
ax.axvline(0.95 * norms.max(), color="tab:red", ls="--", lw=1, label="the spike: within 5% of the longest")
ax.set_xlabel("‖wte[i]‖"); ax.set_ylabel("tokens (log scale)"); ax.set_title("lengths of the embedding rows")
ax.legend(fontsize=7, loc="upper center")
fig.tight_layout()

# %% [markdown]
# So the embedding table of the bundled model holds a structured cloud of shorter rows, the tokens its
# corpus uses (the neighbours above), and a spike of long rows, about half of the vocabulary, all
# pushed out in practically one direction, where the trained model's output gives them almost no
# probability. The spike also explains most of the odd tokens of the lens table at depth 0: where a
# word's own row does not win the dot product, a row of the spike mostly does.

# %%
if not REAL:   # what the prose above says of the bundled model
    number_words = {" one", " two", " four", " five", " six", " seven", " eight", " nine", " ten", " twenty", " hundred"}
    assert set(neighbours[" three"]) <= number_words, neighbours[" three"]
    heroines = {" Jane", " Lydia", " Anne", " Emma", " Mary", " Charlotte", " Catherine", " Maria", " Fanny"}
    assert len(heroines & set(neighbours[" Elizabeth"])) >= 3, neighbours[" Elizabeth"]
    assert 0.4 < spike.mean() < 0.6 and cos_to_mean.min() > 0.98 and spike[probe_ids].sum() == 0
    assert spike[heldout].mean() < 0.05 and on_spike.mean() < 0.01 and len(odd) and spike[odd].mean() > 0.5
    irregular = {" sat", " ran", " went", " came", " stood", " rose", " spoke", " got", " crept", " flew", " fled"}
    assert sum(w.endswith("ed") or w in irregular for w in neighbours[" walked"]) >= 3, neighbours[" walked"]
    assert same_group > 0.6
print("neighbours of ' three':", neighbours[" three"], "; of ' Elizabeth':", neighbours[" Elizabeth"])

# %% [markdown]
# **Summary.** The logit lens reads every depth of the residual stream with the model's own
# read-out, $\mathrm{LN}_f(x^{(\ell)}) W_{te}^\top$: the prediction improves block by block, and the last
# depth is exactly `model(ids)`. Each head's attention is a $T \times T$ map; a few averages (distance,
# entropy, first and previous token, induction score) summarise it. Zeroing one head's slice before
# `c_proj` removes its term of the sum $\sum_j h_j W_o^{(j)}$ and measures what the model loses without
# it. And the rows of $W_{te}$, compared by cosine, group tokens by how they are used.
