import pathlib

import pytest

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> pathlib.Path:
    return FIXTURES


@pytest.fixture(autouse=True)
def _isolated_gpt2np_cache(request, monkeypatch, tmp_path_factory):
    """No test reads or writes the user's cache or follows their download settings.

    GPT2NP_HOME points at a fresh folder and the mirror/offline variables are cleared. The
    notebooks are the exception: they look for real GPT-2 weights in the user's cache (read-only)
    and say which model they use.
    """
    if request.node.path.name == "test_notebooks.py":
        return
    monkeypatch.setenv("GPT2NP_HOME", str(tmp_path_factory.mktemp("gpt2np-home")))
    for var in ("GPT2NP_BASE_URL", "GPT2NP_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
