"""The converter's KV list: insertion order kept, as llama.cpp's writer keeps it.

A key added twice keeps its first position and takes the last value; empty strings and
empty arrays are skipped; array item types are inferred from the first item (str ->
STRING, float -> FLOAT32, bool -> BOOL, int -> INT32), as the reference writer does.
"""

from __future__ import annotations

from typing import Any

from gguf import GGUFValueType

from modelkit.gguf_file import KV

T = GGUFValueType


class KVList:
    def __init__(self) -> None:
        self._items: dict[str, KV] = {}

    def add(self, key: str, value: Any, vtype: GGUFValueType) -> None:
        if vtype == T.STRING and value == "":
            return
        self._items[key] = KV(key, value, vtype)

    def add_array(self, key: str, values: list[Any]) -> None:
        if not values:
            return
        first = values[0]
        if isinstance(first, (str, bytes, bytearray)):
            sub = T.STRING
        elif isinstance(first, float):
            sub = T.FLOAT32
        elif isinstance(first, bool):
            sub = T.BOOL
        elif isinstance(first, int):
            sub = T.INT32
        else:
            raise TypeError(f"{key}: unsupported array item {type(first).__name__}")
        self._items[key] = KV(key, values, T.ARRAY, sub)

    def u32(self, key: str, value: int) -> None:
        self.add(key, int(value), T.UINT32)

    def f32(self, key: str, value: float) -> None:
        self.add(key, float(value), T.FLOAT32)

    def string(self, key: str, value: str) -> None:
        self.add(key, value, T.STRING)

    def boolean(self, key: str, value: bool) -> None:
        self.add(key, bool(value), T.BOOL)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> Any:
        kv = self._items.get(key)
        return None if kv is None else kv.value

    def items(self) -> list[KV]:
        return list(self._items.values())
