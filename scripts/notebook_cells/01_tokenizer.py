# %% [markdown]
# # 01 · The tokenizer: byte-level BPE
#
# GPT-2 reads integers, not text. Its tokenizer turns any string into ids from a vocabulary of
# $V = 50257$ tokens, and back, without ever failing on an unknown character:
#
# $$\text{text} \xrightarrow{\text{UTF-8}} \text{bytes} \xrightarrow{\text{pre-tokenize}} \text{pieces}
# \xrightarrow{\text{BPE merges}} \text{tokens} \xrightarrow{\text{vocabulary}} \text{ids}$$
#
# This notebook goes through every arrow by hand and checks each result against
# `gpt2np.Tokenizer` (which is byte-exact with OpenAI's encoder and tiktoken). At the end, the trained
# model the setup cell loaded shows what it makes of the ids: how it predicts a word that the tokenizer
# has cut into pieces.

# %%
SETUP

# %%
import pathlib
import regex
from gpt2np import tokenizer as tk

tok = Tokenizer.gpt2()
print(tok)
text = "Hello wörld! I've got 1234 apples 🦙"
ids = tok.encode(text)
print(ids)
print([tok.decode([i]) for i in ids])

# %% [markdown]
# ## 1. Text is bytes
#
# Every string is first encoded as UTF-8: 1 byte for ASCII characters, 2 for "ö", 4 for an emoji.
# Working on the 256 possible byte values means there is no "unknown character": any text at all
# is a sequence of bytes.

# %%
data = text.encode("utf-8")
print(f"{len(text)} characters -> {len(data)} bytes -> {len(ids)} tokens")
for ch in "Hö🦙":
    print(f"  {ch!r}: U+{ord(ch):04X} -> bytes {ch.encode('utf-8').hex(' ')}")
assert tok.decode_bytes(ids) == data

# %% [markdown]
# ## 2. Printable stand-ins for bytes: `bytes_to_unicode`
#
# The vocabulary files (`encoder.json`, `vocab.bpe`) are text, so each byte gets a visible character.
# The 188 printable bytes `!`…`~`, `¡`…`¬`, `®`…`ÿ` stand for themselves; the other 68 (control
# characters, space, `0x7F`–`0xA0`, `0xAD`) are moved, in order, to $U{+}0100 + n$:
#
# $$\mathrm{standin}(b) = \begin{cases} \mathrm{chr}(b) & b \text{ printable} \\ \mathrm{chr}(256 + n_b) & \text{otherwise, } n_b = \#\{\text{non-printable } b' < b\} \end{cases}$$
#
# So a space (`0x20`) is `Ġ` and a newline (`0x0A`) is `Ċ`: the token for " the" is written `Ġthe`.

# %%
printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
others = [b for b in range(256) if b not in printable]
by_hand = {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(others)}
assert by_hand == tk.bytes_to_unicode()
print(len(printable), "printable bytes keep their character;", len(others), "are moved")
print("space ->", by_hand[0x20], "  newline ->", by_hand[0x0A], "  tab ->", by_hand[0x09], "  0xF0 ->", by_hand[0xF0])

from matplotlib.colors import ListedColormap
fig, ax = plt.subplots(figsize=(5.6, 5.6))
grid = np.array([b in printable for b in range(256)]).reshape(16, 16)
ax.imshow(grid, cmap=ListedColormap(["#d9d9d9", "#cfe6ff"]), vmin=0, vmax=1, interpolation="nearest")
for b in range(256):
    ax.text(b % 16, b // 16, by_hand[b], ha="center", va="center", fontsize=10)
ax.set_xticks(range(16), [f"{i:X}" for i in range(16)]); ax.set_yticks(range(16), [f"{i:X}_" for i in range(16)])
ax.set_title("byte 0xRC -> stand-in (blue: itself; grey: moved to U+0100 + n)")
fig.tight_layout()

# %% [markdown]
# ## 3. Pre-tokenizing: split into pieces first
#
# Before BPE, a regular expression cuts the text into pieces, and merges never cross a piece
# boundary. OpenAI's pattern, tried left to right at each position:
#
# | alternative | matches |
# |---|---|
# | `'s\|'t\|'re\|'ve\|'m\|'ll\|'d` | English contractions |
# | ` ?\p{L}+` | a run of letters, with at most one leading space |
# | ` ?\p{N}+` | a run of digits, with at most one leading space |
# | ` ?[^\s\p{L}\p{N}]+` | a run of other symbols (punctuation, emoji), with at most one leading space |
# | `\s+(?!\S)` , `\s+` | whitespace; a run before a word leaves its last space to the word |
#
# So " world" (with its space) is one piece, and words, numbers and punctuation never merge together.

# %%
print(tk.OPENAI_PATTERN)
sample = "I've got 1234 apples!!  And   you're late...\n\nOK"
pieces = regex.findall(tk.OPENAI_PATTERN, sample)
print(pieces)
explained = tok.explain(sample)
assert pieces == [p.text for p in explained.pieces]

# %% [markdown]
# ## 4. BPE: merging pairs, most frequent first
#
# `vocab.bpe` lists 50000 merges, in the order they were learned from the training text (the most
# frequent pair first). Its line $r$ (counting from 0) gets rank $r$. To tokenize one piece:
#
# 1. start from its bytes (as stand-ins), one symbol each;
# 2. among all adjacent pairs $(a, b)$ whose joint $ab$ has a rank, join the one with the lowest
#    rank (the leftmost if tied);
# 3. repeat until no adjacent pair can be joined. Each remaining symbol is a token of `encoder.json`.
#
# Here is that loop, written plainly (quadratic, fine for one word), next to the library's
# `explain`, which records every merge of its much faster version.

# %%
assets = pathlib.Path(gpt2np.__file__).parent / "assets"
merges = assets.joinpath("vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]   # skip "#version"
merges = [m for m in merges if m]
rank = {"".join(m.split(" ")): r for r, m in enumerate(merges)}
print(len(rank), "merges; the first ones:", merges[:6])

word = " unbelievably"
symbols = list(tk.to_stand_ins(word.encode("utf-8")))   # ['Ġ', 'u', 'n', ...]
steps = []
while True:
    pairs = [(rank.get(symbols[i] + symbols[i + 1]), i) for i in range(len(symbols) - 1)]
    pairs = [(r, i) for r, i in pairs if r is not None]
    if not pairs:
        break
    r, i = min(pairs)                                     # lowest rank, then leftmost
    steps.append(((symbols[i], symbols[i + 1]), r))
    symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    print(f"rank {r:5d}: {' '.join(symbols)}")

(piece,) = tok.explain(word).pieces
assert steps == [(m.pair, m.rank) for m in piece.merges]
assert tuple(symbols) == piece.tokens
print("tokens:", symbols, "-> ids", list(piece.ids), "== tok.encode:", tok.encode(word))
assert list(piece.ids) == tok.encode(word)

# %% [markdown]
# The library's `explain` gives the same walk-through for a whole text, piece by piece:

# %%
print(tok.explain("Tokenizers split text, bytes and all: 🦙"))

# %% [markdown]
# How long are the tokens? Early merges make short, frequent tokens; late ones long, rare words.

# %%
lengths = np.array([len(tok.token_bytes(i)) for i in range(tok.n_vocab - 1)])   # without <|endoftext|>
fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
axes[0].hist(lengths, bins=np.arange(1, 20) - 0.5)
axes[0].set_xlabel("bytes per token"); axes[0].set_ylabel("tokens"); axes[0].set_title("token lengths")
r_len = lengths[256:]                                     # ids 256.. were made by merges, in rank order
axes[1].plot(np.arange(len(r_len)), np.convolve(r_len, np.ones(500) / 500, mode="same"))
axes[1].set_xlabel("merge rank"); axes[1].set_ylabel("mean bytes (window of 500)"); axes[1].set_title("later merges, longer tokens")
fig.tight_layout()
english = ("The tokenizer of GPT-2 was trained on English web text, so common English words are single "
           "tokens, and a typical sentence needs about one token for every four or five characters.")
print(f"mean token length in the vocabulary: {lengths.mean():.1f} bytes; "
      f"on this English sentence: {len(english.encode()) / len(tok.encode(english)):.1f} bytes per token")

# %% [markdown]
# ## 5. Special tokens
#
# Id 50256 is `<|endoftext|>`, the separator between documents in GPT-2's training data. It is not
# made by BPE: text containing the *characters* `<|endoftext|>` is either the special token (when
# allowed), plain text, or an error (the default, as in tiktoken, so that user text cannot inject
# a control token by accident).

# %%
s = "first document<|endoftext|>second"
print("allowed_special='all':", tok.encode(s, allowed_special="all"))
print("encode_ordinary:      ", tok.encode_ordinary(s))
try:
    tok.encode(s)
    raise AssertionError("special token text was accepted by default")
except ValueError as err:
    print("default encode:        ValueError:", str(err)[:90], "...")
assert tok.encode(s, allowed_special="all")[2] == tok.eot_token == 50256

# %% [markdown]
# ## 6. A character can span tokens, and how streaming copes
#
# BPE works on bytes, so a token boundary can fall *inside* a multi-byte character. The llama emoji
# 🦙 is 4 bytes, `f0 9f a6 99`, and GPT-2 spends three tokens on it (with its leading space):

# %%
ids = tok.encode("I love 🦙 llamas")
for i in ids:
    print(f"{i:6d}  {tok.token_bytes(i)!r:18}  decoded alone: {tok.decode([i])!r}")

# %% [markdown]
# Decoded alone, each of those tokens is invalid UTF-8 and shows as the replacement character
# `�`. A program that prints tokens as they are generated must hold the bytes of an incomplete
# character back until the rest arrives. `tok.incremental_decoder()` does this: `feed(id)` returns
# only complete characters, and `pending` shows what is held back.

# %%
decoder = tok.incremental_decoder()
pieces_out = []
for i in ids:
    out = decoder.feed(i)
    pieces_out.append(out)
    print(f"feed {i:6d} -> {out!r:10} pending bytes: {decoder.pending!r}")
pieces_out.append(decoder.flush())
naive = "".join(tok.decode([i]) for i in ids)
assert "".join(pieces_out) == tok.decode(ids) == "I love 🦙 llamas"
print("streamed:", "".join(pieces_out), "   token by token without holding back:", naive)

# %% [markdown]
# ## 7. Round trip
#
# Byte-level BPE is lossless: $\mathrm{decode}(\mathrm{encode}(s)) = s$ for every string, whitespace,
# accents, emoji and all.

# %%
for s in ["", "  leading spaces", "tabs\tand\nnewlines\r\n", "naïve café 北京 🦙🦙", "x" * 50, "<|endoftext|>"]:
    assert tok.decode(tok.encode_ordinary(s)) == s, s
print("round trip holds")

# %% [markdown]
# ## 8. What the model makes of the pieces
#
# The model reads the ids and, at every position $t$, gives a score (logit) $z_{t,i}$ to every id $i$ of the
# vocabulary; the softmax turns the scores into the probability of each possible next token:
#
# $$p(i_{t+1} = i \mid i_0, \dots, i_t) = \mathrm{softmax}(z_t)_i = \frac{e^{z_{t,i}}}{\sum_{j=0}^{V-1} e^{z_{t,j}}}$$
#
# The model never sees words, only tokens. A name the tokenizer cuts into two pieces is predicted in two
# steps, and by the chain rule its probability is the product
# $p(\text{" Dar"}) \cdot p(\text{"cy"} \mid \text{" Dar"})$. Below, every token of a sentence from the world
# of the bundled model's training text (Austen's novels) gets the probability the model gave it, one
# position earlier. A token *continues a word* when it starts with a letter and follows a token that
# ends with one ("cy" after " Dar"); every other token starts a new word or is punctuation.

# %%
sentence = ("Mr. Darcy and Mr. Bingley walked in the garden with Jane and Elizabeth, while Mrs. Bennet and "
            "Mrs. Dashwood watched them from the window.")
ids = tok.encode(sentence)
z = model(np.array(ids))                                      # [T, V] logits
prob = np.exp(z - z.max(-1, keepdims=True))                   # subtracting the max changes nothing but overflow
prob /= prob.sum(-1, keepdims=True)
np.testing.assert_allclose(prob, gpt2np.layers.softmax(z), rtol=1e-5, atol=1e-7)
p_next = prob[np.arange(len(ids) - 1), ids[1:]]               # p of token t+1 given tokens 0..t
pieces_txt = [tok.decode([i]) for i in ids]
cont = np.array([b[:1].isalpha() and a[-1:].isalpha() for a, b in zip(pieces_txt, pieces_txt[1:])])
for t in range(len(ids) - 1):
    mark = "   continues the word" if cont[t] else ""
    print(f"{pieces_txt[t + 1]!r:11} p = {p_next[t]:.3f}{mark}")
print(f"\nmean p of the tokens that continue a word: {p_next[cont].mean():.3f}; "
      f"of the others: {p_next[~cont].mean():.3f}")
print("the model's likeliest next tokens at the end:",
      [(tok.decode([j]), round(float(prob[-1, j]), 3)) for j in np.argsort(-prob[-1])[:5]])

fig, ax = plt.subplots(figsize=(9, 2.8))
ax.bar(range(len(p_next)), p_next, color=np.where(cont, "tab:orange", "tab:blue"))
ax.set_xticks(range(len(p_next)), pieces_txt[1:], rotation=90, fontsize=7)
ax.set_ylabel("p(token | before)"); ax.set_title("orange: the token continues a word the tokenizer split")
fig.tight_layout()
if not REAL:   # the bundled model: once a name has begun, its next piece is nearly certain
    assert cont.sum() >= 4 and p_next[cont].min() > 0.5 and p_next[cont].mean() > 4 * p_next[~cont].mean()
    assert all(p_next[t - 1] < min(0.4, p_next[t] / 2) for t in np.flatnonzero(cont))   # ... its first piece less so
    assert p_next[list(pieces_txt[1:]).index("cy")] > 0.85
    after_mr = [p_next[t] for t in range(len(ids) - 1) if pieces_txt[t] == " Mr" and pieces_txt[t + 1] == "."]
    assert after_mr and min(after_mr) > 0.5

# %% [markdown]
# For the bundled model the first piece of a name is a guess among several names (at best about one in
# three), but once it has been read the next piece is nearly certain: after " Dar" the model gives "cy"
# a probability close to 1. (Pieces of words are not the only near-certain tokens: so is the full stop after
# " Mr".) Whichever way the tokenizer cuts a word, the model can assign it the same total
# probability; cutting it into more pieces only costs more steps.
