"""The metadata-backed extension: typed fields stored as strings inside an object's `metadata`."""

from __future__ import annotations

import enum
from typing import Any, TypeVar

import pytest

from assistants.exceptions import InvalidRequestError, MetadataDefinitionError, MetadataError
from assistants.ids import new_id
from assistants.types import (
    Assistant,
    ContextMode,
    MetadataBacked,
    Session,
    Thread,
    meta_field,
    validate_metadata,
)
from assistants.types.metadata import MAX_KEY_LENGTH, MAX_KEYS, MAX_VALUE_LENGTH

M = TypeVar("M", bound=MetadataBacked)


class Colour(enum.Enum):
    red = "red"
    blue = "blue"


class RichSession(Session):
    """A Session with a bool, a plain enum and JSON-encoded (dict and list) fields besides its own."""

    pinned: bool = meta_field(False)
    colour: Colour = meta_field(Colour.red)
    settings: dict[str, Any] = meta_field({})
    labels: list[int] | None = meta_field(None)


def _session(**overrides: Any) -> Session:
    values: dict[str, Any] = {
        "id": new_id("thread"),
        "created_at": 1_700_000_000,
        "user": "user_1",
        "assistant_id": new_id("assistant"),
    }
    values.update(overrides)
    return Session(**values)


def _roundtrip(obj: M) -> tuple[Thread, M]:
    """Send the object over the wire as a plain thread, then read it back as its own class."""
    wire = obj.wire()
    thread = Thread.model_validate(wire)
    return thread, type(obj).model_validate(thread.model_dump())


# Round trips ---------------------------------------------------------------------------------


def test_session_round_trip_preserves_typed_values() -> None:
    session = RichSession(
        id=new_id("thread"),
        created_at=1_700_000_000,
        user="user_42",
        assistant_id="asst_abc",
        title="Quarterly report",
        context_mode=ContextMode.last_n,
        context_n=7,
        model="gpt-4o-mini",
        temperature=0.3,
        updated_at=1_700_000_123,
        pinned=True,
        colour=Colour.blue,
        settings={"nested": {"a": [1, 2, 3]}, "flag": False, "name": "x"},
        labels=[3, 1, 2],
    )
    thread, back = _roundtrip(session)

    # On the wire it is an ordinary thread: the typed fields exist only as metadata strings.
    wire = session.wire()
    for name in RichSession.__metadata_fields__:
        assert name not in wire
    assert type(thread) is Thread
    assert thread.metadata == {
        "user": "user_42",
        "assistant_id": "asst_abc",
        "title": "Quarterly report",
        "context_mode": "last_n",
        "context_n": "7",
        "model": "gpt-4o-mini",
        "temperature": "0.3",
        "updated_at": "1700000123",
        "pinned": "true",
        "colour": "blue",
        "settings": '{"flag":false,"name":"x","nested":{"a":[1,2,3]}}',
        "labels": "[3,1,2]",
    }
    assert all(isinstance(v, str) for v in thread.metadata.values())

    assert back == session
    assert back.user == "user_42"
    assert back.context_mode is ContextMode.last_n
    assert type(back.context_n) is int and back.context_n == 7
    assert type(back.temperature) is float and back.temperature == 0.3
    assert type(back.updated_at) is int and back.updated_at == 1_700_000_123
    assert back.pinned is True
    assert back.colour is Colour.blue
    assert back.settings == {"nested": {"a": [1, 2, 3]}, "flag": False, "name": "x"}
    assert back.labels == [3, 1, 2]
    assert back.summary is None and "summary" not in back.metadata


def test_plain_session_round_trip_with_defaults() -> None:
    session = _session()
    thread, back = _roundtrip(session)
    assert back == session
    assert back.title == "New chat"
    assert back.context_mode is ContextMode.full
    assert back.context_n == 20
    assert back.model is None and back.temperature is None
    # None-valued fields occupy no key.
    assert set(thread.metadata) == {"user", "assistant_id", "title", "context_mode", "context_n"}


def test_false_and_zero_values_survive_round_trip() -> None:
    session = RichSession(
        id=new_id("thread"),
        created_at=1,
        user="u",
        assistant_id="a",
        context_n=0,
        temperature=0.0,
        pinned=False,
        settings={},
        labels=[],
    )
    thread, back = _roundtrip(session)
    assert thread.metadata["pinned"] == "false"
    assert thread.metadata["labels"] == "[]"
    assert back == session
    assert back.pinned is False
    assert back.context_n == 0 and type(back.context_n) is int
    assert back.temperature == 0.0 and type(back.temperature) is float
    assert back.labels == []


def test_subclass_with_dict_of_int_and_list_of_str_fields_round_trips() -> None:
    class Tagged(Thread):
        counts: dict[str, int] = meta_field({})
        tags: list[str] = meta_field([])
        owner: str = meta_field("nobody", key="owned_by")

    obj = Tagged(id=new_id("thread"), created_at=5, counts={"a": 1, "b": 22}, tags=["x", "y z"])
    assert Tagged.__metadata_fields__ == {"counts": "counts", "tags": "tags", "owner": "owned_by"}
    assert obj.metadata == {"counts": '{"a":1,"b":22}', "tags": '["x","y z"]', "owned_by": "nobody"}

    thread = Thread.model_validate(obj.wire())
    back = Tagged.model_validate(thread.model_dump())
    assert back == obj
    assert back.counts == {"a": 1, "b": 22}
    assert all(type(v) is int for v in back.counts.values())
    assert back.tags == ["x", "y z"]
    assert back.owner == "nobody"


def test_undecodable_json_field_is_an_invalid_request_naming_the_key() -> None:
    with pytest.raises(InvalidRequestError) as info:
        RichSession.model_validate(
            {
                "id": "thread_1",
                "created_at": 1,
                "metadata": {"user": "u", "assistant_id": "a", "settings": "{not json"},
            }
        )
    assert info.value.param == "metadata.settings"
    assert "metadata.settings" in info.value.message


def test_free_metadata_keys_coexist_with_declared_fields() -> None:
    session = _session(metadata={"project": "apollo", "lang": "fr"}, title="Hi")
    assert session.metadata["project"] == "apollo"
    assert session.metadata["lang"] == "fr"
    assert session.metadata["title"] == "Hi"
    thread, back = _roundtrip(session)
    assert thread.metadata["project"] == "apollo"
    assert back.metadata == session.metadata
    assert back.title == "Hi"

    # Changing a declared field keeps the free keys; changing the free keys keeps the declared ones.
    retitled = back.with_updates(title="Bye")
    assert retitled.metadata["project"] == "apollo" and retitled.metadata["title"] == "Bye"
    replaced = back.with_updates(metadata={"other": "1"})
    assert replaced.metadata["other"] == "1"
    assert "project" not in replaced.metadata
    assert replaced.metadata["title"] == "Hi" and replaced.metadata["user"] == session.user


def test_declared_field_given_directly_wins_over_stale_metadata() -> None:
    session = _session(title="Fresh", metadata={"title": "Stale"})
    assert session.title == "Fresh"
    assert session.metadata["title"] == "Fresh"


# Limits --------------------------------------------------------------------------------------


def test_limits_are_openais() -> None:
    assert (MAX_KEYS, MAX_KEY_LENGTH, MAX_VALUE_LENGTH) == (16, 64, 512)


def test_sixteen_keys_accepted_seventeen_rejected() -> None:
    sixteen = {f"k{i}": "v" for i in range(16)}
    assert validate_metadata(sixteen) == sixteen
    assert Thread(id="thread_1", created_at=1, metadata=sixteen).metadata == sixteen

    seventeen = {f"k{i}": "v" for i in range(17)}
    with pytest.raises(MetadataError) as info:
        validate_metadata(seventeen)
    assert "17" in info.value.message
    assert info.value.param == "metadata"
    with pytest.raises(MetadataError) as info:
        Thread(id="thread_1", created_at=1, metadata=seventeen)
    assert "17" in info.value.message


def test_declared_and_free_keys_count_together() -> None:
    # A session always holds 5 declared keys (user, assistant_id, title, context_mode, context_n).
    _session(metadata={f"free{i}": "v" for i in range(11)})
    with pytest.raises(MetadataError) as info:
        _session(metadata={f"free{i}": "v" for i in range(12)})
    assert "17" in info.value.message


def test_key_of_64_accepted_65_rejected() -> None:
    key64 = "k" * 64
    assert validate_metadata({key64: "v"}) == {key64: "v"}
    key65 = "a" * 30 + "b" * 35
    with pytest.raises(MetadataError) as info:
        validate_metadata({key65: "v"})
    assert info.value.param == f"metadata.{key65}"
    assert key65[:20] in info.value.message
    assert "65" in info.value.message
    with pytest.raises(MetadataError):
        Assistant(id="asst_1", created_at=1, model="m", metadata={key65: "v"})


def test_value_of_512_accepted_513_rejected() -> None:
    assert validate_metadata({"note": "x" * 512}) == {"note": "x" * 512}
    with pytest.raises(MetadataError) as info:
        validate_metadata({"ok": "fine", "note": "x" * 513})
    assert info.value.param == "metadata.note"
    assert "'metadata.note'" in info.value.message
    assert "513" in info.value.message


def test_non_string_value_and_empty_key_rejected() -> None:
    with pytest.raises(MetadataError) as info:
        validate_metadata({"n": 3})  # type: ignore[dict-item]
    assert info.value.param == "metadata.n"
    with pytest.raises(MetadataError):
        validate_metadata({"": "v"})
    with pytest.raises(MetadataError):
        validate_metadata(["a"])  # type: ignore[arg-type]
    assert validate_metadata(None) == {}


def test_declared_value_encoding_over_512_rejected_naming_the_key() -> None:
    assert _session(title="t" * 512).metadata["title"] == "t" * 512
    with pytest.raises(MetadataError) as info:
        _session(title="t" * 513)
    assert info.value.param == "metadata.title"
    assert "metadata.title" in info.value.message

    # A JSON value whose encoding (not its Python size) passes the limit.
    with pytest.raises(MetadataError) as info:
        RichSession(
            id="thread_1", created_at=1, user="u", assistant_id="a", labels=list(range(200))
        )
    assert info.value.param == "metadata.labels"


def test_declared_key_alias_named_in_errors() -> None:
    class Aliased(Thread):
        note: str = meta_field("", key="n")

    with pytest.raises(MetadataError) as info:
        Aliased(id="thread_1", created_at=1, note="z" * 600)
    assert info.value.param == "metadata.n"


# Class definition ----------------------------------------------------------------------------


def test_sixteen_declared_fields_allowed_seventeen_fail_at_definition() -> None:
    sixteen = {f"f{i}": str | None for i in range(16)}
    ns16: dict[str, Any] = {"__annotations__": sixteen, **{n: meta_field(None) for n in sixteen}}
    Sixteen = type("Sixteen", (Thread,), ns16)
    assert len(Sixteen.__metadata_fields__) == 16

    seventeen = {f"f{i}": str | None for i in range(17)}
    ns17: dict[str, Any] = {
        "__annotations__": seventeen,
        **{n: meta_field(None) for n in seventeen},
    }
    with pytest.raises(MetadataDefinitionError) as info:
        type("Seventeen", (Thread,), ns17)
    assert "17" in str(info.value)
    assert "Seventeen" in str(info.value)


def test_inherited_fields_count_towards_the_limit() -> None:
    # Session declares 10; 7 more make 17.
    extra = {f"x{i}": str | None for i in range(7)}
    ns: dict[str, Any] = {"__annotations__": extra, **{n: meta_field(None) for n in extra}}
    with pytest.raises(MetadataDefinitionError):
        type("TooMuchSession", (Session,), ns)


def test_declared_key_longer_than_64_fails_at_definition() -> None:
    class Ok(Thread):
        fine: str | None = meta_field(None, key="k" * 64)

    assert Ok.__metadata_fields__ == {"fine": "k" * 64}

    with pytest.raises(MetadataDefinitionError) as info:

        class Bad(Thread):
            long: str | None = meta_field(None, key="k" * 65)

    assert "Bad.long" in str(info.value)

    long_name = "n" * 65
    with pytest.raises(MetadataDefinitionError):
        type(
            "BadName",
            (Thread,),
            {"__annotations__": {long_name: str | None}, long_name: meta_field(None)},
        )


def test_definition_error_is_a_type_error() -> None:
    assert issubclass(MetadataDefinitionError, TypeError)
    assert not issubclass(MetadataDefinitionError, InvalidRequestError)


# with_updates, metadata_filter, None ---------------------------------------------------------


def test_with_updates_revalidates() -> None:
    session = _session()
    updated = session.with_updates(context_mode="summary", context_n="5", temperature=1)
    assert updated.context_mode is ContextMode.summary
    assert updated.context_n == 5 and type(updated.context_n) is int
    assert updated.temperature == 1.0 and type(updated.temperature) is float
    assert updated.metadata["context_mode"] == "summary"
    assert updated.metadata["context_n"] == "5"
    assert updated.metadata["temperature"] == "1.0"
    assert session.context_mode is ContextMode.full  # The original is untouched.

    with pytest.raises(MetadataError) as info:
        session.with_updates(title="t" * 513)
    assert info.value.param == "metadata.title"

    with pytest.raises(MetadataError):
        session.with_updates(metadata={f"k{i}": "v" for i in range(12)})

    with pytest.raises(InvalidRequestError) as bad:
        session.with_updates(context_n="many")
    assert bad.value.param == "context_n"
    with pytest.raises(InvalidRequestError) as bad:
        session.with_updates(context_mode="sometimes")
    assert bad.value.param == "context_mode"


def test_none_removes_the_key() -> None:
    session = _session(model="gpt-4o", temperature=0.5, summary="so far")
    assert session.metadata["model"] == "gpt-4o"
    cleared = session.with_updates(model=None, summary=None)
    assert cleared.model is None and cleared.summary is None
    assert "model" not in cleared.metadata
    assert "summary" not in cleared.metadata
    assert cleared.metadata["temperature"] == "0.5"
    _, back = _roundtrip(cleared)
    assert back.model is None and back.summary is None and back.temperature == 0.5


def test_metadata_filter_translates_typed_values() -> None:
    assert Session.metadata_filter(user="u1") == {"user": "u1"}
    assert Session.metadata_filter(
        context_mode=ContextMode.last_n, context_n=5, temperature=0.25
    ) == {
        "context_mode": "last_n",
        "context_n": "5",
        "temperature": "0.25",
    }
    assert RichSession.metadata_filter(pinned=True, colour=Colour.blue, labels=[1, 2]) == {
        "pinned": "true",
        "colour": "blue",
        "labels": "[1,2]",
    }
    # None asks for nothing.
    assert Session.metadata_filter(model=None, user="u") == {"user": "u"}

    class Aliased(Thread):
        note: str = meta_field("", key="n")

    assert Aliased.metadata_filter(note="x") == {"n": "x"}

    # The filter's strings are exactly what a stored object carries.
    session = RichSession(
        id="thread_1", created_at=1, user="u", assistant_id="a", pinned=True, context_n=5
    )
    wanted = RichSession.metadata_filter(pinned=True, context_n=5, user="u")
    assert wanted.items() <= session.metadata.items()


def test_metadata_filter_rejects_unknown_names() -> None:
    with pytest.raises(InvalidRequestError) as info:
        Session.metadata_filter(colour="red")
    assert info.value.param == "colour"
    assert "colour" in info.value.message
    with pytest.raises(InvalidRequestError):
        Thread.metadata_filter(user="u")
