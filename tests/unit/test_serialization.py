import datetime as dt
import math
import uuid
from decimal import Decimal

import pytest

from jobqueue.exceptions import SerializationError
from jobqueue.serialization import MAX_DEPTH, DecodeError, dumps, loads
from tests.testapp.models import Note


@pytest.mark.parametrize(
    "value",
    [
        None, True, 3, 2.5, "text", [1, [2, 3]], {"a": {"b": None}},
        dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 2, 3, 4, 5),
        dt.date(2026, 1, 2), dt.time(3, 4, 5, 6), dt.timedelta(days=-1, seconds=5, microseconds=7),
        Decimal("1.10"), uuid.UUID("12345678-1234-5678-1234-567812345678"),
        {"$jq": "not a tag", "v": 1},
    ],
)
def test_round_trip(value):
    assert loads(dumps(value)) == value


def test_round_trip_keeps_types():
    value = {"when": dt.date(2026, 5, 1), "amount": Decimal("0.1")}
    decoded = loads(dumps(value))
    assert type(decoded["when"]) is dt.date
    assert type(decoded["amount"]) is Decimal


def test_tuples_arrive_as_lists():
    assert loads(dumps((1, 2))) == [1, 2]


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (object(), "x"),
        ({"ok": [1, {2}]}, "x['ok'][1]"),
        ({1: "a"}, "x"),
        (math.nan, "x"),
        (b"bytes", "x"),
    ],
)
def test_refusal_names_the_path(value, path):
    with pytest.raises(SerializationError) as info:
        dumps(value, "x")
    assert str(info.value).startswith(path + ":")
    assert isinstance(info.value, TypeError)


def test_unsaved_model_is_refused():
    with pytest.raises(SerializationError, match="unsaved Note"):
        dumps(Note(text="x"), "note")


@pytest.mark.parametrize(
    "text",
    ["{", '{"$jq": "pickle", "v": "x"}', '{"$jq": "datetime", "v": "yesterday"}',
     '{"$jq": "model", "v": ["nope.Model", 1]}', '{"$jq": "date", "v": 1, "extra": 2}'],
)
def test_malformed_payloads_raise_decode_error(text):
    with pytest.raises(DecodeError):
        loads(text)


@pytest.mark.django_db
def test_model_instances_travel_as_references_and_are_fetched_fresh():
    note = Note.objects.create(text="before")
    text = dumps(note)
    assert "before" not in text
    Note.objects.filter(pk=note.pk).update(text="after")
    assert loads(text).text == "after"


@pytest.mark.django_db
def test_deleted_model_instance_is_a_clear_error():
    note = Note.objects.create(text="gone")
    text = dumps(note)
    note.delete()
    with pytest.raises(DecodeError, match=r"testapp.Note with pk=\d+ no longer exists"):
        loads(text)


def nested(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_up_to_the_limit_round_trips():
    assert loads(dumps(nested(MAX_DEPTH))) == nested(MAX_DEPTH)
    assert loads(dumps({"a": nested(MAX_DEPTH - 1)})) == {"a": nested(MAX_DEPTH - 1)}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 5000])
def test_deeper_nesting_is_refused_with_its_path_not_a_recursion_error(depth):
    with pytest.raises(SerializationError, match=rf"^x\[0\]\[0\].*nested deeper than {MAX_DEPTH}"):
        dumps(nested(depth), "x")


def nested_dicts(depth):
    value = {}
    for _ in range(depth - 1):
        value = {"child": value}
    return value


def test_nested_plain_dicts_are_refused_like_lists():
    assert loads(dumps(nested_dicts(MAX_DEPTH))) == nested_dicts(MAX_DEPTH)
    with pytest.raises(SerializationError, match=rf"^x\['child'\].*nested deeper than {MAX_DEPTH}"):
        dumps(nested_dicts(500), "x")


def test_a_long_path_shows_its_ends_and_its_length():
    with pytest.raises(SerializationError) as info:
        dumps(nested(500), "add() argument 'y'")
    assert str(info.value).startswith(
        f"add() argument 'y'[0][0][0][0]...[0][0][0][0] ({MAX_DEPTH} levels): nested deeper")
    value = {"k" * 100: [1, {"ok": {2}}]}
    with pytest.raises(SerializationError) as info:
        dumps(value, "x")
    assert str(info.value).startswith(f"x['{'k' * 39}...][1]['ok']: a builtins.set cannot")


def test_a_value_that_contains_itself_is_refused():
    loop = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(SerializationError, match=r"^x\['a'\]\[0\]\['a'\].*contains itself"):
        dumps(loop, "x")


def test_an_int_too_long_for_text_is_refused():
    assert loads(dumps(10**3999)) == 10**3999
    with pytest.raises(SerializationError, match=r"^x\[0\]: an int of more than 4000 digits"):
        dumps([-(10**4000)], "x")
