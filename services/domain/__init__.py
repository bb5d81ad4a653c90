"""The pure core: deciders, health, reporting. No I/O, no clock, no random ids.

It imports ``events`` only (an import contract in pyproject.toml keeps it so).
"""

from __future__ import annotations

from services.domain.decider import (
    Plan,
    State,
    Traced,
    decide_traced,
    evolve,
    initial_state,
    plan,
    stamp,
)

__all__ = ["Plan", "State", "Traced", "decide_traced", "evolve", "initial_state", "plan", "stamp"]
