"""An LRU of suggestions keyed by their context, with typed-through reuse.

The key is everything that decides the answer: the backend, the settings that shape the
prompt and the output, the mode, the tail of the prefix and the head of the suffix. An exact
hit answers a repeated request (the editor asks again after a cursor move and back).

Typed-through reuse answers the commonest request of all without the model: the user typed
the first characters of the suggestion on screen. If the new prefix is an old prefix plus
`typed`, the suffix is unchanged and the old suggestion starts with `typed`, the answer is
the rest of the old suggestion.

An entry may hold more than one suggestion (`completion.candidates`): the first is the one
shown, the others are what the editor cycles to. `sampled` says the others were asked for
(an invoked request): a hit without them does not answer a request that wants them.
Typed through, the others that start with the typed text keep their rest too.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

PREFIX_TAIL = 512  # characters of prefix that identify a context
SUFFIX_HEAD = 256
_TYPED_MAX = 200  # longest typed-through run worth checking


@dataclass(frozen=True)
class Key:
    scope: str  # backend + settings + mode
    prefix_tail: str
    suffix_head: str

    @classmethod
    def of(cls, scope: str, prefix: str, suffix: str) -> Key:
        return cls(scope, prefix[-PREFIX_TAIL:], suffix[:SUFFIX_HEAD])


@dataclass(frozen=True)
class Hit:
    text: str
    typed: int  # characters typed through (0: an exact hit)
    more: tuple[str, ...] = ()  # the other candidates, deduplicated
    sampled: bool = False  # the other candidates were asked for


@dataclass(frozen=True)
class _Entry:
    text: str
    more: tuple[str, ...]
    sampled: bool


class CompletionCache:
    def __init__(self, capacity: int = 256, recent: int = 16) -> None:
        self.capacity = capacity
        self.recent = recent
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: Key, text: str, more: tuple[str, ...] = (), sampled: bool = False) -> None:
        self._entries[key] = _Entry(text, more, sampled)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, scope: str, prefix: str, suffix: str) -> Hit | None:
        """An exact hit, else the rest of a recent suggestion the user has typed through."""
        key = Key.of(scope, prefix, suffix)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return Hit(entry.text, 0, entry.more, entry.sampled)
        checked = 0
        for old in reversed(self._entries):
            if checked >= self.recent:
                break
            checked += 1
            if old.scope != scope or old.suffix_head != key.suffix_head:
                continue
            entry = self._entries[old]
            rest = self._typed_through(old, entry.text, prefix)
            if rest is not None:
                self._entries.move_to_end(old)
                typed, head = rest[0], entry.text[: rest[0]]
                more = tuple(
                    m[typed:] for m in entry.more if m.startswith(head) and m[typed:].strip()
                )
                return Hit(rest[1], typed, more, entry.sampled)
        return None

    @staticmethod
    def _typed_through(old: Key, suggestion: str, prefix: str) -> tuple[int, str] | None:
        limit = min(len(suggestion) - 1, _TYPED_MAX, len(prefix) - len(old.prefix_tail))
        last = prefix[-1:] if prefix else ""
        for typed in range(1, limit + 1):
            if suggestion[typed - 1] != last or prefix[-typed:] != suggestion[:typed]:
                continue
            if prefix[: len(prefix) - typed].endswith(old.prefix_tail):
                rest = suggestion[typed:]
                # a prefix tail shorter than PREFIX_TAIL means the old context was the whole
                # file start; then the new prefix must match it exactly
                if len(old.prefix_tail) < PREFIX_TAIL and len(prefix) - typed != len(
                    old.prefix_tail
                ):
                    continue
                return (typed, rest) if rest.strip() else None
        return None

    def clear(self) -> None:
        self._entries.clear()
