"""Strict canonical CBOR and typed records: the one encoding for everything signed or sent.

Theory of operation
-------------------
Every value this project signs, stores or sends is a *record*: a frozen, slotted dataclass that
encodes as a CBOR array ``[tag, version, field_1, ..., field_n]``. Fields are drawn from a small
profile: unsigned integers, byte strings, text strings, booleans, null, arrays and nested records.
The encoding of that profile is canonical (shortest integer and length forms, definite lengths,
no maps, no floats, no tags), so one value has exactly one encoding and a signature over the bytes
is a signature over the value.

Decoding is strict and happens in two steps:

1. :func:`decode_value` turns bytes into plain values with a *fresh* cbor2 decoder for every call
   (a reused decoder carries state between messages, CVE-2025-68131). The input size is capped
   before anything is parsed; nesting is capped (:data:`MAX_DEPTH`); indefinite lengths and
   duplicate map keys are refused; every tag is refused, the unknown ones through ``tag_hook`` and
   the ones cbor2 decodes by itself through ``semantic_decoders``; and the input must be
   canonical: re-encoding the decoded value must give the input back byte for byte, which also
   refuses trailing bytes and non-minimal lengths. (Floats, simple values and maps with text or
   byte keys are well-formed canonical CBOR and pass this step; no record accepts them.)
2. :meth:`Record.from_wire` checks the array against the record's schema (tag, version, arity, the
   type and bounds of each field, nested records recursively) and builds the dataclass through the
   same field checks a local constructor runs.

Any failure raises :class:`CodecError` with a reason that names the field; nothing else escapes
the decoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Self, TypeVar, dataclass_transform

import cbor2

__all__ = [
    "MAX_DEPTH",
    "MAX_INPUT_SIZE",
    "Bool",
    "Bytes",
    "CodecError",
    "Nested",
    "Optional",
    "Record",
    "RecordUnion",
    "Seq",
    "Spec",
    "Text",
    "UInt",
    "decode_value",
    "encode_value",
    "record",
    "wire",
]

MAX_DEPTH = 16
"""Deepest nesting of arrays accepted from outside. Our records nest at most five deep."""

MAX_INPUT_SIZE = 64 * 1024 * 1024
"""Default cap on the size of one encoded value; transports apply their own, smaller caps."""

# Tags that cbor2 decodes itself, without consulting ``tag_hook`` (probed against cbor2 6.2; the
# test suite sweeps the tag space so that a new built-in tag in a later cbor2 is noticed).
_BUILTIN_TAGS = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
    1004, 43000, 55799,
)  # fmt: skip


class CodecError(ValueError):
    """A value could not be encoded or decoded under the strict profile.

    ``reason`` says what was wrong and ``where`` names the field path (``"Block.header.height"``),
    empty when the problem is in the bytes themselves.
    """

    def __init__(self, reason: str, where: str = "") -> None:
        self.reason = reason
        self.where = where
        super().__init__(f"{where}: {reason}" if where else reason)


def _refuse_tag(tag: object, _immutable: bool) -> None:
    number = getattr(tag, "tag", "?")
    raise CodecError(f"CBOR tag {number} is not allowed")


def _refuse_builtin_tag(_value: object, _immutable: bool) -> None:
    raise CodecError("CBOR tags are not allowed")


_REFUSE_BUILTINS: Mapping[int, Callable[[object, bool], None]] = dict.fromkeys(
    _BUILTIN_TAGS, _refuse_builtin_tag
)


def encode_value(value: Any) -> bytes:
    """Encode a plain value (int, bytes, str, bool, None, list or tuple) canonically."""
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode: {exc}") from None


def decode_value(data: bytes | bytearray | memoryview, *, max_size: int = MAX_INPUT_SIZE) -> Any:
    """Decode one canonical CBOR value from ``data`` under the strict profile.

    Raises :class:`CodecError` for anything that is too large, too deep, tagged, indefinite,
    duplicated, non-canonical, truncated or followed by trailing bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    size = len(data)
    if size > max_size:
        raise CodecError(f"input of {size} bytes exceeds the limit of {max_size}")
    if size == 0:
        raise CodecError("empty input")
    raw = bytes(data)
    try:
        value = cbor2.loads(
            raw,
            tag_hook=_refuse_tag,
            semantic_decoders=_REFUSE_BUILTINS,
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
    except CodecError:
        raise
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, IndexError, KeyError,
            RecursionError, MemoryError) as exc:  # fmt: skip
        cause = exc.__cause__ if isinstance(exc.__cause__, CodecError) else None
        if cause is not None:
            raise cause from None
        raise CodecError(f"malformed CBOR: {exc}") from None
    try:
        again = cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"value outside the strict profile: {exc}") from None
    if again != raw:
        if raw.startswith(again):
            raise CodecError(f"{size - len(again)} trailing byte(s) after the value")
        raise CodecError("encoding is not canonical")
    return value


# --------------------------------------------------------------------------------------------
# Field specifications


class Spec:
    """How one field is checked, normalised and put on the wire."""

    __slots__ = ()

    def check(self, value: Any, where: str) -> Any:
        """Validate a value given to a constructor; return it normalised (lists become tuples)."""
        raise NotImplementedError

    def from_wire(self, value: Any, where: str) -> Any:
        """Validate a decoded plain value and turn it into the field's Python value."""
        return self.check(value, where)

    def to_wire(self, value: Any) -> Any:
        """The plain value that encodes this field."""
        return value

    def describe(self) -> str:
        raise NotImplementedError


class UInt(Spec):
    """An unsigned integer in ``[minimum, maximum]`` (booleans are not integers here)."""

    __slots__ = ("maximum", "minimum")

    def __init__(self, maximum: int = 2**64 - 1, *, minimum: int = 0) -> None:
        if not 0 <= minimum <= maximum <= 2**64 - 1:
            raise ValueError("UInt bounds must satisfy 0 <= minimum <= maximum < 2**64")
        self.minimum = minimum
        self.maximum = maximum

    def check(self, value: Any, where: str) -> int:
        if type(value) is not int:
            raise CodecError(f"expected an unsigned integer, got {type(value).__name__}", where)
        if not self.minimum <= value <= self.maximum:
            raise CodecError(f"{value} is outside [{self.minimum}, {self.maximum}]", where)
        return value

    def describe(self) -> str:
        return f"uint[{self.minimum}..{self.maximum}]"


class Bytes(Spec):
    """A byte string of ``size`` bytes exactly, or of ``min_size`` to ``max_size`` bytes."""

    __slots__ = ("max_size", "min_size")

    def __init__(
        self, size: int | None = None, *, min_size: int = 0, max_size: int | None = None
    ) -> None:
        if size is not None:
            min_size = max_size = size
        if max_size is None:
            raise ValueError("Bytes needs an exact size or a max_size")
        self.min_size = min_size
        self.max_size = max_size

    def check(self, value: Any, where: str) -> bytes:
        if type(value) is not bytes:
            if isinstance(value, bytearray | memoryview):
                value = bytes(value)
            else:
                raise CodecError(f"expected bytes, got {type(value).__name__}", where)
        n = len(value)
        if not self.min_size <= n <= self.max_size:
            if self.min_size == self.max_size:
                raise CodecError(f"expected {self.min_size} bytes, got {n}", where)
            raise CodecError(f"{n} bytes is outside [{self.min_size}, {self.max_size}]", where)
        return value

    def describe(self) -> str:
        if self.min_size == self.max_size:
            return f"bytes[{self.min_size}]"
        return f"bytes[{self.min_size}..{self.max_size}]"


class Text(Spec):
    """A text string of ``min_len`` to ``max_len`` characters, optionally one of ``choices``."""

    __slots__ = ("choices", "max_len", "min_len")

    def __init__(
        self, max_len: int = 256, *, min_len: int = 0, choices: Iterable[str] | None = None
    ) -> None:
        self.min_len = min_len
        self.max_len = max_len
        self.choices = frozenset(choices) if choices is not None else None

    def check(self, value: Any, where: str) -> str:
        if type(value) is not str:
            raise CodecError(f"expected text, got {type(value).__name__}", where)
        if not self.min_len <= len(value) <= self.max_len:
            raise CodecError(
                f"text of {len(value)} characters is outside [{self.min_len}, {self.max_len}]",
                where,
            )
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(sorted(self.choices))
            raise CodecError(f"{value!r} is not one of: {allowed}", where)
        return value

    def describe(self) -> str:
        if self.choices is not None:
            return "text{" + ",".join(sorted(self.choices)) + "}"
        return f"text[{self.min_len}..{self.max_len}]"


class Bool(Spec):
    __slots__ = ()

    def check(self, value: Any, where: str) -> bool:
        if type(value) is not bool:
            raise CodecError(f"expected a boolean, got {type(value).__name__}", where)
        return value

    def describe(self) -> str:
        return "bool"


class Optional(Spec):
    """Either null or a value of ``inner``."""

    __slots__ = ("inner",)

    def __init__(self, inner: Spec) -> None:
        self.inner = inner

    def check(self, value: Any, where: str) -> Any:
        return None if value is None else self.inner.check(value, where)

    def from_wire(self, value: Any, where: str) -> Any:
        return None if value is None else self.inner.from_wire(value, where)

    def to_wire(self, value: Any) -> Any:
        return None if value is None else self.inner.to_wire(value)

    def describe(self) -> str:
        return f"null|{self.inner.describe()}"


class Seq(Spec):
    """An array of up to ``max_len`` items of ``item``; a tuple in Python."""

    __slots__ = ("item", "max_len", "min_len")

    def __init__(self, item: Spec, *, max_len: int, min_len: int = 0) -> None:
        self.item = item
        self.min_len = min_len
        self.max_len = max_len

    def _length(self, value: Any, where: str) -> None:
        if not self.min_len <= len(value) <= self.max_len:
            raise CodecError(
                f"{len(value)} items is outside [{self.min_len}, {self.max_len}]", where
            )

    def check(self, value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, tuple | list):
            raise CodecError(f"expected a sequence, got {type(value).__name__}", where)
        self._length(value, where)
        item = self.item
        if type(item) is Bytes:
            # The common arrays of byte strings: check in one pass, name the item only on failure.
            lo, hi = item.min_size, item.max_size
            for i, v in enumerate(value):
                if type(v) is not bytes or not lo <= len(v) <= hi:
                    item.check(v, f"{where}[{i}]")
            return value if type(value) is tuple else tuple(value)
        if type(item) is UInt:
            # And of integers (sequence numbers, positions): no per-item name unless one fails.
            lo, hi = item.minimum, item.maximum
            for i, v in enumerate(value):
                if type(v) is not int or not lo <= v <= hi:
                    item.check(v, f"{where}[{i}]")
            return value if type(value) is tuple else tuple(value)
        check = item.check
        return tuple([check(v, f"{where}[{i}]") for i, v in enumerate(value)])

    def from_wire(self, value: Any, where: str) -> tuple[Any, ...]:
        if type(value) is not list:
            raise CodecError(f"expected an array, got {type(value).__name__}", where)
        self._length(value, where)
        item = self.item
        # Fast paths for the common arrays of byte strings and of integers.
        if type(item) is Bytes:
            lo, hi = item.min_size, item.max_size
            for i, v in enumerate(value):
                if type(v) is not bytes or not lo <= len(v) <= hi:
                    item.check(v, f"{where}[{i}]")
            return tuple(value)
        if type(item) is UInt:
            lo, hi = item.minimum, item.maximum
            for i, v in enumerate(value):
                if type(v) is not int or not lo <= v <= hi:
                    item.check(v, f"{where}[{i}]")
            return tuple(value)
        conv = item.from_wire
        return tuple([conv(v, f"{where}[{i}]") for i, v in enumerate(value)])

    def to_wire(self, value: Any) -> list[Any]:
        if type(self.item) in (Bytes, UInt, Text, Bool):
            return list(value)
        conv = self.item.to_wire
        return [conv(v) for v in value]

    def describe(self) -> str:
        return f"[{self.item.describe()}; {self.min_len}..{self.max_len}]"


class Nested(Spec):
    """A field holding another record."""

    __slots__ = ("cls",)

    def __init__(self, cls: type[Record]) -> None:
        self.cls = cls

    def check(self, value: Any, where: str) -> Record:
        if not isinstance(value, self.cls):
            raise CodecError(f"expected {self.cls.__name__}, got {type(value).__name__}", where)
        return value

    def from_wire(self, value: Any, where: str) -> Record:
        return self.cls.from_wire(value, where)

    def to_wire(self, value: Any) -> list[Any]:
        return value.to_wire()

    def describe(self) -> str:
        return self.cls.__name__


def wire(spec: Spec, **kwargs: Any) -> Any:
    """Declare a record field with its wire specification (a ``dataclasses.field``)."""
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["spec"] = spec
    return dataclasses.field(metadata=metadata, **kwargs)


# --------------------------------------------------------------------------------------------
# Records


R = TypeVar("R", bound="Record")


class Record:
    """Base of every encoded type. Subclasses are made with the :func:`record` decorator.

    Subclasses may override :meth:`_check` for rules that span several fields; it runs after the
    per-field checks, both for local construction and for decoding.
    """

    __slots__ = ()

    TAG: ClassVar[int]
    VERSION: ClassVar[int]
    SCHEMA: ClassVar[tuple[tuple[str, Spec], ...]]

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field_name, spec in self.SCHEMA:
            value = getattr(self, field_name)
            normal = spec.check(value, f"{name}.{field_name}")
            if normal is not value:
                object.__setattr__(self, field_name, normal)
        self._check()

    def _check(self) -> None:
        """Cross-field rules; raise :class:`CodecError` when broken."""

    # -- encoding

    def to_wire(self) -> list[Any]:
        """The plain array ``[tag, version, fields...]`` that encodes this record."""
        out: list[Any] = [self.TAG, self.VERSION]
        for field_name, spec in self.SCHEMA:
            out.append(spec.to_wire(getattr(self, field_name)))
        return out

    def encode(self) -> bytes:
        """Canonical CBOR bytes of this record."""
        return encode_value(self.to_wire())

    # -- decoding

    @classmethod
    def from_wire(cls, value: Any, where: str = "") -> Self:
        """Build a record from its decoded plain array, checking everything."""
        where = where or cls.__name__
        if type(value) is not list:
            raise CodecError(
                f"expected an array for {cls.__name__}, got {type(value).__name__}", where
            )
        schema = cls.SCHEMA
        if len(value) != len(schema) + 2:
            raise CodecError(
                f"{cls.__name__} has {len(schema) + 2} elements, got {len(value)}", where
            )
        if value[0] != cls.TAG or type(value[0]) is not int:
            raise CodecError(f"expected tag {cls.TAG} ({cls.__name__}), got {value[0]!r}", where)
        if value[1] != cls.VERSION or type(value[1]) is not int:
            raise CodecError(
                f"unsupported {cls.__name__} version {value[1]!r} (this build reads {cls.VERSION})",
                where,
            )
        # Each field's ``from_wire`` applies the same checks as the constructor's ``check``, so the
        # record is built directly rather than checked a second time, then the cross-field rules
        # run as they do for a local construction.
        made = object.__new__(cls)
        setter = object.__setattr__
        for (field_name, spec), item in zip(schema, value[2:], strict=True):
            setter(made, field_name, spec.from_wire(item, f"{where}.{field_name}"))
        try:
            made._check()
        except CodecError as exc:
            if exc.where or not where:
                raise
            raise CodecError(exc.reason, where) from None
        return made

    @classmethod
    def from_checked(cls, **fields: Any) -> Self:
        """Build from field values that are already valid (decoded, or computed from decoded
        ones), running only the cross-field rules: for hot paths, never for outside input."""
        made = object.__new__(cls)
        setter = object.__setattr__
        for field_name, _ in cls.SCHEMA:
            setter(made, field_name, fields[field_name])
        made._check()
        return made

    @classmethod
    def decode(
        cls, data: bytes | bytearray | memoryview, *, max_size: int = MAX_INPUT_SIZE
    ) -> Self:
        """Decode canonical bytes into this record type; raises :class:`CodecError`."""
        return cls.from_wire(decode_value(data, max_size=max_size))


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(wire,))
def record(*, tag: int, version: int = 1) -> Callable[[type[R]], type[R]]:
    """Make ``cls`` a frozen, slotted, keyword-only record with the given wire tag and version."""

    if not 0 <= tag < 2**16:
        raise ValueError("record tags are 16-bit")

    def wrap(cls: type[R]) -> type[R]:
        made = dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(cls)
        schema = []
        for f in dataclasses.fields(made):
            spec = f.metadata.get("spec")
            if not isinstance(spec, Spec):
                raise TypeError(f"{cls.__name__}.{f.name} needs a wire spec: use wire(...)")
            schema.append((f.name, spec))
        made.TAG = tag
        made.VERSION = version
        made.SCHEMA = tuple(schema)
        return made

    return wrap


class RecordUnion:
    """Decodes any of several record types, dispatching on the tag.

    Each protocol builds one for its messages; there is no global registry.
    """

    __slots__ = ("_by_tag", "max_size")

    def __init__(self, classes: Sequence[type[Record]], *, max_size: int = MAX_INPUT_SIZE) -> None:
        by_tag: dict[int, type[Record]] = {}
        for cls in classes:
            if cls.TAG in by_tag:
                raise ValueError(
                    f"tag {cls.TAG} used by both {by_tag[cls.TAG].__name__} and {cls.__name__}"
                )
            by_tag[cls.TAG] = cls
        self._by_tag = by_tag
        self.max_size = max_size

    @property
    def classes(self) -> tuple[type[Record], ...]:
        return tuple(self._by_tag.values())

    def from_wire(self, value: Any) -> Record:
        if type(value) is not list or len(value) < 2 or type(value[0]) is not int:
            raise CodecError("expected a tagged record array")
        cls = self._by_tag.get(value[0])
        if cls is None:
            raise CodecError(f"unknown record tag {value[0]}")
        return cls.from_wire(value)

    def decode(self, data: bytes | bytearray | memoryview) -> Record:
        return self.from_wire(decode_value(data, max_size=self.max_size))
