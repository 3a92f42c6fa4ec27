"""gpt2np.config: the sizes and their names, Config, the hparams validator, the params tree's shapes
and the tree walker (what the model and the weight files share)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from gpt2np.config import (
    ALIASES, BUNDLED_MODEL, HPARAM_KEYS, OPENAI_SIZES, PRESETS, Config, canonical_name, check_hparams,
    check_params, flatten, float_dtype, format_path, is_bundled, map_tree, param_shapes, unflatten, walk,
)

from helpers import BLOCK_LEAVES, SIZE_NAMES, TINY_HP, params_tree, spellings

TABLE = (r"known sizes: 124M, 355M, 774M, 1558M, gpt2np-mini, or an alias \(124M: 117M, gpt2, small; "
         r"355M: 345M, gpt2-medium, medium; 774M: gpt2-large, large; 1558M: 1\.5B, gpt2-xl, xl; "
         r"gpt2np-mini: mini, bundled\), in any letter case")
BUNDLED_NAMES = {"gpt2np-mini": "gpt2np-mini", "mini": "gpt2np-mini", "bundled": "gpt2np-mini"}


# ---- the names of the sizes ----------------------------------------------------------------------


@pytest.mark.parametrize("name, size", {**SIZE_NAMES, **BUNDLED_NAMES}.items())
def test_every_size_name_and_alias_in_any_letter_case(name, size):
    for spelling in spellings(name):
        assert canonical_name(spelling) == size, spelling
        assert Config.preset(spelling) is PRESETS[size], spelling


def test_one_table_of_names():
    assert list(PRESETS) == ["124M", "355M", "774M", "1558M", "gpt2np-mini"]
    assert OPENAI_SIZES == ("124M", "355M", "774M", "1558M") and BUNDLED_MODEL == "gpt2np-mini"
    assert {**{name: name for name in PRESETS}, **ALIASES} == {**SIZE_NAMES, **BUNDLED_NAMES}


def test_the_bundled_model_is_a_size_of_the_table():
    import gpt2np

    assert gpt2np.BUNDLED_MODEL == BUNDLED_MODEL
    cfg = Config.preset(gpt2np.BUNDLED_MODEL)
    assert cfg.to_dict() == {"n_vocab": 50257, "n_ctx": 256, "n_embd": 128, "n_head": 4, "n_layer": 6}
    assert cfg.num_params() == 7_655_552  # 6,432,896 of them in wte
    for name in ("gpt2np-mini", " MINI ", "Bundled", "GPT2NP-Mini"):
        assert is_bundled(name), name
    for name in ("124M", "gpt2", "small", "gpt2np", "mini.npz", "", None, 124):
        assert not is_bundled(name), name


@pytest.mark.parametrize("bad", ["7B", "124k", "gpt3", "gpt2 medium", "124", "", " ", None, 124])
def test_unknown_names_list_the_sizes_and_their_aliases(bad):
    with pytest.raises(ValueError, match=rf"^unknown model size {bad!r}; {TABLE}$"):
        canonical_name(bad)
    with pytest.raises(ValueError, match=rf"^unknown model size {bad!r}; {TABLE}$"):
        Config.preset(bad)


def test_model_and_package_re_export_config():
    import gpt2np
    from gpt2np import model

    assert model.Config is gpt2np.Config is Config
    assert model.PRESETS is PRESETS and model.param_shapes is param_shapes


# ---- Config --------------------------------------------------------------------------------------

PARAM_COUNTS = {"124M": 124_439_808, "355M": 354_823_168, "774M": 774_030_080, "1558M": 1_557_611_200}
HPARAMS = {  # docs/formats.md
    "124M": (50257, 1024, 768, 12, 12), "355M": (50257, 1024, 1024, 16, 24),
    "774M": (50257, 1024, 1280, 20, 36), "1558M": (50257, 1024, 1600, 25, 48),
}


@pytest.mark.parametrize("size", list(PARAM_COUNTS))
def test_presets_and_parameter_counts(size):
    cfg = Config.preset(size)
    assert cfg is PRESETS[size]
    assert tuple(cfg.to_dict().values()) == HPARAMS[size]
    assert list(cfg.to_dict()) == ["n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"]
    assert cfg.head_dim == 64
    assert cfg.num_params() == PARAM_COUNTS[size]
    shapes = param_shapes(cfg)  # counted from the tree of shapes, not from the formula

    def count(node):
        if isinstance(node, dict):
            return sum(count(v) for v in node.values())
        if isinstance(node, list):
            return sum(count(v) for v in node)
        return int(np.prod(node))

    assert count(shapes) == PARAM_COUNTS[size]


def test_config_defaults_aliases_and_errors():
    assert Config() == Config.preset("124M") == Config.preset("gpt2")
    assert Config.preset("gpt2-xl") == PRESETS["1558M"]
    with pytest.raises(ValueError, match="124M, 355M, 774M, 1558M, gpt2np-mini"):
        Config.preset("7B")
    with pytest.raises(ValueError, match="divisible"):
        Config(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="n_layer must be a positive integer"):
        Config(n_layer=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().n_layer = 3
    cfg = Config(n_vocab=np.int64(5), n_ctx=4, n_embd=8, n_head=2, n_layer=1)
    assert type(cfg.to_dict()["n_vocab"]) is int and json.dumps(cfg.to_dict())
    assert Config(**cfg.to_dict()) == cfg


def test_config_from_hparams(tmp_path):
    text = '{\n  "n_vocab": 50257,\n  "n_ctx": 1024,\n  "n_embd": 1024,\n  "n_head": 16,\n  "n_layer": 24\n}\n'
    (tmp_path / "hparams.json").write_text(text)
    assert len(text) == 91  # OpenAI's 355M file
    assert Config.from_hparams(tmp_path / "hparams.json") == PRESETS["355M"]
    assert Config.from_hparams(tmp_path) == PRESETS["355M"]  # the folder works too
    (tmp_path / "bad.json").write_text('{"n_vocab": 5, "n_ctx": 4}')
    with pytest.raises(ValueError, match=r"bad\.json: missing n_embd, n_head, n_layer \(expected the keys"):
        Config.from_hparams(tmp_path / "bad.json")
    (tmp_path / "extra.json").write_text(text.replace('"n_vocab"', '"n_positions": 1024, "n_vocab"'))
    with pytest.raises(ValueError, match=r"extra\.json: unexpected keys n_positions \(expected only the keys"):
        Config.from_hparams(tmp_path / "extra.json")
    (tmp_path / "broken.json").write_text('{"n_vocab": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        Config.from_hparams(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError):
        Config.from_hparams(tmp_path / "nope.json")


# ---- the hparams validator -----------------------------------------------------------------------

KEYS = "n_vocab, n_ctx, n_embd, n_head, n_layer"
GOOD = {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12}


@pytest.mark.parametrize("hparams, message", [
    ([1, 2], rf"expected a JSON object with the keys {KEYS}, found list"),
    ({"n_vocab": 5}, rf"missing n_ctx, n_embd, n_head, n_layer \(expected the keys {KEYS}\)"),
    ({**GOOD, "n_embed": 8}, rf"unexpected keys n_embed \(expected only the keys {KEYS}\)"),
    ({**GOOD, "n_layer": 0}, r"n_layer must be a positive integer, found 0"),
    ({**GOOD, "n_head": True}, r"n_head must be a positive integer, found True"),
    ({**GOOD, "n_ctx": 8.0}, r"n_ctx must be a positive integer, found 8\.0"),
    ({**GOOD, "n_ctx": "1024"}, r"n_ctx must be a positive integer, found '1024'"),
    ({**GOOD, "n_vocab": np.array(2.5)}, r"n_vocab must be a positive integer, found 2\.5"),
    ({**GOOD, "n_head": 7}, r"n_embd=768 must be divisible by n_head=7 \(each head gets n_embd / n_head features\)"),
])
def test_one_hparams_validator_for_config_and_the_files(hparams, message):
    from gpt2np.formats import WeightsError, check_hparams as files_check_hparams

    class Mine(Exception):
        pass

    with pytest.raises(Mine, match=rf"^f\.json: {message}$"):
        check_hparams(hparams, "f.json", Mine)
    with pytest.raises(ValueError, match=rf"^hparams: {message}$"):
        check_hparams(hparams)
    with pytest.raises(WeightsError, match=rf"^f\.json: {message}$"):
        files_check_hparams(hparams, "f.json")
    if isinstance(hparams, dict) and set(hparams) == set(HPARAM_KEYS):
        with pytest.raises(ValueError, match=rf"^Config: {message}$"):
            Config(**hparams)


def test_valid_hparams_become_plain_ints_in_openai_order():
    got = check_hparams({"n_layer": np.array(2), "n_head": np.int32(2), "n_embd": 8, "n_ctx": 4, "n_vocab": np.int64(5)})
    assert got == {"n_vocab": 5, "n_ctx": 4, "n_embd": 8, "n_head": 2, "n_layer": 2}
    assert list(got) == list(HPARAM_KEYS) and all(type(v) is int for v in got.values())


# ---- the params tree -----------------------------------------------------------------------------


def test_param_shapes_is_the_tree_written_out_by_hand():
    d = TINY_HP["n_embd"]
    block = {"ln_1.g": (d,), "ln_1.b": (d,), "attn.c_attn.w": (d, 3 * d), "attn.c_attn.b": (3 * d,),
             "attn.c_proj.w": (d, d), "attn.c_proj.b": (d,), "ln_2.g": (d,), "ln_2.b": (d,),
             "mlp.c_fc.w": (d, 4 * d), "mlp.c_fc.b": (4 * d,), "mlp.c_proj.w": (4 * d, d), "mlp.c_proj.b": (d,)}
    top = {"wte": (20, d), "wpe": (8, d), "ln_f.g": (d,), "ln_f.b": (d,)}
    want = params_tree(2, lambda name: top[name] if name in top else block[name.split(".", 2)[2]])
    got = param_shapes(Config(**TINY_HP))
    assert got == want == param_shapes(TINY_HP)  # a Config or its hparams
    assert list(flatten(got)) == list(flatten(want))  # in the same order
    assert got["blocks"][0] is not got["blocks"][1]  # separate blocks, not one object repeated


def test_check_params_returns_the_dtype_and_names_what_is_wrong():
    cfg = Config(**TINY_HP)
    tree = map_tree(lambda _, shape: np.zeros(shape, np.float32), param_shapes(cfg))
    assert check_params(cfg, tree) == np.float32
    with pytest.raises(ValueError, match=r"^blocks: expected a list of 2 blocks, found tuple$"):
        check_params(cfg, {**tree, "blocks": tuple(tree["blocks"])})
    with pytest.raises(ValueError, match=r"^params: expected a dict with keys \['wte', 'wpe', 'blocks', 'ln_f'\], found list$"):
        check_params(cfg, [])
    tree["blocks"][1]["mlp"]["c_proj"]["w"] = np.zeros((8, 32), np.float32)
    with pytest.raises(ValueError, match=r"^blocks\[1\]\.mlp\.c_proj\.w: expected \(32, 8\), found \(8, 32\)$"):
        check_params(cfg, tree)


def test_float_dtype():
    assert float_dtype("float32") == np.float32 and float_dtype(np.float64) == np.float64
    with pytest.raises(ValueError, match=r"^dtype must be float32 or float64, got float16$"):
        float_dtype(np.float16)


# ---- the walker ----------------------------------------------------------------------------------

NAMES = ["wte", "wpe", *(f"blocks.{i}.{n}" for i in range(2) for n in BLOCK_LEAVES), "ln_f.g", "ln_f.b"]


def test_walk_and_map_in_the_tree_order_with_both_path_styles():
    shapes = param_shapes(TINY_HP)
    paths = [path for path, _ in walk(shapes)]
    assert [format_path(p, flat=True) for p in paths] == NAMES
    assert paths[2] == ("blocks", 0, "ln_1", "g") and paths[-1] == ("ln_f", "b")
    path = ("blocks", 3, "attn", "c_attn", "w")
    assert format_path(path) == "blocks[3].attn.c_attn.w"  # for messages
    assert format_path(path, flat=True) == "blocks.3.attn.c_attn.w"  # flat names
    assert format_path(()) == "params" and format_path(("wte",)) == "wte"
    sizes = map_tree(lambda p, shape: (format_path(p), int(np.prod(shape))), shapes)
    assert sizes["blocks"][1]["mlp"]["c_fc"]["w"] == ("blocks[1].mlp.c_fc.w", 8 * 32)
    assert isinstance(sizes["blocks"], list) and len(sizes["blocks"]) == 2
    assert shapes["wte"] == (20, 8)  # the input is not changed
    assert list(walk(np.zeros(3)))[0][0] == ()  # a bare leaf is the whole tree


def test_flatten_and_unflatten_are_inverses_in_the_natural_order():
    rng = np.random.default_rng(0)
    tree = map_tree(lambda _, shape: rng.standard_normal(shape), param_shapes(TINY_HP))
    flat = flatten(tree)
    assert list(flat) == NAMES
    backwards = {name: flat[name] for name in reversed(NAMES)}
    again = unflatten(backwards, 2)
    assert list(flatten(again)) == NAMES and isinstance(again["blocks"], list)
    assert all(flatten(again)[name] is flat[name] for name in NAMES)  # the same arrays, not copies
    assert list(again) == ["wte", "wpe", "blocks", "ln_f"] and list(again["blocks"][1]) == ["ln_1", "attn", "ln_2", "mlp"]
    with pytest.raises(ValueError, match=r"missing \['blocks\.1\.mlp\.c_fc\.b'\], unexpected \[\]"):
        unflatten({k: v for k, v in flat.items() if k != "blocks.1.mlp.c_fc.b"}, 2)
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['blocks\.2\.ln_1\.g'\]"):
        unflatten({**flat, "blocks.2.ln_1.g": flat["ln_f.g"]}, 2)


def test_unflatten_puts_blocks_in_numeric_order():
    flat = flatten(param_shapes({**TINY_HP, "n_layer": 11}))
    tree = unflatten(dict(sorted(flat.items())), 11)  # sorted as text: blocks.10 before blocks.2
    assert tree == param_shapes({**TINY_HP, "n_layer": 11})
    assert [format_path(p, flat=True) for p, _ in walk(tree)] == list(flat)
