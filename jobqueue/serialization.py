"""JSON with a few tagged types; never pickle.

Plain JSON values travel as they are. datetime, date, time, timedelta, Decimal and UUID travel as
tagged strings, and model instances as a reference (model label and primary key) that the worker
fetches fresh. Anything else is refused while encoding, with the path of the offending value:
so are values nested deeper than ``MAX_DEPTH`` lists and dicts (or holding themselves), which
would otherwise exhaust Python's recursion limit here or in the worker, and integers of more
than ``MAX_INT_DIGITS`` digits, which Python will not turn into text. The same rules hold for
a task's return value (a refused one fails the job, without retry).
"""

from __future__ import annotations

import datetime as dt
import json
import json.encoder as json_encoder
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.db import models

from jobqueue.exceptions import SerializationError

TAG = "$jq"
SUPPORTED = (
    "None, bool, int, float, str, list, tuple, dict with str keys, datetime, date, time, "
    "timedelta, Decimal, UUID and saved model instances"
)


MAX_DEPTH = 100  # nesting levels; each level costs two frames of Python's 1,000
MAX_INT_DIGITS = 4000  # below sys.get_int_max_str_digits()'s default, 4,300
_MAX_INT = 10**MAX_INT_DIGITS


class DecodeError(ValueError):
    """A payload that is not what ``encode`` makes (malformed, tampered, or from newer code)."""


def _tagged(kind: str, value: Any) -> dict[str, Any]:
    return {TAG: kind, "v": value}


class _Refused(Exception):
    """Raised where a value is refused; each level it unwinds through adds its step of the
    path, so that no path is built for values that travel."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.steps: list[str] = []  # innermost first


PATH_ENDS = 4  # steps shown at each end of a long path


def _shown(path: str, steps: list[str]) -> str:
    """``path`` and its steps; a long path keeps its first and last ``PATH_ENDS`` steps."""
    if len(steps) <= 2 * PATH_ENDS + 1:
        return path + "".join(steps)
    return (
        f"{path}{''.join(steps[:PATH_ENDS])}...{''.join(steps[-PATH_ENDS:])} ({len(steps)} levels)"
    )


def _key_step(key: str) -> str:
    text = repr(key)
    return f"[{text[:40]}...]" if len(text) > 45 else f"[{text}]"


def to_jsonable(value: Any, path: str) -> Any:
    """Return ``value`` as plain JSON data; raise ``SerializationError`` naming ``path`` and
    where in it the refused value is."""
    try:
        return _jsonable(value, 0)
    except _Refused as refused:
        raise _error(path, refused) from None


def _jsonable(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if -_MAX_INT < value < _MAX_INT:
            return value
        raise _Refused(
            f"an int of more than {MAX_INT_DIGITS} digits cannot travel as JSON (send it as a str)"
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused(f"{value!r} cannot travel as JSON")
        return value
    if isinstance(value, list | tuple | dict) and depth >= MAX_DEPTH:
        raise _Refused(
            f"nested deeper than {MAX_DEPTH} lists and dicts (or it contains itself); "
            "jobqueue refuses deeper values"
        )
    if isinstance(value, list | tuple):
        items = []
        for index, item in enumerate(value):
            try:
                items.append(_jsonable(item, depth + 1))
            except _Refused as refused:
                refused.steps.append(f"[{index}]")
                raise
        return items
    if isinstance(value, dict):
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Refused(
                    f"dict keys must be str to travel as JSON, not {type(key).__name__} "
                    f"({key!r:.60})"
                )
            try:
                encoded[key] = _jsonable(item, depth + 1)
            except _Refused as refused:
                refused.steps.append(_key_step(key))
                raise
        return _tagged("dict", list(encoded.items())) if TAG in encoded else encoded
    if isinstance(value, dt.datetime):
        return _tagged("datetime", value.isoformat())
    if isinstance(value, dt.date):
        return _tagged("date", value.isoformat())
    if isinstance(value, dt.time):
        return _tagged("time", value.isoformat())
    if isinstance(value, dt.timedelta):
        return _tagged("timedelta", [value.days, value.seconds, value.microseconds])
    if isinstance(value, Decimal):
        return _tagged("decimal", str(value))
    if isinstance(value, uuid.UUID):
        return _tagged("uuid", str(value))
    if isinstance(value, models.Model):
        if value.pk is None:
            raise _Refused(
                f"an unsaved {type(value).__name__} has no primary key to send; save it first"
            )
        try:
            pk = _jsonable(value.pk, depth + 1)
        except _Refused as refused:
            refused.steps.append(".pk")
            raise
        return _tagged("model", [value._meta.label_lower, pk])
    raise _Refused(
        f"a {type(value).__module__}.{type(value).__qualname__} cannot travel as JSON "
        f"(supported: {SUPPORTED})"
    )


def _never(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} was not made JSON-ready")  # to_jsonable was skipped


_COMPACT = json.JSONEncoder(separators=(",", ":"))
# json.dumps and JSONEncoder.encode make a C encoder per call; one made here serves every call.
# No cycle check: what it encodes has been through _jsonable, which refuses deep (and so
# self-containing) values.
_make_encoder = getattr(json_encoder, "c_make_encoder", None)  # None without the C accelerator
_ENCODE = (
    None
    if _make_encoder is None
    else _make_encoder(
        None, _never, json_encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )
)
NO_ARGUMENTS = _COMPACT.encode({"args": [], "kwargs": {}})


def arguments_text(
    args: Sequence[Any], kwargs: Mapping[str, Any], name: Callable[[int | str], str]
) -> str:
    """The JSON text of a call's arguments, ``{"args": [...], "kwargs": {...}}``. A refused
    value raises ``SerializationError``, its path starting with ``name(position or keyword)``:
    a name is only made for a value that is refused."""
    if not args and not kwargs:
        return NO_ARGUMENTS
    encoded: list[Any] = []
    for index, value in enumerate(args):
        try:
            encoded.append(_jsonable(value, 0))
        except _Refused as refused:
            raise _error(name(index), refused) from None
    keywords: dict[str, Any] = {}
    for key, value in kwargs.items():
        try:
            keywords[key] = _jsonable(value, 0)
        except _Refused as refused:
            raise _error(name(key), refused) from None
    return json_text({"args": encoded, "kwargs": keywords})


def _error(path: str, refused: _Refused) -> SerializationError:
    return SerializationError(f"{_shown(path, refused.steps[::-1])}: {refused.reason}")


def dumps(value: Any, path: str = "value") -> str:
    return json_text(to_jsonable(value, path))


def json_text(jsonable: Any) -> str:
    """Compact JSON text of what ``to_jsonable`` returned (already checked and tagged)."""
    if _ENCODE is None:
        return _COMPACT.encode(jsonable)
    return "".join(_ENCODE(jsonable, 0))


def _fetch(label: str, pk: Any) -> models.Model:
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError) as exc:
        raise DecodeError(f"unknown model {label!r}") from exc
    try:
        return model._default_manager.get(pk=pk)
    except model.DoesNotExist:
        raise DecodeError(
            f"{model._meta.label} with pk={pk!r} no longer exists (deleted after the job was sent)"
        ) from None


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": Decimal,
    "uuid": uuid.UUID,
    "dict": dict,
    "model": lambda v: _fetch(v[0], v[1]),
}


def _object_hook(obj: dict[str, Any]) -> Any:
    if TAG not in obj:
        return obj
    decoder = _DECODERS.get(obj[TAG])
    if decoder is None or set(obj) != {TAG, "v"}:
        raise DecodeError(f"unknown tagged value {obj!r}")
    try:
        return decoder(obj["v"])
    except DecodeError:
        raise
    except (TypeError, ValueError, IndexError, ArithmeticError) as exc:
        raise DecodeError(f"malformed {obj[TAG]} value {obj['v']!r}: {exc}") from exc


def loads(text: str) -> Any:
    """Decode what ``dumps`` made; model references are fetched from the database now."""
    try:
        return json.loads(text, object_hook=_object_hook)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from exc
