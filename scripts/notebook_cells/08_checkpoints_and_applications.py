# %% [markdown]
# # 08 · Checkpoints and applications
#
# OpenAI released GPT-2's weights as a **TensorFlow checkpoint** ("tensor bundle", format V2).
# gpt2np reads it with NumPy alone. This notebook opens such a checkpoint byte by byte: the
# `.index` file (an SSTable of protobuf messages: the *tensor table*) and the `.data` file (the raw
# numbers), then loads and converts it. The second half uses the model the setup cell loaded for
# what GPT-2 was famous for, **zero-shot tasks** stated only by the shape of the prompt, and for what
# even a very small model does well: **scoring** texts.
#
# We use the tiny checkpoint in `tests/fixtures/tf_tiny/gpt2`, written by TensorFlow itself with
# GPT-2's tensor names (vocabulary 20, $d = 8$, 2 blocks). OpenAI's 124M checkpoint has exactly the
# same structure, only bigger. The fixtures are found beside the `gpt2np` package of this checkout,
# or else in the working folder or a folder above it, so the notebook runs from any folder.

# %%
SETUP

# %%
import json
import pathlib
import struct
import tempfile
from gpt2np import formats
from gpt2np.formats import protobuf, sstable

def find_fixtures():
    """The repository's tests/fixtures: beside the gpt2np package (a checkout, or `pip install -e`),
    else in the working folder or one above it."""
    here = pathlib.Path.cwd().resolve()
    for root in [pathlib.Path(gpt2np.__file__).resolve().parent.parent, here, *here.parents]:
        if (root / "tests" / "fixtures" / "tf_tiny").is_dir():
            return root / "tests" / "fixtures"
    raise FileNotFoundError("tests/fixtures not found: this notebook needs a checkout of the gpt2np repository")

FIXTURES = find_fixtures()
folder = FIXTURES / "tf_tiny" / "gpt2"
for f in sorted(folder.iterdir()):
    print(f"{f.name:32} {f.stat().st_size:6d} bytes")
print("\nhparams.json:", json.loads((folder / "hparams.json").read_text()))
index = (folder / "model.ckpt.index").read_bytes()
data = (folder / "model.ckpt.data-00000-of-00001").read_bytes()

# %% [markdown]
# | file | what it holds |
# |---|---|
# | `checkpoint` | a text file naming the prefix `model.ckpt` |
# | `hparams.json` | $V$, $n_{ctx}$, $d$, $H$, $L$ |
# | `model.ckpt.index` | the table of contents: for each tensor its dtype, shape, offset, size, checksum |
# | `model.ckpt.data-00000-of-00001` | the tensors' bytes, one after another, nothing else |
# | `model.ckpt.meta` | the TensorFlow graph (not needed to read the weights; absent here) |
#
# ## 1. The `.index` file is an SSTable
#
# LevelDB's "sorted string table": a sorted map from byte-string keys to byte-string values, stored as
#
# ```
# [data block][trailer] … [metaindex block][trailer] [index block][trailer] [footer: 48 bytes]
# ```
#
# Reading starts at the end. The **footer** holds two *block handles* (offset, size), each number a
# **varint** (LEB128: 7 bits per byte, least significant first, the top bit says "more follows"),
#
# $$v = \sum_{k} (b_k \bmod 128)\cdot 128^{k},$$
#
# zero padding up to byte 40, and the 8-byte magic number `57 fb 80 8b 24 75 47 db`.

# %%
footer = index[-48:]
print("footer:", footer.hex(" "))
assert footer[40:] == bytes.fromhex("57fb808b247547db"), "not an SSTable"

def leb128(buf, pos):
    """Decode one varint at buf[pos]; return (value, position after it)."""
    value, shift = 0, 0
    while True:
        b = buf[pos]; pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos

meta_off, pos = leb128(footer, 0); meta_size, pos = leb128(footer, pos)
index_off, pos = leb128(footer, pos); index_size, pos = leb128(footer, pos)
print(f"metaindex block: offset {meta_off}, size {meta_size};  index block: offset {index_off}, size {index_size}")
print(f"e.g. the bytes {footer[:2].hex(' ')} are {footer[0]} & 0x7f + {footer[1]} * 128 = {meta_off}")

# %% [markdown]
# ## 2. Blocks, trailers and CRC32C
#
# Every block is followed by a 5-byte **trailer**: a compression type (0 = none; TensorFlow has not
# compressed checkpoint indexes since version 1.2) and a checksum, the CRC32C of the block's bytes
# plus the type byte, stored *masked* (rotated right by 15 bits, plus a constant) so that a CRC of
# data that itself contains CRCs is not trivially related to them:
#
# $$\mathrm{mask}(c) = \big(\mathrm{rotr}_{15}(c) + \mathtt{A282EAD8}_{16}\big) \bmod 2^{32}$$
#
# `formats.crc32c` is the Castagnoli CRC (polynomial `0x1EDC6F41`, not zlib's CRC-32).

# %%
def check_block(off, size):
    contents, ctype = index[off:off + size], index[off + size]
    stored = struct.unpack("<I", index[off + size + 1:off + size + 5])[0]
    crc = formats.crc32c(index[off:off + size + 1])
    masked = ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF
    assert ctype == 0 and masked == stored == formats.mask(crc), "block checksum mismatch"
    return contents

assert formats.crc32c(b"123456789") == 0xE3069283          # the standard CRC32C check value
index_block = check_block(index_off, index_size)
print("index block:", index_block.hex(" "))
print("metaindex block (empty):", check_block(meta_off, meta_size).hex(" "))

# %% [markdown]
# ## 3. Entries: prefix-compressed keys
#
# A block is a list of entries, then an array of 4-byte *restart* offsets and their count. Sorted
# keys share long prefixes (`model/h0/attn/c_attn/b`, `model/h0/attn/c_attn/w`, …), so each entry
# stores only what differs from the previous key:
#
# ```
# shared (varint) · non_shared (varint) · value_length (varint) · key[shared:] · value
# ```
#
# $\text{key} = \text{previous key}[{:}\,\text{shared}] + \text{key delta}$. At a restart point
# `shared` is 0, so a reader can start there. The index block has one entry per data block (a key
# $\ge$ every key in the block, and the block's handle); small checkpoints have one data block.

# %%
def entries(block):
    n_restarts = struct.unpack("<I", block[-4:])[0]
    end = len(block) - 4 - 4 * n_restarts                   # where the restart array starts
    pos, prev = 0, b""
    while pos < end:
        shared, pos = leb128(block, pos)
        non_shared, pos = leb128(block, pos)
        vlen, pos = leb128(block, pos)
        key = prev[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, shared, block[pos:pos + vlen]
        pos += vlen
        prev = key

table = {}
for sep, _, handle in entries(index_block):
    off, p = leb128(handle, 0); size, _ = leb128(handle, p)
    print(f"index entry: separator {sep!r} -> data block at {off}, size {size}")
    for key, shared, value in entries(check_block(off, size)):
        table[key] = value
        if len(table) <= 6:
            print(f"   key {key!r:30} shares {shared:2d} bytes with the previous key; value {len(value)} bytes")

assert table == sstable.read_table(index)                   # the library's reader agrees
print(f"... {len(table)} entries in all")

# %% [markdown]
# ## 4. The values are protobuf messages
#
# Protocol buffers encode a message as fields, each a *tag* varint $=(\text{field number} \ll 3) \,|\,
# \text{wire type}$ followed by its value: wire type 0 is a varint, 2 is a length-prefixed byte
# string (strings, nested messages), 5 is a 4-byte fixed number. Fields at their default value
# (0) are left out.
#
# The key `""` holds the **BundleHeaderProto** (number of shards, endianness, version); every other
# key is a tensor name whose value is a **BundleEntryProto**:
#
# | field | name | wire type |
# |---|---|---|
# | 1 | `dtype` (1 = float32) | varint |
# | 2 | `shape` (a TensorShapeProto: repeated `dim { size }`) | length-delimited |
# | 3 | `shard_id` | varint |
# | 4 | `offset` in the data file | varint |
# | 5 | `size` in bytes | varint |
# | 6 | `crc32c` of the tensor's bytes (masked) | fixed32 |

# %%
def fields(msg):
    """(field number, wire type, value) of each field of a protobuf message."""
    pos = 0
    while pos < len(msg):
        tag, pos = leb128(msg, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = leb128(msg, pos)
        elif wire == 2:
            n, pos = leb128(msg, pos); value = msg[pos:pos + n]; pos += n
        elif wire == 5:
            value = struct.unpack("<I", msg[pos:pos + 4])[0]; pos += 4
        else:
            raise ValueError(f"wire type {wire} is not used in checkpoints")
        yield number, wire, value

print("header  ", table[b""].hex(" "), "->", list(fields(table[b""])))
name = b"model/h0/attn/c_attn/w"
print(f"{name.decode()}:", table[name].hex(" "))
entry = {}
for number, wire, value in fields(table[name]):
    print(f"   field {number} (wire type {wire}): {value.hex(' ') if isinstance(value, bytes) else value}")
    entry[number] = value
shape = tuple(list(fields(dim))[0][2] for _, _, dim in fields(entry[2]))
by_hand = dict(dtype=entry[1], shape=shape, offset=entry.get(4, 0), size=entry[5], crc32c=entry[6])
lib = protobuf.parse_bundle_entry(table[name], name.decode())
assert all(lib[k] == v for k, v in by_hand.items()), (lib, by_hand)
print("decoded:", by_hand)

# %% [markdown]
# ## 5. The tensor table, and the bytes behind it
#
# Decoding every entry gives the tensor table. A tensor is the `size` bytes at `offset` of the data
# file, little-endian float32 in row-major order: `np.frombuffer` reads it without a copy. Its CRC32C
# must match the entry's; the values must equal the arrays TensorFlow was given when it wrote the
# fixture (`gpt2_expected.npz`, made by `scripts/make_tf_fixture.py`).

# %%
expected = np.load(FIXTURES / "tf_tiny" / "gpt2_expected.npz")
library = formats.read_bundle(folder / "model.ckpt")
rows = []
print(f"{'name':28} {'dtype':>5} {'shape':>9} {'offset':>6} {'size':>5}")
for key, value in table.items():
    if key == b"":
        continue
    e = protobuf.parse_bundle_entry(value, key.decode())
    raw = data[e["offset"]:e["offset"] + e["size"]]
    assert formats.crc32c(raw) == formats.unmask(e["crc32c"]), f"{key}: CRC mismatch"
    arr = np.frombuffer(raw, dtype="<f4").reshape(e["shape"])
    np.testing.assert_array_equal(arr, expected[key.decode()])
    np.testing.assert_array_equal(arr, library[key.decode()])
    rows.append((key.decode(), e["offset"], e["size"]))
    print(f"{key.decode():28} {e['dtype']:5d} {str(e['shape']):>9} {e['offset']:6d} {e['size']:5d}")
assert sum(size for _, _, size in rows) == len(data)         # no header, no padding: just the tensors

# %%
fig, axes = plt.subplots(2, 1, figsize=(9, 2.6), layout="constrained")
regions = [("data block", 0, meta_off), ("metaindex", meta_off, meta_size + 5),
           ("index block", index_off, index_size + 5), ("footer", len(index) - 48, 48)]
for k, (label, start, width) in enumerate(regions):
    axes[0].barh(0, width, left=start, color=f"C{k}", label=label)
axes[0].set_xlim(0, len(index)); axes[0].set_yticks([]); axes[0].legend(ncol=4, fontsize=7, loc="upper left")
axes[0].set_title("model.ckpt.index (bytes)")
for k, (label, start, width) in enumerate(sorted(rows, key=lambda r: r[1])):
    axes[1].barh(0, width, left=start, color=f"C{k % 10}", edgecolor="white")
    if width > 600:
        axes[1].text(start + width / 2, 0, label.replace("model/", ""), ha="center", va="center", fontsize=7)
axes[1].set_xlim(0, len(data)); axes[1].set_yticks([]); axes[1].set_title("model.ckpt.data (bytes): one tensor after another");

# %% [markdown]
# The real 124M checkpoint has the same 148 tensors at full size. Its tensor table, summed by kind
# (float32, 4 bytes each) gives the size of OpenAI's data file, 497,759,232 bytes:

# %%
shapes = formats.expected_shapes(Config.preset("124M").to_dict())   # flat name -> shape
kinds = {}
for flat_name, shp in shapes.items():
    kind = flat_name.split(".", 2)[-1] if flat_name.startswith("blocks.") else flat_name
    kinds[kind] = kinds.get(kind, 0) + 4 * int(np.prod(shp))
total = sum(kinds.values())
print(f"{len(shapes)} tensors, {total:,} bytes")
assert total == 497_759_232
fig, ax = plt.subplots(figsize=(6, 3))
names_sorted = sorted(kinds, key=kinds.get)
ax.barh(names_sorted, [kinds[k] / 2**20 for k in names_sorted])
ax.set_xlabel("MiB in the 124M data file (all 12 blocks together)"); ax.tick_params(axis="y", labelsize=7)
fig.tight_layout()

# %% [markdown]
# ## 6. Loading and converting
#
# `formats.read_tf_checkpoint` does all of the above (checking every checksum, name and shape) and
# returns the hparams and the params tree; `GPT2.from_tf_checkpoint` wraps it. Reading a TF
# checkpoint needs the index walk and a CRC over every byte, so `GPT2.from_pretrained` converts it
# once to a plain `.npz` (NumPy's zip of arrays), which `GPT2.load` reads directly.

# %%
tiny = GPT2.from_tf_checkpoint(folder)
print(tiny)
# OpenAI stored each weight matrix as [1, n_in, n_out] (its conv1d); the params tree drops the 1
print("model/h1/mlp/c_fc/w", expected["model/h1/mlp/c_fc/w"].shape, "-> blocks[1].mlp.c_fc.w",
      tiny.params["blocks"][1]["mlp"]["c_fc"]["w"].shape)
np.testing.assert_array_equal(tiny.params["blocks"][1]["mlp"]["c_fc"]["w"], expected["model/h1/mlp/c_fc/w"][0])
with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "tiny.npz"
    tiny.save(path)
    again = GPT2.load(path)
    print(f"saved {path.name}: {path.stat().st_size} bytes")
ids = np.array([1, 5, 7, 3])
np.testing.assert_array_equal(again(ids), tiny(ids))
print("logits of the reloaded model are identical:", tiny(ids)[-1, :5])

# %% [markdown]
# Hugging Face's `model.safetensors` holds the same weights in a simpler format: 8 bytes giving the
# length $N$ of a JSON header (little-endian), the header (each tensor's dtype, shape and byte range),
# then the bytes. `GPT2.from_safetensors` reads it; here is the header by hand:

# %%
st_path = FIXTURES / "st_tiny" / "gpt2.safetensors"
st = st_path.read_bytes()
n = struct.unpack("<Q", st[:8])[0]
header = json.loads(st[8:8 + n])
name0 = next(k for k in header if k != "__metadata__")
print(f"header of {n} bytes, {len(header)} entries; e.g. {name0}: {header[name0]}")
start, stop = header[name0]["data_offsets"]
arr = np.frombuffer(st[8 + n + start:8 + n + stop], dtype="<f4").reshape(header[name0]["shape"])
np.testing.assert_array_equal(arr, formats.read_safetensors(st_path)[name0])

# %% [markdown]
# ## 7. Zero-shot tasks
#
# GPT-2 was trained only to predict the next token of web text, yet the paper ("Language Models are
# Unsupervised Multitask Learners", 2019) showed it can do tasks when the prompt looks like the
# places on the web where such tasks appear. `gpt2np.tasks` writes those prompts:
#
# | task | prompt | decoding |
# |---|---|---|
# | summarize | the article, then `TL;DR:` | top-$k$ sampling, $k=2$; keep the first 3 sentences |
# | translate | lines `english = french`, then `sentence =` | greedy, up to the newline |
# | answer | a document, example `Q:`/`A:` pairs, then `Q: question` / `A:` | greedy, up to the newline |
# | continue | the text itself | any sampling settings |
#
# Even OpenAI's 124M does these poorly (the paper's best results came from its 1558M model, trained
# on 40 GB of web text). The bundled model, if that is what the setup cell loaded, has 7.7 M
# parameters and was trained on 3.4 M tokens of Austen, the Bible, six novels and War and Peace (its
# model card's numbers are printed below): no news, no French, no `TL;DR:`, no `Q:`/`A:`. It cannot
# summarize, translate or answer, and the point of running the tasks on it is the mechanism, and
# seeing what a language model does with a prompt it cannot follow: it continues it with the text it
# knows.

# %%
from gpt2np import tasks

tok = Tokenizer.gpt2()
article = ("The city council voted on Tuesday to build a new bridge over the river. The bridge will "
           "connect the old town with the train station and is expected to open in three years. "
           "Supporters say it will cut traffic in the centre; critics worry about the cost.")
print(tasks.summary_prompt(article)[-60:], "\n---")
print(tasks.translation_prompt("The weather is nice today."), "\n---")
print(tasks.qa_prompt("When will the bridge open?", document=article))
if not REAL:
    from gpt2np import bundled
    card = bundled.read_card()                           # the model card shipped beside its weights
    print(f"\n{card['name']}: {card['parameters']:,} parameters, trained on a corpus of "
          f"{card['corpus']['train_tokens']:,} tokens")
    assert card["parameters"] == model.num_params() and card["corpus"]["train_tokens"] < 3_500_000

# %%
n_new = 60 if REAL else 24
summary = tasks.summarize(model, tok, article, max_new_tokens=n_new, seed=0)
# the same by hand: prompt, top-k sampling with k = 2, first three sentences
raw = gpt2np.generate_text(model, tok, tasks.summary_prompt(article), max_new_tokens=n_new, top_k=2,
                           temperature=1.0, seed=0)
assert summary == tasks.first_sentences(raw, 3)
french = tasks.translate(model, tok, "The weather is nice today.", max_new_tokens=20)
reply = tasks.answer(model, tok, "When will the bridge open?", document=article, max_new_tokens=12)
print("summarize:", repr(summary))
print("translate:", repr(french))
print("answer:   ", repr(reply))
print("continue: ", repr(tasks.continue_text(model, tok, "Elizabeth could not help", max_new_tokens=30,
                                             temperature=0.8, top_k=40, seed=0)))

def word_set(s):
    return {w.strip(".,;:!?\"'").lower() for w in s.split()} - {""}

topic = word_set(article) - word_set("the a of to and in on with is it will be over about say")
print(f"\nwords of the article (beyond the commonest) in the summary: {sorted(word_set(summary) & topic)}")
print(f"words of the French 'Il fait beau aujourd'hui' in the translation: "
      f"{sorted(word_set(french) & word_set('Il fait beau aujourd hui'))}")
print(f"'three' in the answer: {'three' in word_set(reply)}")
if not REAL:  # the prose below
    assert not word_set(french) & word_set("Il fait beau aujourd hui") and "three" not in word_set(reply)
    assert not word_set(summary) & topic

# %% [markdown]
# For the bundled model none of the three outputs does its task (see the checks printed above):
# the "translation" has no word of the French, the "answer" does not say when the bridge opens, and
# the "summary" has no word of the article's subject. All three are phrases of the kind it has read
# in its novels and the Bible, strung together. Plain continuation, the one thing it was trained for,
# gives the same kind of text, which this time is what was asked for.
#
# ## 8. Scoring: which continuation is likelier?
#
# What a small model can do is *score*. A causal language model assigns every text a probability,
# one factor per token, and one forward pass over prompt $x$ and continuation $c$ gives all of them:
#
# $$\log p(c \mid x) = \sum_{t=1}^{|c|} \log p\big(c_t \mid x, c_{<t}\big).$$
#
# Comparing two continuations of the same prompt turns any question into a multiple choice. A sum
# over more tokens is more negative, so we compare continuations with the same number of tokens.
# The first group of pairs is about the model's own world; the second asks the zero-shot tasks
# above as choices between a right and a wrong answer. In every pair the first continuation is the
# right one.

# %%
qa = tasks.qa_prompt
pairs = [
    ("world", "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
              "must be in want of a", " wife.", " horse."),
    ("world", "In the beginning God created the heaven and the", " earth.", " moon."),
    ("world", "She was", " very happy.", " very happily."),
    ("world", "Mr. Darcy looked at", " Elizabeth", " Moses"),
    ("world", "Moses stretched out his hand over the", " sea", " sofa"),
    ("world", "Thus says the", " Lord", " lady"),
    ("task", qa("When will the bridge open?", document=article), " In three years", " In two weeks"),
    ("task", qa("What will the bridge cross?", document=article), " The river", " The sea"),
    ("task", tasks.summary_prompt(article), " The council will build a bridge.", " The Lord will build a temple."),
    ("task", tasks.translation_prompt("The weather is nice today."), " Il", " The"),
]

def continuation_logp(prompt, cont):
    x, c = tok.encode(prompt), tok.encode(cont)
    logp = gpt2np.layers.log_softmax(model(np.array(x + c))[len(x) - 1:-1])   # [|c|, V]: predictions of c
    total = float(logp[np.arange(len(c)), c].sum())
    # the same from the library: the loss of x + c (summed over its tokens) minus the loss of x
    lib = -(model.loss(x + c) * (len(x) + len(c) - 1) - model.loss(x) * (len(x) - 1))
    np.testing.assert_allclose(total, lib, rtol=1e-3, atol=1e-3)
    return total

rows = []
for group, prompt, right, wrong in pairs:
    assert len(tok.encode(right)) == len(tok.encode(wrong))
    a, b = continuation_logp(prompt, right), continuation_logp(prompt, wrong)
    rows.append((group, right, wrong, a - b))
    print(f"{group:5} ...{prompt[-28:]!r:32} {right!r:36} {a:7.2f}  vs {wrong!r:32} {b:7.2f}  "
          f"{'right' if a > b else 'WRONG'}")
wins = {g: sum(d > 0 for gg, _, _, d in rows if gg == g) for g in ("world", "task")}
print(f"\nright: {wins['world']} of {sum(r[0] == 'world' for r in rows)} pairs about its world, "
      f"{wins['task']} of {sum(r[0] == 'task' for r in rows)} task pairs")

fig, ax = plt.subplots(figsize=(6.4, 3.2))
diffs = [d for *_, d in rows]
ax.barh(range(len(rows)), diffs, color=["tab:green" if d > 0 else "tab:red" for d in diffs])
ax.set_yticks(range(len(rows)), [f"{r!r} vs {w!r}"[:44] for _, r, w, _ in rows], fontsize=7)
ax.axvline(0, color="k", lw=0.8); ax.invert_yaxis()
ax.set_xlabel("log p(right) − log p(wrong)  (nats)"); ax.set_title("which continuation is likelier", fontsize=9)
fig.tight_layout()
if not REAL:  # the prose below
    assert wins["world"] == 6 and [d > 0 for g, _, _, d in rows if g == "task"] == [True, False, False, False], wins
    assert all(d > np.log(10) for g, _, _, d in rows if g == "world")

# %% [markdown]
# For the bundled model the pairs about its own world come out right every time, each by more than
# $\ln 10 \approx 2.3$ nats, a factor of ten in probability: it has learned that single men of
# fortune want wives, that God created the earth, that "She was very happy." is English and "She
# was very happily." is not, and whom Mr. Darcy looks at. The task pairs are another matter
# (the count is printed): only the first comes out right, and its right answer repeats words of the
# article (three years) while the wrong one does not. It prefers the sea to the river as what the
# bridge crosses, the Lord's temple to the council's bridge as the summary (by a third of a nat), and
# to go on in English after `=` rather than begin the French.
#
# The same scores, averaged over a whole text, are its perplexity (notebook 05). It tells the
# model's own kind of text from the rest:

# %%
from gpt2np import scoring

texts = {"Austen": "It is a truth universally acknowledged, that a single man in possession of a good "
                   "fortune, must be in want of a wife.",
         "the Bible": "In the beginning God created the heavens and the earth. The earth was formless and empty.",
         "a news article": article}
ppl = {}
for name, text in texts.items():
    ids = tok.encode(text)
    ppl[name] = scoring.perplexity(model, ids).ppl
    np.testing.assert_allclose(ppl[name], np.exp(model.loss(ids)), rtol=1e-4)   # one window: exp(mean loss)
    print(f"{name:15} {len(ids):3d} tokens  perplexity {ppl[name]:7.1f}")
if not REAL:  # the prose below
    assert ppl["a news article"] > 5 * max(ppl["Austen"], ppl["the Bible"])

# %% [markdown]
# For the bundled model the news article's perplexity is more than five times that of either
# sentence from its corpus. This is how such a model is useful at its size: as a measure of how
# much a text resembles what it was trained on (`gpt2np score FILE` prints it for a whole file),
# or to rank candidate continuations, not to write summaries or translations.
