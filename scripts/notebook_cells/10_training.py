# %% [markdown]
# # 10 · Training: how GPT-2 learns
#
# A model's weights are made by one loop, repeated thousands of times: read a few random windows of
# text, measure how badly the model predicts each next token (the **loss**), compute the gradient of
# that loss with respect to every weight (**backward**), limit the gradient's length (**clipping**)
# and move every weight a little against it (**AdamW**), by a step size that changes over the run
# (the **learning-rate schedule**). In gpt2np one step of `gpt2np.train.train` is:
#
# ```python
# windows = gather_windows(tokens, draw_starts(rng, len(tokens), seq_len + 1, batch_size), seq_len + 1)
# loss, grads = window_loss_and_grads(model, windows)   # forward + backward
# clip_grad_norm(grads, max_norm=1.0)                   # in place
# opt.step(grads, lr=cosine_lr(step, ...))              # AdamW, in place
# ```
#
# This notebook takes the pieces in that order, computes each by hand and checks it against gpt2np;
# then it trains a tiny model from scratch inside the notebook with that loop, reads the real
# training curve of the bundled model, and fine-tunes the bundled model on a text of another style.

# %%
SETUP

# %%
import copy
import math
import pathlib
import tempfile
import time
from gpt2np import bundled, optim, scoring
from gpt2np import train as training      # the module gpt2np.train (its function train is training.train)
from gpt2np.formats import flatten, unflatten

tok = Tokenizer.gpt2()
V = model.config.n_vocab
card = bundled.read_card()                # the bundled model's card.json: its corpus, settings and losses
REPO = pathlib.Path(gpt2np.__file__).resolve().parent.parent   # this checkout of the repository
sample_text = (REPO / "tests" / "fixtures" / "bundled_heldout_sample.txt").read_text(encoding="utf-8")
print(f"{len(sample_text):,} characters of held-out text; vocabulary V = {V:,}")

# %% [markdown]
# ## 1. Text → token file
#
# `training.prepare_tokens(paths, folder)` turns text files into the two arrays a run reads. Each
# file is one *document*: encoded with GPT-2's tokenizer, its last `val_fraction` of tokens kept for
# **validation** (text the model never trains on, to measure how well it generalises), and each part
# followed by `<|endoftext|>` (id 50256), GPT-2's separator of documents. The parts are saved as
# `train.npy` and `val.npy` of `uint16` (every id is below $50257 < 2^{16}$, so two bytes a token)
# and read back as memory maps, so a corpus larger than memory can be trained on.
#
# Our text is the bundled model's held-out sample (`tests/fixtures/bundled_heldout_sample.txt`, text
# the bundled model was *not* trained on): a passage of Austen and one of Genesis, written here as two
# documents.

# %%
tmp = tempfile.TemporaryDirectory(prefix="gpt2np-nb10-")
work = pathlib.Path(tmp.name)
cut = sample_text.index("Chapter 10")                 # where the Genesis passage starts
docs = {"austen.txt": sample_text[:cut], "genesis.txt": sample_text[cut:]}
for name, text in docs.items():
    (work / name).write_text(text, encoding="utf-8")
token_files = training.prepare_tokens([work / n for n in docs], work / "sample.tokens", val_fraction=0.1,
                                     log=lambda message: print(message.replace(str(work), "<temporary folder>")))
train_ids, val_ids = token_files.load()               # read-only memory maps of the two .npy files
print(f"train.npy: {train_ids.dtype} {train_ids.shape}, {token_files.train.stat().st_size:,} bytes;"
      f" val.npy: {val_ids.shape}")

# the same by hand: encode each document, keep its last round(0.1 n) tokens for validation, end each part with EOT
EOT = tok.eot_token
by_hand_train, by_hand_val = [], []
for text in docs.values():
    ids = tok.encode(text)
    n_val = round(0.1 * len(ids))
    by_hand_train += ids[: len(ids) - n_val] + [EOT]
    by_hand_val += ids[len(ids) - n_val:] + [EOT]
np.testing.assert_array_equal(train_ids, by_hand_train)
np.testing.assert_array_equal(val_ids, by_hand_val)
print("<|endoftext|> at train positions", np.flatnonzero(train_ids == EOT), "and val positions", np.flatnonzero(val_ids == EOT))

# %% [markdown]
# ## 2. Random windows and their targets
#
# Each step reads a batch of $B$ windows of $T + 1$ consecutive tokens, each starting at a uniformly
# random position $s \in \{0, \dots, N - T - 1\}$ of the $N$ training tokens. The model reads a
# window's first $T$ tokens $x = w_{0..T-1}$, and position $t$ must predict the token after it,
# $y_t = w_{t+1}$: the targets are the inputs shifted by one, and one window gives $T$ predictions,
# each seeing only the tokens up to its own (the causal mask of notebook 03).

# %%
T, B = 64, 8                                          # seq_len and batch_size of the tiny model below
rng = np.random.default_rng(0)
starts = training.draw_starts(rng, len(train_ids), T + 1, B)
windows = training.gather_windows(train_ids, starts, T + 1)   # [B, T + 1] int64
np.testing.assert_array_equal(windows, np.stack([train_ids[s : s + T + 1] for s in starts]))
x, y = windows[:, :-1], windows[:, 1:]                # inputs [B, T] and targets [B, T]
print(f"starts: {starts}   windows: {windows.shape}   x, y: {x.shape}")
print(f"window 0, its first 10 positions:\n  t   x_t (read)       y_t (to predict)")
for t in range(10):
    print(f" {t:2d}   {tok.decode([int(x[0, t])])!r:16} {tok.decode([int(y[0, t])])!r}")

# %% [markdown]
# ## 3. The loss: mean cross-entropy
#
# At each position the model gives logits $z_t \in \mathbb{R}^V$ and, by softmax, a probability for
# every token of the vocabulary. The loss is the mean, over all $B \cdot T$ predictions, of minus the
# log-probability given to the right token:
#
# $$L = -\frac{1}{BT}\sum_{b,t} \log \mathrm{softmax}(z_{b,t})_{y_{b,t}}
#     = \frac{1}{BT}\sum_{b,t} \Big(\log\sum_{j=1}^{V} e^{z_{b,t,j}} \;-\; z_{b,t,y_{b,t}}\Big)$$
#
# in nats per token. A model that knows nothing and spreads its probability evenly, $p_j = 1/V$, pays
# $-\log(1/V) = \ln V = \ln 50257 = 10.82$ on every token whatever the text: the loss of a uniform
# guess, and where training starts, because GPT-2's initial weights (normal, std 0.02) make all
# logits nearly 0, hence nearly equal. $e^{L}$ is the *perplexity*: the model is as unsure as if it
# picked among $e^L$ equally likely tokens. Below, the loss of `model` on the batch by hand, against
# `model.loss` and `training.evaluate`, next to the uniform guess and a random-weights model.

# %%
z = model(x).astype(np.float64)                       # [B, T, V] logits
zmax = z.max(-1, keepdims=True)
logsumexp = (zmax + np.log(np.exp(z - zmax).sum(-1, keepdims=True)))[..., 0]   # [B, T]
token_loss = logsumexp - np.take_along_axis(z, y[..., None], -1)[..., 0]        # -log p(y_t), [B, T]
L = token_loss.mean()
np.testing.assert_allclose(L, model.loss(windows), rtol=1e-5)          # reads all T + 1, the last predicts nothing
np.testing.assert_allclose(L, training.evaluate(model, windows), rtol=1e-5)

tiny_config = Config(n_vocab=V, n_ctx=64, n_embd=64, n_head=4, n_layer=2)
L_random = training.evaluate(GPT2.random(tiny_config, seed=0), windows)   # a tiny random GPT-2 (section 8)
print(f"uniform guess ln V     = {math.log(V):.4f}")
print(f"random weights (init)  = {L_random:.4f}")
print(f"`model` on this batch  = {L:.4f}   (perplexity {math.exp(L):,.0f})")
print(f"a unigram model (token frequencies, no context) on the bundled model's held-out text, from its card:"
      f" {card['corpus']['unigram_baseline']['heldout']:.4f}")
print(f"-log p(target) per token: from {token_loss.min():.4f} to {token_loss.max():.2f}")
assert abs(L_random - math.log(V)) < 0.05 and L < L_random
if not REAL:   # the spread described below, for the bundled model
    assert token_loss.min() < 0.1 and token_loss.max() > math.log(V)

fig, ax = plt.subplots(figsize=(6.4, 2.6))
ax.hist(token_loss.ravel(), bins=50, color="tab:blue")
ax.axvline(math.log(V), color="k", ls="--", label=f"uniform guess ln V = {math.log(V):.2f}")
ax.axvline(L, color="tab:red", label=f"mean = loss L = {L:.2f}")
ax.set_xlabel("−log p(target) of each of the B·T predictions (nats)"); ax.set_ylabel("tokens"); ax.legend()
fig.tight_layout()

# %% [markdown]
# The mean hides a wide spread: some tokens are predicted almost surely ($-\log p \approx 0$), and some
# cost more than the uniform guess: the model was confident in another token.
#
# ## 4. Backward: the gradient of every weight in one call
#
# Training needs $\partial L / \partial \theta$ for each of the model's weights $\theta$. Backpropagation
# (notebook 09 derives it formula by formula) gets all of them for about twice the cost of the
# forward pass. `training.window_loss_and_grads(model, windows)` is what a training step calls:
# the loss of section 3 and a tree of gradients shaped exactly like `model.params`. It equals
# `gpt2np.loss_and_grads(model, windows)`, the general function (labels, padding), which also runs
# each window's last token through the model, though its output predicts nothing.

# %%
small = windows[:2, :33]                              # 2 windows of 32 predictions: cheap even for GPT-2 124M
loss, grads = training.window_loss_and_grads(model, small)
loss_b, grads_b = gpt2np.loss_and_grads(model, small)
np.testing.assert_allclose(loss, model.loss(small), rtol=1e-5)
np.testing.assert_allclose(loss, loss_b, rtol=1e-6)
flat_g, flat_gb, flat_p = flatten(grads), flatten(grads_b), flatten(model.params)
for name in flat_g:
    np.testing.assert_allclose(flat_g[name], flat_gb[name], rtol=1e-4, atol=1e-7, err_msg=name)
    assert flat_g[name].shape == flat_p[name].shape and flat_g[name].dtype == flat_p[name].dtype
print(f"loss {loss:.4f}; {len(flat_g)} gradient tensors, shaped like the params. Some of them:")
for name in ["wte", "wpe", "blocks.0.ln_1.g", "blocks.0.attn.c_attn.w", "blocks.0.mlp.c_fc.b", "ln_f.b"]:
    print(f"  {name:24} {str(flat_g[name].shape):14} ‖g‖ = {np.linalg.norm(flat_g[name]):.4f}")
del grads_b, flat_gb

# %% [markdown]
# What the gradient promises: to first order, a small step $-\eta\,g$ against it lowers the loss by
# $\eta \lVert g \rVert^2$ (it is the direction of steepest descent), $L(\theta - \eta g) \approx
# L(\theta) - \eta \lVert g \rVert^2$. We take such a step on a copy of the weights and measure.

# %%
g_sq = sum(float(np.sum(g.astype(np.float64) ** 2)) for g in flat_g.values())   # ‖g‖², all tensors together
eta = 0.02 / g_sq                                                 # a step that should gain 0.02 nats
stepped = GPT2(model.config, unflatten({k: p - eta * flat_g[k] for k, p in flat_p.items()}, model.config.n_layer))
gain = loss - stepped.loss(small)
print(f"predicted decrease η‖g‖² = {eta * g_sq:.4f}, measured {gain:.4f}")
np.testing.assert_allclose(gain, eta * g_sq, rtol=0.15)
del stepped

# %% [markdown]
# ## 5. Gradient clipping by the global norm
#
# All gradient tensors are treated as one long vector $g$. If its length exceeds a limit $c$
# (`TrainSettings.clip`, 1.0 by default), the whole vector is scaled down to length $c$:
#
# $$\lVert g \rVert = \sqrt{\sum_{\text{tensors}}\sum_i g_i^2}, \qquad
# g \leftarrow g \cdot \min\!\Big(1, \frac{c}{\lVert g \rVert + 10^{-6}}\Big)$$
#
# One factor for every tensor, so the *direction* of the step is kept and only its length is
# limited: a batch that happens to give a huge gradient (a loss spike) cannot throw the weights far.
# `optim.clip_grad_norm(grads, c)` scales in place and returns the norm *before* clipping (worth
# logging: spikes show instabilities). Below with the training limit $c = 1$, and with a limit of a
# quarter of this gradient's norm, which must clip.

# %%
norm_by_hand = math.sqrt(g_sq)
for c in (1.0, norm_by_hand / 4):
    clipped = copy.deepcopy(grads)
    returned = optim.clip_grad_norm(clipped, max_norm=c)
    coef = min(1.0, c / (norm_by_hand + 1e-6))
    np.testing.assert_allclose(returned, norm_by_hand, rtol=1e-5)   # (it sums in float32 slices)
    for name, g in flatten(clipped).items():
        np.testing.assert_allclose(g, flat_g[name] * np.float32(coef), rtol=1e-6, atol=1e-12, err_msg=name)
    after = math.sqrt(sum(float(np.vdot(g, g)) for g in flatten(clipped).values()))
    print(f"c = {c:.4f}: ‖g‖ = {returned:.4f} -> factor {coef:.4f} -> ‖g‖ after = {after:.4f}")
assert abs(after - norm_by_hand / 4) < 1e-3 * norm_by_hand
del clipped

# %% [markdown]
# ## 6. AdamW
#
# Plain gradient descent, $\theta \leftarrow \theta - \eta g$, takes the same learning rate for
# every weight, though gradients differ in scale by orders of magnitude between tensors. Adam keeps,
# per weight, an exponential moving average of the gradient $m$ (its direction, smoothed over steps) and of its
# square $v$ (its scale), and divides one by the square root of the other. At step $t = 1, 2, \dots$
# with gradient $g_t$:
#
# $$m_t = \beta_1 m_{t-1} + (1-\beta_1)\,g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2,
# \qquad m_0 = v_0 = 0$$
#
# $$\hat m_t = \frac{m_t}{1-\beta_1^t}, \qquad \hat v_t = \frac{v_t}{1-\beta_2^t}, \qquad
# \theta_t = \theta_{t-1} \;-\; \eta\lambda\,\theta_{t-1} \;-\; \eta\,\frac{\hat m_t}{\sqrt{\hat v_t}+\varepsilon}$$
#
# - **Bias correction**: $m$ and $v$ start at 0, so early on they are too small by the factors
#   $1-\beta_1^t$ and $1-\beta_2^t$; dividing by them fixes it. At $t = 1$, $\hat m = g$ and
#   $\hat v = g^2$: the first step moves every weight by about $\eta$, in the direction of $-g$,
#   whatever the scale of its gradient.
# - **Decoupled weight decay** (the W): the weights are shrunk by $\eta\lambda\,\theta$ directly. Adam
#   with an L2 penalty instead would add $\lambda\theta$ to $g$, and that would then be divided by
#   $\sqrt{\hat v}$, so weights with large gradients would hardly be regularised.
# - gpt2np's defaults (`TrainSettings`): $\beta_1 = 0.9$, $\beta_2 = 0.95$, $\varepsilon = 10^{-8}$,
#   $\lambda = 0.1$, and decay only on tensors of two or more dimensions.
#
# Three steps by hand on a small tree, against `optim.AdamW` (which updates the arrays in place):

# %%
gen = np.random.default_rng(1)
start = {"w": gen.normal(size=(3, 4)), "b": gen.normal(size=4)}       # a 2-D weight (decayed) and a bias (not)
lr, (b1, b2), eps, wd = 0.1, (0.9, 0.95), 1e-8, 0.1
params = copy.deepcopy(start)
opt = optim.AdamW(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
print(opt, "\ndecayed:", opt.decay)
theta = copy.deepcopy(start)
m = {k: np.zeros_like(p) for k, p in theta.items()}
v = {k: np.zeros_like(p) for k, p in theta.items()}
for t in (1, 2, 3):
    g = {k: gen.normal(size=p.shape) * (10.0 if k == "b" else 0.01) for k, p in theta.items()}  # scales 1000x apart
    for k in theta:
        m[k] = b1 * m[k] + (1 - b1) * g[k]
        v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
        m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
        decay = wd if theta[k].ndim >= 2 else 0.0
        new = theta[k] - lr * decay * theta[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
        if t == 1:   # the first step: a move of lr per weight (plus the decay), for both gradient scales
            np.testing.assert_allclose(np.abs(new - theta[k] + lr * decay * theta[k]), lr, rtol=1e-3)
        theta[k] = new
    opt.step(g)
    for k in theta:
        np.testing.assert_allclose(params[k], theta[k], rtol=1e-12, atol=1e-15)
print("3 AdamW steps by hand == optim.AdamW; step 1 moved every weight by lr =", lr)

# %% [markdown]
# Why the bias correction matters: with a constant gradient, the corrected step is exactly $\eta$
# from step 1, while the uncorrected $m_t/\sqrt{v_t}$ would start at
# $(1-\beta_1)/\sqrt{1-\beta_2} = 0.45$ of it and drift for tens of steps (above 1 for a while,
# since $v$'s average forgets more slowly than $m$'s). And which of the model's tensors are decayed:

# %%
p1 = {"w": np.zeros(1)}
opt1 = optim.AdamW(p1, lr=1e-3, weight_decay=0.0)
moves = []
for t in range(1, 61):
    before = p1["w"].copy()
    opt1.step({"w": np.array([0.3])})
    moves.append(float((before - p1["w"])[0]) / 1e-3)
ts = np.arange(1, 61)
uncorrected = (1 - b1**ts) / np.sqrt(1 - b2**ts)       # m_t / √v_t for a constant g: g(1-β1^t) / |g|√(1-β2^t)
np.testing.assert_allclose(moves, 1.0, rtol=1e-6)
assert abs(uncorrected[0] - 0.447) < 1e-3 and uncorrected.max() > 1

decayed = {name: optim.decays_by_default(name, p) for name, p in flat_p.items()}
n_dec = sum(p.size for name, p in flat_p.items() if decayed[name])
print(f"decayed:     {sum(decayed.values())} tensors, {n_dec:,} weights (wte, wpe and every matrix w)")
print(f"not decayed: {len(decayed) - sum(decayed.values())} tensors, {model.num_params() - n_dec:,} weights"
      f" (biases b, layer norms' g and b), e.g. {[n for n, d in decayed.items() if not d][:3]}")

fig, ax = plt.subplots(figsize=(6.4, 2.4))
ax.plot(ts, moves, "o", ms=3, label="optim.AdamW (bias-corrected): |Δθ| / η")
ax.plot(ts, uncorrected, label="without bias correction: m_t / √v_t")
ax.set_xlabel("step t (constant gradient)"); ax.set_ylabel("step size / η"); ax.set_ylim(0, 1.2)
ax.legend(); ax.grid(alpha=0.3)
fig.tight_layout()

# %% [markdown]
# ## 7. The learning-rate schedule: warm-up, then cosine decay
#
# The learning rate $\eta$ of step $s$ (0-based), with $W$ warm-up steps and $S$ steps in the run:
#
# $$\eta(s) = \eta_{\max}\,\frac{s+1}{W} \quad (s < W), \qquad
# \eta(s) = \eta_{\min} + \tfrac12(\eta_{\max}-\eta_{\min})\Big(1+\cos\frac{\pi\,(s-W)}{S-W}\Big) \quad (W \le s \le S)$$
#
# The **warm-up** avoids large steps while the weights are random and Adam's $v$ has seen few
# gradients; the **cosine decay** makes the steps smaller towards the end, so the weights settle
# instead of jumping around with the noise of each batch. Below with the bundled model's own settings
# (from its card), by hand against `optim.cosine_lr` and `TrainSettings.lr_at`. It was trained in
# stages (section 9), each `gpt2np train` run with a schedule of its own: its whole schedule is theirs
# one after another.

# %%
stages = card["training"].get("stages") or [card["training"]]   # a run in one stage is its own record
schedule = []
for i, stage in enumerate(stages, 1):
    st = stage["settings"]
    S, W, lr_max, lr_min = st["steps"], st["warmup"], st["lr"], st["min_lr"]
    settings = training.TrainSettings(steps=S, warmup=W, lr=lr_max, min_lr=lr_min)
    print(f"stage {i}: S = {S}, W = {W}, lr_max = {lr_max}, lr_min = {lr_min}")
    for s in (0, W // 2, W - 1, W, (W + S) // 2, S - 1, S):
        by_hand = lr_max * (s + 1) / W if s < W else lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * (s - W) / (S - W)))
        lib = optim.cosine_lr(s, max_lr=lr_max, warmup_steps=W, total_steps=S, min_lr=lr_min)
        np.testing.assert_allclose(lib, by_hand, rtol=1e-12)
        assert settings.lr_at(s) == lib
        print(f"  step {s:4d}: lr = {lib:.6f}")
    schedule += [optim.cosine_lr(s, max_lr=lr_max, warmup_steps=W, total_steps=S, min_lr=lr_min) for s in range(S)]
schedule = np.array(schedule)
starts = np.cumsum([0] + [stage["settings"]["steps"] for stage in stages[:-1]])   # where each stage begins

fig, ax = plt.subplots(figsize=(6.4, 2.4))
ax.plot(schedule)
for i, (start, stage) in enumerate(zip(starts, stages), 1):
    ax.axvline(start + stage["settings"]["warmup"], color="gray", ls=":",
               label="ends of warm-up" if i == 1 else None)
ax.set_xlabel("step"); ax.set_ylabel("learning rate"); ax.set_title("optim.cosine_lr, the bundled model's runs")
ax.legend(); ax.grid(alpha=0.3)
fig.tight_layout()

# %% [markdown]
# ## 8. Training a tiny model from scratch, here
#
# Now the loop itself, written from the pieces above, on a new model: `GPT2.random` with 2 layers
# 64 wide and a context of 64 tokens, GPT-2's initialisation, so it starts at the uniform guess.
#
# One change makes it fast enough to train inside a notebook: its vocabulary. With GPT-2's 50,257
# tokens, nearly all of a model this small is the embedding table $V \times d$, and nearly all its
# compute is the output layer, 50,257 logits at every position (timed below). Our text uses only a
# few hundred distinct tokens, so the tiny model gets a vocabulary of just those: each GPT-2 id is
# renumbered to its rank among them (`np.searchsorted`), and numbered back to decode. Its uniform
# guess is then $\ln V'$ for that smaller $V'$.

# %%
vocab = np.unique(np.concatenate([train_ids, val_ids]))      # the GPT-2 ids the text uses, sorted
train_c, val_c = np.searchsorted(vocab, train_ids), np.searchsorted(vocab, val_ids)   # renumbered 0 .. V'-1
np.testing.assert_array_equal(vocab[train_c], train_ids)      # and back
V_small = len(vocab)
small_config = Config(n_vocab=V_small, n_ctx=64, n_embd=64, n_head=4, n_layer=2)
for what, m_, w_ in ((f"GPT-2's {V:,} tokens", GPT2.random(tiny_config, seed=0), windows),
                     (f"the text's {V_small} tokens", GPT2.random(small_config, seed=0), np.searchsorted(vocab, windows))):
    t0 = time.perf_counter()
    training.window_loss_and_grads(m_, w_)
    print(f"vocabulary of {what:18}: {m_.num_params():>9,} weights ({m_.params['wte'].size / m_.num_params():.0%} in wte);"
          f" loss and gradients of one batch of {B} x {T} in {(time.perf_counter() - t0) * 1e3:4.0f} ms")


def tiny_continuation(model, prompt, n=24):
    """The tiny model's greedy continuation of `prompt`, through the renumbering in and out."""
    ids = np.array(tok.encode(prompt))
    assert np.isin(ids, vocab).all(), "a prompt token the tiny model does not know"
    return tok.decode(vocab[model.generate_ids(np.searchsorted(vocab, ids), n, stop_ids=[])].tolist())

# %% [markdown]
# The training loop, and what it records. `one_step` is a step of the loop at the top of the notebook;
# every 25 steps the loss is also measured on the validation tokens, which the model never trains on.
# The dashed line of the plot is the loss of the *unigram* model of the training tokens themselves,
# $-\sum_j p_j \ln p_j$ with $p_j$ each token's frequency: the best that any model ignoring the
# context can do on them. Below that line, a model is using the tokens before.

# %%
def one_step(model, opt, rng, tokens, settings, step):
    """One step of the training loop from gpt2np's pieces; returns (loss, gradient norm, lr)."""
    window = settings.seq_len + 1
    starts = training.draw_starts(rng, len(tokens), window, settings.batch_size)
    loss, grads = training.window_loss_and_grads(model, training.gather_windows(tokens, starts, window))
    norm = optim.clip_grad_norm(grads, settings.clip)         # the norm before clipping
    lr = settings.lr_at(step)                                  # optim.cosine_lr with the run's settings
    opt.step(grads, lr=lr)
    return loss, norm, lr


tiny = GPT2.random(small_config, seed=0)
tiny_settings = training.TrainSettings(steps=600, batch_size=B, seq_len=T, lr=3e-3, min_lr=3e-4, warmup=60,
                                       weight_decay=0.1, clip=1.0, seed=0)
counts = np.bincount(train_c)
freq = counts[counts > 0] / len(train_c)
H_unigram = float(-(freq * np.log(freq)).sum())
val_windows = training.gather_windows(val_c, training.val_starts(len(val_c), T + 1, 8), T + 1)
prompts = ["Marianne was", "Now this is"]
samples_before = [tiny_continuation(tiny, p) for p in prompts]

opt = optim.AdamW(tiny.params, lr=tiny_settings.lr, betas=tiny_settings.betas, eps=tiny_settings.eps,
                  weight_decay=tiny_settings.weight_decay)
rng = np.random.default_rng(tiny_settings.seed)
log = {"loss": [], "norm": [], "lr": [], "val_step": [0], "val": [training.evaluate(tiny, val_windows)]}
t0 = time.perf_counter()
for step in range(tiny_settings.steps):
    loss, norm, lr = one_step(tiny, opt, rng, train_c, tiny_settings, step)
    for key, value in zip(("loss", "norm", "lr"), (loss, norm, lr)):
        log[key].append(value)
    if (step + 1) % 25 == 0:
        log["val_step"].append(step + 1)
        log["val"].append(training.evaluate(tiny, val_windows))
seconds = time.perf_counter() - t0
n_seen = tiny_settings.steps * B * T
train_end = float(np.mean(log["loss"][-10:]))
best = int(np.argmin(log["val"]))
print(f"{tiny_settings.steps} steps in {seconds:.1f} s: {n_seen:,} predictions,"
      f" {n_seen / len(train_c):.0f} passes over the {len(train_c):,} training tokens")
print(f"train loss: {log['loss'][0]:.3f} at step 1 (ln V' = {math.log(V_small):.3f}) -> {train_end:.3f}"
      f" (mean of the last 10 steps); unigram of the training tokens: {H_unigram:.3f}")
print(f"val loss:   {log['val'][0]:.3f} before -> {log['val'][-1]:.3f} at the end;"
      f" lowest {log['val'][best]:.3f} at step {log['val_step'][best]}")
print(f"gradient norm above clip = 1 (so clipped) in {np.mean(np.array(log['norm']) > 1):.0%} of the steps")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
steps_axis = np.arange(1, tiny_settings.steps + 1)
axes[0].plot(steps_axis[::10] + 4.5, np.reshape(log["loss"], (-1, 10)).mean(1), lw=1, label="train (mean of 10 steps)")
axes[0].plot(log["val_step"], log["val"], "o-", ms=3, label="validation")
axes[0].axhline(math.log(V_small), color="k", ls=":", label="uniform guess ln V'")
axes[0].axhline(H_unigram, color="gray", ls="--", label="unigram of the training tokens")
axes[0].set_xlabel("step"); axes[0].set_ylabel("loss (nats/token)"); axes[0].legend(fontsize=7, loc="center right")
axes[0].grid(alpha=0.3)
axes[1].plot(steps_axis[::10] + 4.5, np.reshape(log["norm"], (-1, 10)).mean(1), label="‖g‖ before clipping (mean of 10 steps)")
axes[1].axhline(tiny_settings.clip, color="tab:red", ls="--", label="clip = 1")
axes[1].set_xlabel("step"); axes[1].set_ylabel("gradient norm"); axes[1].legend(fontsize=7, loc="lower left")
axes[1].grid(alpha=0.3)
axes[0].set_title("the tiny model's loss"); axes[1].set_title("its gradient norm")
fig.tight_layout()

# %% [markdown]
# Read the two curves together. The training loss falls through the unigram line and on towards 0:
# the model learns its 1,300 tokens by heart, and its continuations are stitched together from
# pieces of the text (measured below: how many of their 3-token sequences occur in it).
# The validation loss falls only at first, then rises: from its lowest point on, each step fits the
# training text better and unseen text worse. That is **overfitting**; a run can keep the weights
# of its best validation loss (*early stopping*), but the cure is more text (section 9).

# %%
train_triples = set(zip(train_ids[:-2].tolist(), train_ids[1:-1].tolist(), train_ids[2:].tolist()))

def share_quoted(text):
    """The share of the token triples of `text` that occur in the training tokens."""
    ids = tok.encode(text)
    return np.mean([t in train_triples for t in zip(ids, ids[1:], ids[2:])])

quoted = []
for prompt, before in zip(prompts, samples_before):
    after = tiny_continuation(tiny, prompt)
    quoted.append((share_quoted(prompt + before), share_quoted(prompt + after)))
    print(f"{prompt!r}\n  before: {before!r}\n  after:  {after!r}")
    print(f"  share of its 3-token sequences found in the training text: before {quoted[-1][0]:.0%}, after {quoted[-1][1]:.0%}")
assert train_end < 0.5 < H_unigram and best < len(log["val"]) // 2 and log["val"][-1] > log["val"][best] + 0.5
assert all(a > 0.6 > b for b, a in quoted)

# %% [markdown]
# `one_step` is exactly a step of gpt2np's own loop `training.train`: the same windows from the same
# seeded generator, the same clipping, AdamW and schedule. Three steps of each from the same start
# give the same losses and the same weights, bit for bit:

# %%
three = training.TrainSettings(steps=3, batch_size=B, seq_len=T, lr=3e-3, warmup=1, seed=7)
mine, theirs = GPT2.random(small_config, seed=1), GPT2.random(small_config, seed=1)
opt_mine = optim.AdamW(mine.params, lr=three.lr, betas=three.betas, eps=three.eps, weight_decay=three.weight_decay)
rng_mine = np.random.default_rng(three.seed)
losses_mine = [one_step(mine, opt_mine, rng_mine, train_c, three, s)[0] for s in range(3)]
theirs, history = training.train(theirs, train_c, three, progress=False)   # one array: no validation split
assert [row["train_loss"] for row in history] == losses_mine
for name, p in flatten(mine.params).items():
    np.testing.assert_array_equal(p, flatten(theirs.params)[name], err_msg=name)
print("losses of both:", np.round(losses_mine, 4))

# %% [markdown]
# ## 9. The bundled model's real training curve
#
# The bundled model `gpt2np-mini` was trained with this same loop by `gpt2np train` (the commands are
# in its card) on Austen's six novels, a public-domain Bible, six other novels and War and Peace, in
# two stages: from GPT-2's initialisation, then a **warm restart**, a second run started from the
# first one's weights, with fresh AdamW moments, other batches, and a second warm-up and cosine at a
# third of the first's peak learning rate. Its curve ships beside it as `training.csv`, the stages one
# after another: one row per step (`step, lr, train_loss, val_loss, tokens_per_s, elapsed_s`), the
# validation loss every 250 steps, and each stage's step 0 holding the validation loss before it.

# %%
curve = np.genfromtxt(bundled.folder() / "training.csv", delimiter=",", names=True)   # empty cells -> nan
trained = ~np.isnan(curve["lr"])                  # the rows of steps (not a stage's step-0 evaluation)
steps_done = curve["step"][trained].astype(int)
assert np.array_equal(steps_done, np.arange(1, len(schedule) + 1))
np.testing.assert_allclose(curve["lr"][trained], schedule[steps_done - 1], rtol=1e-12)  # step k ran at lr(k - 1)
val_rows = ~np.isnan(curve["val_loss"])
tr_card = card["training"]
last100 = float(curve["train_loss"][-100:].mean())
print(f"{int(curve['step'][-1])} steps of {tr_card['batch_size']} windows x {tr_card['seq_len']} tokens ="
      f" {tr_card['tokens_trained']:,} predictions, {tr_card['tokens_trained'] / card['corpus']['train_tokens']:.1f}"
      f" passes over the {card['corpus']['train_tokens']:,} training tokens, in {curve['elapsed_s'][-1] / 60:.0f} min"
      f" at {np.median(curve['tokens_per_s'][trained]):,.0f} tokens/s")
print(f"validation loss before training: {curve['val_loss'][0]:.4f} (ln V = {math.log(V):.4f})")
print(f"train loss, mean of the last 100 steps: {last100:.4f};  validation loss at the end: {curve['val_loss'][-1]:.4f}")
print(f"the card's losses on held-out text: its held-out chapters {card['losses']['heldout']['loss']:.4f},"
      f" a novel it never saw ({card['losses']['outside']['text'].split(',')[0]}) {card['losses']['outside']['loss']:.4f},"
      f" unigram baseline {card['corpus']['unigram_baseline']['heldout']:.4f}")
for i, stage in enumerate(stages, 1):
    print(f"the command of stage {i}:", stage["command"])
assert round(last100, 4) == tr_card["train_loss_last_100_steps"] and round(curve["val_loss"][-1], 4) == tr_card["val_loss"]
assert tr_card["tokens_trained"] == int(curve["step"][-1]) * tr_card["batch_size"] * tr_card["seq_len"]
assert 4 < tr_card["tokens_trained"] / card["corpus"]["train_tokens"] < 5 and round(card["parameters"] / 1e6, 1) == 7.7

# %%
smooth = np.convolve(curve["train_loss"][trained], np.ones(100) / 100, mode="valid")   # smooth[i]: steps i+1 .. i+100
fig, axes = plt.subplots(1, 2, figsize=(9, 3), gridspec_kw={"width_ratios": [2, 1]})
axes[0].plot(steps_done[99::10], smooth[::10], color="tab:blue", label="train (mean of the last 100 steps)")
axes[0].plot(curve["step"][val_rows], curve["val_loss"][val_rows], "o-", color="tab:orange", ms=3, label="validation")
axes[0].axhline(card["corpus"]["unigram_baseline"]["heldout"], color="gray", ls="--", label="unigram baseline")
axes[0].set_ylim(3.5, 11); axes[0].set_xlabel("step"); axes[0].set_ylabel("loss (nats/token)")
axes[0].legend(fontsize=7); axes[0].grid(alpha=0.3); axes[0].set_title("gpt2np-mini: training.csv")
axes[1].plot(steps_done, curve["lr"][trained], color="tab:green"); axes[1].set_xlabel("step")
axes[1].set_title("learning rate"); axes[1].grid(alpha=0.3)
fig.tight_layout()

# %% [markdown]
# Most of the fall happens in the first few hundred steps (past the unigram baseline early), then the
# loss creeps down for thousands of steps while the learning rate decays. At the warm restart the
# higher learning rate first costs (the next validation loss is higher than the one before it), and
# the second decay then takes the loss below where the first stage ended. Unlike the tiny model's,
# the validation loss follows the training loss down: 3.4 M tokens, each seen about five times,
# leave a 7.7 M-weight model far less room to memorise, and the gap between the two curves stays
# small (measured below).

# %%
start_loss, end_loss = curve["val_loss"][0], smooth[-1]
at_500 = curve["train_loss"][451:501].mean()                   # steps 451-500
share = (start_loss - at_500) / (start_loss - end_loss)
gap = curve["val_loss"][-1] - last100
print(f"share of the whole fall done by step 500: {share:.0%};  validation - train at the end: {gap:.3f} nats"
      f" (the tiny model's: {log['val'][-1] - train_end:.3f})")
assert share > 0.8 and 0 < gap < 0.5 and at_500 < card["corpus"]["unigram_baseline"]["heldout"]
for start in starts[1:]:                       # each restart: worse at its first evaluation, better at the end
    val = {int(k): v for k, v in zip(curve["step"][val_rows], curve["val_loss"][val_rows])}
    before, after = val[start], min((k for k in val if k > start), default=None)
    print(f"validation at the restart (step {start}): {before:.4f}; at step {after}: {val[after]:.4f};"
          f" at the end: {curve['val_loss'][-1]:.4f}")
    assert val[after] > before > curve["val_loss"][-1]

# %% [markdown]
# ## 10. Fine-tuning the bundled model on a text of another style
#
# Fine-tuning is the same loop started from trained weights instead of random ones, on new text, with
# few steps. The new text is gpt2np's own documentation, `docs/architecture.md` (its prose paragraphs;
# code blocks, tables and headings dropped): technical English full of module and function names,
# nothing like the novels or the Bible. Its first 85% of tokens are for training, the last 15% held out.
#
# `GPT2.from_pretrained(gpt2np.BUNDLED_MODEL)` loads a fresh copy whose weights are writable arrays of
# their own (`training.writable` returns such a model unchanged), so `training.train` trains it in
# place and the setup's `model` stays as it was. We measure the loss on both parts of the new text and
# on the old text (the held-out sample of section 1) before and after.

# %%
paragraphs, in_code = [], False
for block in (REPO / "docs" / "architecture.md").read_text(encoding="utf-8").split("\n\n"):
    block = block.strip()
    if block.startswith("```"):
        in_code = not in_code if block.count("```") == 1 else in_code
    elif block and not in_code and not block.startswith(("#", "|")):
        paragraphs.append(" ".join(block.split()))
doc_ids = np.array(tok.encode("\n\n".join(paragraphs)))
split = int(0.85 * len(doc_ids))
ft_train, ft_val = doc_ids[:split], doc_ids[split:]
old_ids = np.array(tok.encode(sample_text))
print(f"{len(paragraphs)} paragraphs, {len(doc_ids):,} tokens: {len(ft_train):,} to train on, {len(ft_val):,} held out")
print("its start:", repr(tok.decode(doc_ids[:40].tolist())))

ft = GPT2.from_pretrained(gpt2np.BUNDLED_MODEL)
assert training.writable(ft) is ft and ft is not model
texts = {"new text, trained on": ft_train, "new text, held out": ft_val, "old text (held-out sample)": old_ids}
losses_before = {k: scoring.perplexity(ft, ids).nll for k, ids in texts.items()}
prompt = "The model"
sample = dict(max_new_tokens=30, temperature=0.8, top_k=40, seed=0)    # the card's sampling settings
continuation_before = gpt2np.generate_text(ft, tok, prompt, **sample)
wte_rows = model.params["wte"][:1000].copy()

# %%
ft_settings = training.TrainSettings(steps=40, batch_size=4, seq_len=128, lr=1e-3, min_lr=1e-4, warmup=4,
                                     eval_every=10, eval_windows=4, seed=0)
t0 = time.perf_counter()
ft, ft_history = training.train(ft, (ft_train, ft_val), ft_settings, progress=False, log=print)
ft_seconds = time.perf_counter() - t0
losses_after = {k: scoring.perplexity(ft, ids).nll for k, ids in texts.items()}
print(f"{ft_settings.steps} steps of {ft_settings.batch_size} x {ft_settings.seq_len} tokens in {ft_seconds:.1f} s")
print(f"{'loss (nats/token)':28} {'before':>7} {'after':>7}")
for k in texts:
    print(f"{k:28} {losses_before[k]:7.3f} {losses_after[k]:7.3f}")
continuation_after = gpt2np.generate_text(ft, tok, prompt, **sample)
print(f"\n{prompt!r} (sampled: temperature 0.8, top-k 40, seed 0)\n  before: {continuation_before!r}"
      f"\n  after:  {continuation_after!r}")
doc_vocab = set(ft_train.tolist()) - set(old_ids.tolist())     # tokens of the new text that the old one lacks
share_doc = [np.mean([t in doc_vocab for t in tok.encode(c)]) for c in (continuation_before, continuation_after)]
print(f"share of the continuation's tokens that occur in the new text but not in the old: "
      f"before {share_doc[0]:.0%}, after {share_doc[1]:.0%}")
np.testing.assert_array_equal(model.params["wte"][:1000], wte_rows)       # the setup's model is untouched
new = list(texts)[:2]
assert all(losses_before[k] > math.log(V) - 2 and losses_after[k] < losses_before[k] - 2 for k in new)
assert losses_after["old text (held-out sample)"] > losses_before["old text (held-out sample)"] and share_doc[1] > share_doc[0]

# %%
rows = [r for r in ft_history if r["val_loss"] is not None]
fig, ax = plt.subplots(figsize=(6.4, 2.8))
ax.plot([r["step"] for r in ft_history[1:]], [r["train_loss"] for r in ft_history[1:]], lw=1, label="train (each step's batch)")
ax.plot([r["step"] for r in rows], [r["val_loss"] for r in rows], "o-", label="held-out part of the new text")
ax.axhline(math.log(V), color="k", ls=":", label="uniform guess ln V")
ax.set_xlabel("fine-tuning step"); ax.set_ylabel("loss (nats/token)"); ax.legend(fontsize=7); ax.grid(alpha=0.3)
ax.set_title("fine-tuning gpt2np-mini on docs/architecture.md")
fig.tight_layout()

# %% [markdown]
# Before fine-tuning, the bundled model's loss on this text is within two nats of a uniform guess
# (printed above). Backticks and names like `layers.py` are rare or absent in novels and scripture, and its
# training raised the probability of the tokens it saw at the expense of all others. A few dozen steps on
# about a thousand tokens lower the loss on both parts of the new text by several nats, the held-out
# part included, so it is not only memorising; and the continuation of the same prompt turns to the
# documentation's words and symbols (the printed share), though it is far from readable
# documentation, which would take much more text and training. The price is on the old text: its
# loss rises. The model has moved towards the new text and away from the old (*forgetting*); the
# table measures how far.

# %%
tmp.cleanup()   # the token files of section 1
