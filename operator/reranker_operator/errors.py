"""Errors the operator reports to people."""

from __future__ import annotations


class InvalidSpecError(Exception):
    """A RerankerDeployment spec that cannot be rendered.

    `problems` lists every problem found (not only the first), each phrased so a person knows what to change;
    `str(error)` joins them into one message suitable for the InvalidSpec condition.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))
