"""The world as JSON, for the on-disk cache: a format whose reading cannot run code.

The cache lies at a predictable path (``~/.cache/mlm-pipeline/worlds``); a pickle there would
run whatever a planted file asks for when it is loaded. JSON is only data: it is read back into
the world's own dataclasses, led by their type hints (sets, tuples and nested classes restored),
so the worst a planted file can do is fail to load, after which the world is rebuilt.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from functools import lru_cache
from typing import Any, Callable

from mlm_pipeline.world.model import World

Decoder = Callable[[Any], Any]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(item) for item in value)
    return value


def _same(value: Any) -> Any:
    return value


@lru_cache(maxsize=None)
def _decoder(hint: Any) -> Decoder:
    """How to rebuild a value of type ``hint`` from its JSON form, worked out once per type (a
    big world has millions of values)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        fields = [(f.name, _decoder(hints[f.name])) for f in dataclasses.fields(hint) if f.init]

        def instance(value: dict) -> Any:
            return hint(**{name: decode(value[name]) for name, decode in fields if name in value})

        return instance
    if origin in (typing.Union, types.UnionType):
        (only, *others) = [arg for arg in args if arg is not type(None)]
        if others:
            return _same  # str | int and the like: JSON keeps the type
        inner = _decoder(only)
        return lambda value: None if value is None else inner(value)
    if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        inner, build = _decoder(args[0]), origin
        return (lambda value: build(value)) if inner is _same else (lambda value: build(map(inner, value)))
    if origin is tuple:
        parts = [_decoder(arg) for arg in args]
        if all(part is _same for part in parts):
            return tuple
        return lambda value: tuple(decode(item) for decode, item in zip(parts, value, strict=True))
    if origin is dict:
        inner = _decoder(args[1])
        return _same if inner is _same else (lambda value: {key: inner(item) for key, item in value.items()})
    return _same  # str, int, float, bool, bare dict: JSON's own types


def dumps(world: World) -> bytes:
    return json.dumps(_plain(world), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def loads(data: bytes) -> World:
    """The world in ``data``; a file of another shape raises (ValueError, TypeError, KeyError)."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError(f"a world is a JSON object, not {type(value).__name__}")
    return _decoder(World)(value)
