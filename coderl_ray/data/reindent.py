"""One indentation style for reference solutions before they become training targets (``data.reindent``).

Human-written solutions (APPS, MBPP) come indented with tabs, 1, 2, 4 or 8 spaces, sometimes mixed; the original
CodeRL reindented every reference before training on it so the actor learns one style. Two ways here:

* ``spaces`` (the default): 4 spaces per block level, read from Python's own tokenizer. Only the leading whitespace
  of lines that start a statement changes; continuation lines, comment-only lines and the inside of multi-line
  strings are left alone, so the program's AST is unchanged (tested on MBPP and the APPS sample); code the tokenizer
  rejects is returned as it is.
* ``tabs``: the original's algorithm, line by line (CodeRL ``datasets/utils.reindent_code``): the first indented
  line's leading whitespace is the unit, each line's leading run of whole units becomes that many tabs, the rest of
  the line is kept, ``\\r`` is dropped and every line ends in ``\\n``. It does not know Python: a unit taken from a
  deeper first line, mixed tabs and spaces, or an indented line inside a string come out changed or broken (8 of
  MBPP's 974 references stop compiling).

``none`` keeps solutions as they are.
"""

from __future__ import annotations

import io
import tokenize

STYLES = ("spaces", "tabs", "none")


def reindent(code: str, style: str = "spaces") -> str:
    """``code`` in indentation ``style`` (one of :data:`STYLES`)."""
    if style == "spaces":
        return reindent_spaces(code)
    if style == "tabs":
        return reindent_like_coderl(code)
    if style == "none":
        return code
    raise ValueError(f"reindent style must be one of {STYLES}, got {style!r}")


def reindent_spaces(code: str, width: int = 4) -> str:
    """Each statement's line indented by ``width`` spaces per block level (Python's INDENT / DEDENT tokens).

    >>> reindent_spaces("if x:\\n\\ty = (1,\\n\\t     2)\\n\\tif y:\\n\\t\\tz = '''a\\n\\tb'''\\n")
    "if x:\\n    y = (1,\\n\\t     2)\\n    if y:\\n        z = '''a\\n\\tb'''\\n"
    """
    lines = io.StringIO(code).readlines()
    depth_of_line: dict[int, int] = {}
    depth = brackets = 0
    at_statement_start = True
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.INDENT:
                depth += 1
            elif tok.type == tokenize.DEDENT:
                depth -= 1
            elif tok.type in (tokenize.NEWLINE, tokenize.NL):
                at_statement_start = brackets == 0
            elif tok.type in (tokenize.COMMENT, tokenize.ENDMARKER):
                pass
            else:
                if at_statement_start:
                    depth_of_line[tok.start[0]] = depth
                    at_statement_start = False
                if tok.type == tokenize.OP and tok.string in "([{":
                    brackets += 1
                elif tok.type == tokenize.OP and tok.string in ")]}":
                    brackets -= 1
    except (tokenize.TokenError, SyntaxError):
        return code  # not Python the tokenizer accepts: leave it as it is
    for number, level in depth_of_line.items():
        line = lines[number - 1]
        lines[number - 1] = " " * (width * level) + line.lstrip(" \t\f")
    return "".join(lines)


def reindent_like_coderl(code: str) -> str:
    """The original CodeRL's reindentation (to tabs), reproduced line for line; see the module docstring.

    >>> reindent_like_coderl("def f():\\n  if x:\\n    return 1\\n   # three\\n")
    'def f():\\n\\tif x:\\n\\t\\treturn 1\\n\\t # three\\n'
    """
    lines = code.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the text after the last newline, when there is none
    unit = None
    out = []
    for line in lines:
        line = line.rstrip("\r\n")
        if unit is None:
            if not (line and line[0] in " \t" and not line.isspace()):
                out.append(line)  # before the first indented line: kept as it is
                continue
            width = len(line) - len(line.lstrip(" \t"))
            unit = ("\t" if line[0] == "\t" else " ") * width
        level = 0
        while line.startswith(unit * (level + 1)):
            level += 1
        out.append("\t" * level + line[len(unit) * level:])
    return "".join(line + "\n" for line in out)
