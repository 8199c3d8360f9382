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


# The repair model's input (CodeRL, Sec. 3.3, program repairing): the problem, a failed program and its error. The
# error is the sandbox's own message (the exception's last lines, or the failing test's expected and actual output),
# cut to a few hundred characters: its first line names what went wrong, the rest is mostly traceback noise.
REPAIR_MAX_ERROR_CHARS = 300
# A failed program longer than this keeps its head; the tokenizer then cuts the prompt from the left (the question's
# start), so the program, the error and "ANSWER:" always reach the model.
REPAIR_MAX_PROGRAM_CHARS = 2000


def build_repair_prompt(problem: dict[str, Any], program: str, outcome: str, error: str) -> str:
    """The source text the repair model reads: the problem's prompt, then the failed program and its error.

    >>> print(build_repair_prompt({"question": "Add.", "tests": {"kind": "stdio"}}, "print(1)", "failed",
    ...                           "test 0: wrong answer: expected '3\\\\n', got '1\\\\n'"), end="")
    <BLANKLINE>
    QUESTION:
    Add.
    <BLANKLINE>
    <BLANKLINE>
    Use Standard Input format
    <BLANKLINE>
    FAILED PROGRAM:
    print(1)
    ERROR:
    failed: test 0: wrong answer: expected '3\\n', got '1\\n'
    ANSWER:
    """
    head = build_prompt(problem)[: -len("\nANSWER:\n")]
    error = " ".join(error.split())[:REPAIR_MAX_ERROR_CHARS]  # one line: tracebacks' indentation carries nothing
    return (head + "\nFAILED PROGRAM:\n" + program[:REPAIR_MAX_PROGRAM_CHARS].rstrip() + "\nERROR:\n" + outcome
            + (": " + error if error else "") + "\nANSWER:\n")
