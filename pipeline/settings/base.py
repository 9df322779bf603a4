"""What every settings model shares: strict and frozen, and one error type naming the key."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line naming the key."""


BROKEN_RULE = "broken_rule"


def broken_rule(key: str, problem: str) -> PydanticCustomError:
    """A rule across keys that the values break, reported under `key` (the one to change)."""
    return PydanticCustomError(BROKEN_RULE, "{key}: {problem}", {"key": key, "problem": problem})


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
