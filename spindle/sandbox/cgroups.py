"""Kept for imports: the limits backends now live in ``spindle.sandbox.limits``."""

from spindle.sandbox.limits.base import SessionLimits as SessionCgroup

__all__ = ["SessionCgroup"]
