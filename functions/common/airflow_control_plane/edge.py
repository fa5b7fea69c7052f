"""The first check of every Lambda handler: the event is a JSON object.

A Lambda can be invoked with any JSON value (a list, a string, a number, null). Every handler
calls :func:`event_object` before anything else, so such an event is a typed
``InvalidInputError`` (routable by Step Functions, counted as a client error) instead of an
AttributeError deep in the parsing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_control_plane.errors import InvalidInputError


def event_object(event: object, handler: str) -> Mapping[str, Any]:
    if not isinstance(event, Mapping):
        raise InvalidInputError(f"{handler} event must be a JSON object, got {type(event).__name__}")
    return event
