"""govpipe: signed, reconciled delivery of AI-agent governance events."""

__version__ = "0.1.0"
