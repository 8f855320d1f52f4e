"""The metadata-backed extension: typed fields that live inside an object's `metadata`.

A subclass of a wire model (an Assistant or a Thread) declares extra fields with `meta_field()`.
They behave like ordinary typed attributes in Python, but on the wire and in the store they are
encoded as strings inside `metadata`, so every client of the Assistants API (the SDK included)
sees a normal object, and our code gets its typed fields back on retrieve and list.

OpenAI's limits hold for everything inside `metadata`, declared fields and free keys together:
16 keys, keys of at most 64 characters, values of at most 512 characters. A class that declares
more fields than fit fails when it is defined; a value that does not fit fails when it is set.
"""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, model_validator

from ..exceptions import InvalidRequestError, MetadataDefinitionError, MetadataError

MAX_KEYS = 16
MAX_KEY_LENGTH = 64
MAX_VALUE_LENGTH = 512

_META_MARK = "in_metadata"


def meta_field(default: Any = ..., *, key: str | None = None, description: str | None = None) -> Any:
    """Declare a field stored in `metadata` under `key` (the field name by default)."""
    extra: dict[str, Any] = {_META_MARK: key or True}
    return Field(default=default, description=description, json_schema_extra=extra)


def validate_metadata(metadata: Mapping[str, Any] | None, *, param: str = "metadata") -> dict[str, str]:
    """Check OpenAI's metadata limits and return a plain `dict[str, str]`.

    Raises `MetadataError` naming the offending key, so the caller can tell the user exactly
    which entry to shorten or remove.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise MetadataError("metadata must be an object of string keys and string values.", param=param)
    if len(metadata) > MAX_KEYS:
        raise MetadataError(
            f"Invalid '{param}': too many keys ({len(metadata)}); at most {MAX_KEYS} are allowed.",
            param=param,
        )
    clean: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise MetadataError(f"Invalid '{param}': keys must be non-empty strings.", param=param)
        if len(key) > MAX_KEY_LENGTH:
            raise MetadataError(
                f"Invalid '{param}.{key[:20]}...': key is {len(key)} characters long; "
                f"the maximum is {MAX_KEY_LENGTH}.",
                param=f"{param}.{key}",
            )
        if not isinstance(value, str):
            raise MetadataError(
                f"Invalid '{param}.{key}': expected a string value, got {type(value).__name__}.",
                param=f"{param}.{key}",
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise MetadataError(
                f"Invalid '{param}.{key}': value is {len(value)} characters long; "
                f"the maximum is {MAX_VALUE_LENGTH}.",
                param=f"{param}.{key}",
            )
        clean[key] = value
    return clean


def _encode(value: Any) -> str | None:
    """Encode a typed value as the metadata string it is stored as (None means: no key)."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _is_scalar(annotation: Any) -> bool:
    """Whether the annotation decodes from a bare string (str, numbers, bool, enums, literals).

    Containers such as `dict[str, int]` or `list[str]` are stored as JSON and are not scalar.
    """
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        candidates = [a for a in get_args(annotation) if a is not type(None)]
    elif origin is Literal:
        return True
    else:
        candidates = [annotation]
    for candidate in candidates:
        if candidate in (str, int, float, bool):
            continue
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            continue
        if get_origin(candidate) is Literal:
            continue
        return False
    return True


class MetadataBacked(BaseModel):
    """Base for wire models whose subclasses may keep typed fields inside `metadata`."""

    metadata: dict[str, str] = Field(default_factory=dict)

    __metadata_fields__: ClassVar[dict[str, str]] = {}
    """Field name to metadata key, for the fields this class stores in `metadata`."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        fields: dict[str, str] = {}
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and _META_MARK in extra:
                marker = extra[_META_MARK]
                fields[name] = marker if isinstance(marker, str) else name
        for name, key in fields.items():
            if len(key) > MAX_KEY_LENGTH:
                raise MetadataDefinitionError(
                    f"{cls.__name__}.{name}: metadata key {key!r} is longer than {MAX_KEY_LENGTH} characters."
                )
        if len(fields) > MAX_KEYS:
            raise MetadataDefinitionError(
                f"{cls.__name__} declares {len(fields)} metadata fields; metadata holds at most {MAX_KEYS} keys."
            )
        cls.__metadata_fields__ = fields

    @model_validator(mode="before")
    @classmethod
    def _lift_metadata_fields(cls, data: Any) -> Any:
        """On parse, read declared fields out of `metadata` unless they were given directly."""
        if not cls.__metadata_fields__ or not isinstance(data, dict):
            return data
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            return data
        data = dict(data)
        for name, key in cls.__metadata_fields__.items():
            if name in data or key not in metadata:
                continue
            raw = metadata[key]
            annotation = cls.model_fields[name].annotation
            try:
                data[name] = raw if _is_scalar(annotation) else json.loads(raw)
            except (ValueError, TypeError) as exc:
                raise InvalidRequestError(
                    f"Invalid 'metadata.{key}': cannot be read as {name} ({exc}).",
                    param=f"metadata.{key}",
                ) from exc
        return data

    @model_validator(mode="after")
    def _sink_metadata_fields(self) -> Self:
        """Keep `metadata` in step with the declared fields and enforce the limits on the whole."""
        if self.__metadata_fields__:
            merged = dict(self.metadata)
            for name, key in self.__metadata_fields__.items():
                encoded = _encode(getattr(self, name))
                if encoded is None:
                    merged.pop(key, None)
                else:
                    merged[key] = encoded
            object.__setattr__(self, "metadata", validate_metadata(merged))
        else:
            object.__setattr__(self, "metadata", validate_metadata(self.metadata))
        return self

    def wire(self) -> dict[str, Any]:
        """The object as the Assistants API shows it: declared fields live only in `metadata`."""
        return self.model_dump(mode="json", exclude=set(self.__metadata_fields__))

    @classmethod
    def metadata_filter(cls, **fields: Any) -> dict[str, str]:
        """Translate typed field values into the `metadata` key/value pairs to filter a list by."""
        result: dict[str, str] = {}
        for name, value in fields.items():
            if name not in cls.__metadata_fields__:
                raise InvalidRequestError(f"{cls.__name__} has no metadata field {name!r}.", param=name)
            encoded = _encode(value)
            if encoded is not None:
                result[cls.__metadata_fields__[name]] = encoded
        return result

    def with_updates(self, **changes: Any) -> Self:
        """A validated copy with some fields changed (metadata limits are checked again)."""
        data = self.model_dump()
        data.update(changes)
        if "metadata" not in changes:
            data["metadata"] = {k: v for k, v in self.metadata.items()}
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "body"
            raise InvalidRequestError(f"Invalid '{field}': {first['msg']}.", param=field) from exc

