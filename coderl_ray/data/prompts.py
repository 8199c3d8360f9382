"""The prompt format of the CodeRL paper (inherited from the APPS fine-tuning scripts).

``"\\nQUESTION:\\n" + question + "\\n" + starter_code + "\\n" + answer_type + "\\nANSWER:\\n"``, where the answer type
says whether the program reads standard input or defines a function that the tests call.
"""

from __future__ import annotations

from typing import Any

CALL_BASED = "\nUse Call-Based format\n"
STANDARD_INPUT = "\nUse Standard Input format\n"


def answer_type(problem: dict[str, Any]) -> str:
    # CodeRL keys the format on the presence of starter code / fn_name; assert-style problems (MBPP, HumanEval)
    # define a function too, so they are call-based.
    kind = (problem.get("tests") or {}).get("kind")
    if problem.get("fn_name") or problem.get("starter_code") or kind in ("call", "assert"):
        return CALL_BASED
    return STANDARD_INPUT


def build_prompt(problem: dict[str, Any]) -> str:
    """The source text the actor and critic read for a problem.

    >>> build_prompt({"question": "Add two numbers.", "starter_code": "", "tests": {"kind": "stdio"}})
    '\\nQUESTION:\\nAdd two numbers.\\n\\n\\nUse Standard Input format\\n\\nANSWER:\\n'
    """
    starter = problem.get("starter_code") or ""
    return "\nQUESTION:\n" + problem["question"] + "\n" + starter + "\n" + answer_type(problem) + "\nANSWER:\n"
