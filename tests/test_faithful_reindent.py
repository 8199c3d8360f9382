"""Reference solutions reindented before training: the original's line-based reindent to tabs, reproduced, and the
default that re-reads indentation with Python's tokenizer and never changes the program."""

import ast
import warnings

import pytest

from coderl_ray.config import ConfigError, load_config
from coderl_ray.data.reindent import reindent, reindent_like_coderl, reindent_spaces


def test_the_originals_reindent_line_by_line():
    # Unit from the first indented line (2 spaces); whole units become tabs, a remainder stays; every line ends in \n.
    assert reindent_like_coderl("def f(x):\n  if x:\n    return (1,\n         2)\n  return 0") == \
        "def f(x):\n\tif x:\n\t\treturn (1,\n\t\t\t\t 2)\n\treturn 0\n"
    # Tabs in, tabs out; \r dropped; lines before the first indented one kept as they are.
    assert reindent_like_coderl("import os\r\n\r\nclass A:\r\n\tdef f(self):\r\n\t\tpass\r\n") == \
        "import os\n\nclass A:\n\tdef f(self):\n\t\tpass\n"
    # Its quirk: a first indented line two levels deep makes the unit 8 spaces, so 4-space lines keep their spaces.
    assert reindent_like_coderl("x = [\n        1]\ndef f():\n    return 1\n") == \
        "x = [\n\t1]\ndef f():\n    return 1\n"
    # It does not know strings: an indented line inside a triple-quoted string is changed too.
    assert reindent_like_coderl('def f():\n    s = """\n    a"""\n') == 'def f():\n\ts = """\n\ta"""\n'


def test_spaces_reindent_follows_block_levels_and_leaves_everything_else():
    code = ("def f(x):\n"
            "\tif x:  # tab-indented\n"
            "\t\ty = [1,\n"
            "\t\t     2]\n"
            "\t\ts = '''\n"
            "\tkeep me'''\n"
            "  # a comment line\n"
            "\t\treturn y, \\\n"
            "\t\t\ts\n"
            "\treturn 0\n")
    want = ("def f(x):\n"
            "    if x:  # tab-indented\n"
            "        y = [1,\n"
            "\t\t     2]\n"  # a continuation line: free-form, kept
            "        s = '''\n"
            "\tkeep me'''\n"  # inside a string: kept
            "  # a comment line\n"  # comment-only lines: kept
            "        return y, \\\n"
            "\t\t\ts\n"  # after a backslash: kept
            "    return 0\n")
    assert reindent_spaces(code) == want
    assert ast.dump(ast.parse(want)) == ast.dump(ast.parse(code))
    assert reindent_spaces("def f():\n return 1\n") == "def f():\n    return 1\n"  # 1-space MBPP style
    assert reindent_spaces("def f(:\n  pass\n") == "def f(:\n  pass\n"  # not Python: unchanged
    assert reindent("a\n\tb", "none") == "a\n\tb"
    with pytest.raises(ValueError, match="reindent style"):
        reindent("", "2spaces")


def test_on_mbpp_spaces_keep_every_program_and_the_originals_tabs_break_eight(shared_data):
    from coderl_ray.data.mbpp import load_mbpp

    codes = [s for p in load_mbpp(shared_data / "mbpp" / "mbpp.jsonl") for s in p["solutions"]]
    assert len(codes) == 974

    def tree(code):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MBPP's regexes use invalid escapes ("\s") in plain strings
            try:
                return ast.dump(ast.parse(code))
            except SyntaxError:
                return None

    trees = [tree(c) for c in codes]
    assert None not in trees
    spaces = [reindent(c, "spaces") for c in codes]
    assert sum(s != c for s, c in zip(spaces, codes)) > 500  # MBPP is indented every which way
    assert [tree(s) for s in spaces] == trees
    tabs = [tree(reindent(c, "tabs")) for c in codes]
    assert sum(t is None for t in tabs) == 8  # mixed tabs and spaces that Python accepted, split by the unit rule


def test_reference_rows_are_encoded_reindented(tmp_path):
    from coderl_ray.models.tokenizer import load_tokenizer
    from coderl_ray.rl.replay_buffer import ground_truth_rows
    from tests.helpers import tiny_actor_dir, tiny_suite

    tok = load_tokenizer(tiny_actor_dir(tmp_path))
    p = tiny_suite()[0][0]
    four = p["solutions"][0]
    assert "\n    " in four and "\t" not in four
    tabbed = {**p, "solutions": [four.replace("    ", "\t")]}
    for style, want in (("spaces", four), ("none", four.replace("    ", "\t")),
                        ("tabs", reindent_like_coderl(four))):
        (row,) = ground_truth_rows([tabbed], tok, 256, 512, reindent=style)
        assert tok.decode(row["token_ids"], skip_special_tokens=True) == want


def test_data_reindent_setting():
    assert load_config(None).data.reindent == "spaces"
    assert load_config(None, ["data.reindent=tabs"]).data.reindent == "tabs"
    with pytest.raises(ConfigError, match="data.reindent"):
        load_config(None, ["data.reindent=2"])
