"""Every example in the package's docstrings runs and prints what it says (records, returns, batching, prompts,
metrics, data loaders, the sandbox's comparison helpers): modules found by their ``>>>`` lines, so a new doctest
joins the suite without being listed here."""

from __future__ import annotations

import doctest
import importlib

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "coderl_ray"
MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in PACKAGE.rglob("*.py")
                 if ">>> " in p.read_text(encoding="utf-8"))


def test_records_returns_batching_and_prompts_doctests_are_collected():
    assert {"coderl_ray.records", "coderl_ray.rl.returns", "coderl_ray.train.batching",
            "coderl_ray.data.prompts"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has '>>> ' lines but doctest found no example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
