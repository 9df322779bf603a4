"""The one error of input that cannot become a CloudEvent."""

from __future__ import annotations


class InvalidEvent(ValueError):
    """The input is not a usable event; `reason` is a low-cardinality rejection label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
