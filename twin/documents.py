"""The shadow document: reported / desired / delta, version, per-leaf metadata.

Semantics (AWS IoT Device Shadow, improved where noted; see ``docs/shadow.md``):

* An update is a JSON merge patch per section: objects merge, ``null`` deletes a key,
  arrays and scalars replace whole. Objects left empty by deletes disappear.
* Every leaf carries the source timestamp of the write that set it (``metadata``).
* Improvement: a write older (by its source timestamp) than what the document already holds
  for that leaf, or for an ancestor of it, does not overwrite it. The final document
  therefore depends only on the set of writes received, never on their arrival order, so
  at-least-once delivery across several workers does no harm.

How: each section keeps its *writes*, the latest write per exact path (deletes included,
as tombstones). The state is, by definition, the replay of those writes in order of
(timestamp, depth, path, value). Writes newer than everything held, the normal case,
are applied incrementally in that same order; an out-of-order write makes the section
replay from its writes. Writes that a later write at an ancestor path wipes are pruned.
"""

from __future__ import annotations

import marshal
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from chargetwin.json_text import compact, compact_bytes, sorted_compact

SECTIONS = ("reported", "desired")
# How many request fingerprints a document remembers (ShadowDocument.remember_request), and
# the key they are stored under beside the sections' writes.
REQUESTS_REMEMBERED = 16
_REQUESTS_KEY = "requests"

Path = tuple[str, ...]
JSON = Any
# A write: (timestamp, value); value None is a delete.
Write = tuple[float, JSON]
# Section.snapshot(): writes, object marks, newest, leaf count.
SectionSnapshot = tuple[dict[Path, Write], dict[Path, float], float, int]
# Stands for an object mark among the writes at replay (never a JSON value).
_OBJECT_MARK: Any = object()


def _clone(obj: JSON) -> JSON:
    # marshal copies plain JSON data several times faster than copy.deepcopy.
    return marshal.loads(marshal.dumps(obj))


def _value_key(value: JSON) -> str:
    return sorted_compact(value)


def _order(path: Path, write: Write) -> tuple[float, int, Path, str]:
    return (write[0], len(path), path, _value_key(write[1]))


def flatten(patch: dict[str, JSON], prefix: Path = ()) -> Iterator[tuple[Path, JSON]]:
    """The leaf writes of a merge patch: non-empty objects recurse, ``{}`` changes nothing."""
    for key, value in patch.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            if value:
                yield from flatten(value, path)
        else:
            yield path, value


def depth_of(value: JSON) -> int:
    """Nesting depth of objects and arrays (a scalar is 0, ``{"a": 1}`` is 1)."""
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


class _SectionText:
    """Encoded JSON per top-level key of a section (see ``Section._text``)."""

    __slots__ = ("metadata", "state", "writes")

    def __init__(self) -> None:
        self.state: dict[str, str] = {}  # key -> '"key":value'
        self.metadata: dict[str, str] = {}
        self.writes: dict[str, str] = {}  # key ("" for the root) -> the rows, comma-joined

    def changed(self, paths: Iterable[Path]) -> None:
        for path in paths:
            if not path:  # the whole section
                self.state.clear()
                self.metadata.clear()
                self.writes.clear()
                return
            self.state.pop(path[0], None)
            self.metadata.pop(path[0], None)
            self.writes.pop(path[0], None)

    @staticmethod
    def encode(value: dict[str, JSON], parts: dict[str, str]) -> str:
        out = []
        for key, item in value.items():
            part = parts.get(key)
            if part is None:
                part = parts[key] = f"{compact(key)}:{compact(item)}"
            out.append(part)
        if len(parts) > len(out):  # keys gone (a delete emptied them)
            for key in parts.keys() - value.keys():
                del parts[key]
        return "{" + ",".join(out) + "}"


class _WriteIndex:
    """How many writes lie below each path, and which lie under each top-level key (see
    ``Section._index``): most writes have nothing below them and change one top-level key,
    and telling so without a scan of the whole write set keeps a write's cost independent
    of the document's size."""

    __slots__ = ("below", "tops")

    def __init__(self, writes: Iterable[Path] = ()) -> None:
        self.below: dict[Path, int] = {}  # path -> writes strictly below it
        # top-level key ("" for the root) -> the paths written under it (a dict: ordered)
        self.tops: dict[str, dict[Path, None]] = {}
        for path in writes:
            self.add(path)

    def add(self, path: Path) -> None:
        below = self.below
        for i in range(len(path)):
            prefix = path[:i]
            below[prefix] = below.get(prefix, 0) + 1
        self.tops.setdefault(path[0] if path else "", {})[path] = None

    def remove(self, path: Path) -> None:
        below = self.below
        for i in range(len(path)):
            prefix = path[:i]
            left = below[prefix] - 1
            if left:
                below[prefix] = left
            else:
                del below[prefix]
        top = path[0] if path else ""
        paths = self.tops[top]
        del paths[path]
        if not paths:
            del self.tops[top]


@dataclass
class Section:
    """One of ``reported`` / ``desired``: its state, metadata and writes."""

    state: dict[str, JSON] = field(default_factory=dict)
    metadata: dict[str, JSON] = field(default_factory=dict)
    writes: dict[Path, Write] = field(default_factory=dict)
    newest: float = 0.0
    # Leaves counted at the last tombstone scan; see prune_tombstones.
    leaf_count: int = 0
    # The JSON text of each top-level key's state, metadata and writes, kept until a write
    # under that key: most updates change one key of a large document (a connector's
    # status beside the whole configuration), and every version is encoded for the store
    # and the documents topic. Cleared wholesale by anything that rebuilds the section.
    _text: _SectionText = field(default_factory=_SectionText, repr=False, compare=False)
    # Counts of the writes by path prefix, built on first use and kept in step by _record;
    # anything else that changes the write set drops it (rebuilt from the writes).
    _index: _WriteIndex | None = field(default=None, repr=False, compare=False)
    # Per path, when a value was last set below it (see _mark_objects): at replay, a mark
    # removes a scalar or array held there that is older than the mark. Stored with the
    # writes as rows whose value is ``{}`` (a value no merge patch leaf can hold).
    objects: dict[Path, float] = field(default_factory=dict)
    # The time of the oldest delete in the writes, or earlier (None: not known yet): what
    # prune_tombstones looks at before it scans anything.
    _oldest_tombstone: float | None = field(default=None, repr=False, compare=False)

    def snapshot(self) -> SectionSnapshot:
        """What :meth:`rollback` needs: shallow copies of the writes (cheap, no state)."""
        return dict(self.writes), dict(self.objects), self.newest, self.leaf_count

    def rollback(self, snapshot: SectionSnapshot) -> None:
        """Undo everything applied since ``snapshot``: the state is a replay of the writes."""
        self.writes, self.objects, _, self.leaf_count = snapshot
        self._index = None
        self._oldest_tombstone = None
        self.replay()

    def clone(self) -> Section:
        return Section(
            _clone(self.state),
            _clone(self.metadata),
            dict(self.writes),
            self.newest,
            self.leaf_count,
            objects=dict(self.objects),
        )

    # --- applying ------------------------------------------------------------------------
    def apply(self, writes: list[tuple[Path, JSON]], timestamp: float) -> bool:
        """Apply leaf writes that share one source timestamp; True when anything changed."""
        accepted = [(p, v) for p, v in writes if self._record(p, (timestamp, v))]
        marked = [p for p, v in writes if v is not None and self._mark_objects(p, timestamp)]
        if not accepted and not marked:
            return False
        self._text.changed([p for p, _ in accepted] + marked)
        kept = {p for p, _ in accepted}
        if any(p not in kept for p in marked):
            self.replay()  # a value not kept still made its ancestors objects
        elif timestamp > self.newest and not any(self._below_a_value(p) for p, _ in accepted):
            # One timestamp and distinct paths (one patch): _order comes down to the path.
            for path, value in sorted(accepted, key=lambda pv: (len(pv[0]), pv[0])):
                _set(self.state, self.metadata, path, value, timestamp)
            self.newest = timestamp
        else:
            self.replay()
        return True

    def _record(self, path: Path, write: Write) -> bool:
        """Keep ``write`` in the write set unless a newer write already covers it."""
        ts = write[0]
        for i in range(len(path)):
            held = self.writes.get(path[:i])
            if held is not None and held[0] > ts:
                return False  # an ancestor written later wipes this write at any replay
        held = self.writes.get(path)
        # _order(path, held) >= _order(path, write), the values encoded only on a tie.
        if held is not None and (
            held[0] > ts or (held[0] == ts and _value_key(held[1]) >= _value_key(write[1]))
        ):
            return False
        index = self._write_index()
        self.writes[path] = write
        if held is None:
            index.add(path)
        if write[1] is None and self._oldest_tombstone is not None:
            self._oldest_tombstone = min(self._oldest_tombstone, ts)
        n = len(path)
        if index.below.get(path):
            # Writes below ``path`` that are older are wiped by this one at any replay.
            for other in [p for p in self.writes if len(p) > n and p[:n] == path]:
                if self.writes[other][0] < ts:
                    del self.writes[other]
                    index.remove(other)
            # Object marks below, likewise (they only come with writes below): a mark older
            # than this write changes nothing at replay any more.
            for other in [p for p in self.objects if len(p) > n and p[:n] == path]:
                if self.objects[other] < ts:
                    del self.objects[other]
        return True

    def _mark_objects(self, path: Path, ts: float) -> bool:
        """A value set at ``path`` at ``ts`` makes each of its ancestors an object as of
        ``ts``, whether or not the value itself is kept (a newer write at ``path`` may
        replace it): an ancestor's older scalar is gone from then on, and must not come
        back once everything below is deleted again (RFC 7396 applied in order). True when
        a mark moved."""
        moved = False
        objects = self.objects
        for i in range(1, len(path)):
            prefix = path[:i]
            if objects.get(prefix, -math.inf) < ts:
                objects[prefix] = ts
                moved = True
        return moved

    def _write_index(self) -> _WriteIndex:
        if self._index is None:
            self._index = _WriteIndex(self.writes)
        return self._index

    def _below_a_value(self, path: Path) -> bool:
        """Whether an ancestor of ``path`` holds a scalar or array write. A write below it
        turned that value into an object at replay; the write just recorded may have
        replaced or wiped that write, and then only a replay tells whether the object is
        still there (applying the new write on top of the current state would keep it)."""
        writes = self.writes
        return any(
            (held := writes.get(path[:i])) is not None and held[1] is not None
            for i in range(1, len(path))
        )

    def replay(self) -> None:
        self._text = _SectionText()
        self.state, self.metadata = {}, {}
        ordered = sorted(
            [(_order(path, write), path, write[1]) for path, write in self.writes.items()]
            # Before a value set at the same time at the same path: the scalar set
            # together with a value below it is kept, as _order keeps the deeper write.
            + [((ts, len(path), path, ""), path, _OBJECT_MARK) for path, ts in self.objects.items()]
        )
        for (ts, *_), path, value in ordered:
            if value is _OBJECT_MARK:
                _unset_scalar(self.state, self.metadata, path)
            else:
                _set(self.state, self.metadata, path, value, ts)
        self.newest = max((w[0] for w in self.writes.values()), default=0.0)

    def prune_tombstones(self, older_than: float) -> None:
        """Forget deletes older than ``older_than``: bounded memory, bounded reordering.

        Cheap when there is nothing to forget: the writes are scanned only when there are
        more of them than the leaves they could explain and the oldest delete is older than
        ``older_than`` (deletes younger than the horizon made every write scan for a week).
        """
        if len(self.writes) <= self.leaf_count + 16:
            return
        if self._oldest_tombstone is None:
            self._oldest_tombstone = _oldest_delete(self.writes)
        if self._oldest_tombstone >= older_than:
            return
        pruned = [p for p, (ts, v) in self.writes.items() if v is None and ts < older_than]
        self._oldest_tombstone = None  # the one remembered may have been replaced since
        if not pruned:
            return
        for path in pruned:
            del self.writes[path]
        self._index = None
        self._text.changed(pruned)
        self.leaf_count = _count_leaves(self.state)

    # --- persistence -----------------------------------------------------------------------
    def writes_to_json(self) -> list[list[JSON]]:
        rows = [[list(p), ts, v] for p, (ts, v) in self.writes.items()]
        return rows + [[list(p), ts, {}] for p, ts in self.objects.items()]

    def state_text(self) -> str:
        """``compact(self.state)``, from the text of the keys that did not change."""
        return self._text.encode(self.state, self._text.state)

    def metadata_text(self) -> str:
        """``compact(self.metadata)``, likewise."""
        return self._text.encode(self.metadata, self._text.metadata)

    def writes_text(self) -> str:
        """:meth:`writes_to_json` as compact JSON (grouped by top-level key, an order
        :meth:`from_writes` does not depend on)."""
        groups = self._text.writes
        tops = self._write_index().tops
        stale = (tops.keys() | {p[0] for p in self.objects}) - groups.keys()
        for key in stale:
            writes = self.writes
            rows: list[list[JSON]] = [[list(path), *writes[path]] for path in tops.get(key, ())]
            rows += [[list(p), ts, {}] for p, ts in self.objects.items() if p[0] == key]
            groups[key] = compact(rows)[1:-1]
        return "[" + ",".join(text for text in groups.values() if text) + "]"

    @classmethod
    def from_writes(cls, rows: list[list[JSON]]) -> Section:
        section = cls(
            writes={tuple(p): (float(ts), v) for p, ts, v in rows if v != {}},
            objects={tuple(p): float(ts) for p, ts, v in rows if v == {}},
        )
        section.replay()
        return section


def _oldest_delete(writes: dict[Path, Write]) -> float:
    return min((ts for ts, value in writes.values() if value is None), default=math.inf)


def _count_leaves(state: dict[str, JSON]) -> int:
    return sum(_count_leaves(v) if isinstance(v, dict) else 1 for v in state.values())


def _set(state: dict[str, JSON], meta: dict[str, JSON], path: Path, value: JSON, ts: float) -> None:
    """Set (or with ``None`` delete) one leaf, keeping metadata in step with state."""
    if not path:  # the whole section: only a delete reaches here (``"desired": null``)
        state.clear()
        meta.clear()
        return
    if value is None:
        _delete(state, meta, path)
        return
    node, mnode = state, meta
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
            mnode[key] = {}
        node, mnode = child, mnode[key]
    node[path[-1]] = _clone(value) if isinstance(value, list) else value
    mnode[path[-1]] = _leaf_metadata(value, ts)


def _leaf_metadata(value: JSON, ts: float) -> JSON:
    if isinstance(value, list):
        # As AWS does: one entry per array element.
        return [{"timestamp": ts} for _ in value]
    return {"timestamp": ts}


def _delete(state: dict[str, JSON], meta: dict[str, JSON], path: Path) -> None:
    trail: list[tuple[dict[str, JSON], dict[str, JSON], str]] = []
    node, mnode = state, meta
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            return
        trail.append((node, mnode, key))
        node, mnode = child, mnode[key]
    if path[-1] not in node:
        return
    del node[path[-1]]
    mnode.pop(path[-1], None)
    # Objects emptied by the delete disappear too.
    for parent, mparent, key in reversed(trail):
        if parent[key]:
            break
        del parent[key]
        mparent.pop(key, None)


def _unset_scalar(state: dict[str, JSON], meta: dict[str, JSON], path: Path) -> None:
    """An object mark (``Section.objects``): whatever is not an object at ``path`` goes."""
    node: JSON = state
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict) and path[-1] in node and not isinstance(node[path[-1]], dict):
        _delete(state, meta, path)


def delta(desired: dict[str, JSON], reported: dict[str, JSON]) -> dict[str, JSON]:
    """The desired leaves that reported lacks or holds differently (arrays compared whole)."""
    out: dict[str, JSON] = {}
    for key, want in desired.items():
        have = reported.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            sub = delta(want, have)
            if sub:
                out[key] = sub
        elif not json_equal(want, have):
            out[key] = want
    return out


def json_equal(a: JSON, b: JSON) -> bool:
    """Equality as JSON sees it: ``true`` is not ``1`` (Python says it is), ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(json_equal, a, b))
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(json_equal(v, b[k]) for k, v in a.items())
        )
    return bool(a == b)


def delta_metadata(delta_state: dict[str, JSON], metadata: dict[str, JSON]) -> dict[str, JSON]:
    """The desired metadata of the leaves in a delta."""
    out: dict[str, JSON] = {}
    for key, value in delta_state.items():
        meta = metadata.get(key, {})
        out[key] = delta_metadata(value, meta) if isinstance(value, dict) else meta
    return out


def _dumps(value: JSON) -> str:
    return compact(value)


@dataclass(frozen=True, slots=True)
class EncodedDocument:
    """One version of a document as JSON text.

    Why: every accepted update sends the previous and the current document (``documents``
    topic) and stores the current one; encoding each version once, and reusing the previous
    version's text, saves most of the twin's JSON work.
    """

    version: int
    state: str  # {"reported":...,"desired":...}
    metadata: str
    delta: dict[str, JSON]
    timestamp: float

    @classmethod
    def of(cls, doc: ShadowDocument) -> EncodedDocument:
        reported, desired = doc.sections["reported"], doc.sections["desired"]
        metadata = ",".join(f'"{name}":{s.metadata_text()}' for name, s in doc.sections.items())
        return cls(
            version=doc.version,
            state=f'{{"reported":{reported.state_text()},"desired":{desired.state_text()}}}',
            metadata=f"{{{metadata}}}",
            delta=doc.delta(),
            timestamp=doc.timestamp,
        )

    def state_bytes(self) -> int:
        return len(self.state.encode())

    def versioned(self) -> str:
        """``{"state", "metadata", "version"}`` as the ``documents`` topic carries them."""
        return f'{{"state":{self.state},"metadata":{self.metadata},"version":{self.version}}}'

    def public(self) -> str:
        """The whole document as ``shadow/get`` and the store have it (delta included)."""
        state = self.state
        if self.delta:
            state = f'{state[:-1]},"delta":{_dumps(self.delta)}}}'
        return (
            f'{{"state":{state},"metadata":{self.metadata},"version":{self.version},'
            f'"timestamp":{_dumps(self.timestamp)}}}'
        )


@dataclass(frozen=True, slots=True)
class DocumentSnapshot:
    version: int
    timestamp: float
    sections: dict[str, SectionSnapshot]
    encoded: EncodedDocument | None


@dataclass
class ShadowDocument:
    """A charger's whole shadow.

    :meth:`apply` changes it in place; take a :meth:`snapshot` first to be able to
    :meth:`rollback` an update that turns out invalid (too large, bad desired state).
    """

    charger_id: str
    version: int = 0
    timestamp: float = 0.0
    sections: dict[str, Section] = field(
        default_factory=lambda: {name: Section() for name in SECTIONS}
    )
    # Fingerprints of the latest requests with a clientToken that changed the document,
    # with the version each produced (see remember_request); kept with the writes.
    requests: dict[str, int] = field(default_factory=dict)
    _encoded: EncodedDocument | None = field(default=None, repr=False, compare=False)

    @property
    def reported(self) -> dict[str, JSON]:
        return self.sections["reported"].state

    @property
    def desired(self) -> dict[str, JSON]:
        return self.sections["desired"].state

    def clone(self) -> ShadowDocument:
        return ShadowDocument(
            self.charger_id,
            self.version,
            self.timestamp,
            {name: s.clone() for name, s in self.sections.items()},
            dict(self.requests),
        )

    def remember_request(self, fingerprint: str) -> None:
        """Note that the request ``fingerprint`` produced the current version.

        A request delivered again (its worker died between the commit and the broker's
        acknowledgement, and a peer got it) is then answered with that version instead of
        being applied twice: a conditional one would be refused as stale although it was
        applied, and the operator would be told so."""
        self.requests[fingerprint] = self.version
        while len(self.requests) > REQUESTS_REMEMBERED:
            del self.requests[next(iter(self.requests))]

    def apply(self, state: dict[str, JSON | None], timestamp: float) -> bool:
        """Merge ``{"reported": patch | None, "desired": patch | None}``; True on change."""
        changed = False
        for name, patch in state.items():
            writes: list[tuple[Path, JSON]] = (
                [((), None)] if patch is None else list(flatten(patch))
            )
            changed |= self.sections[name].apply(writes, timestamp)
        return changed

    def delta(self) -> dict[str, JSON]:
        return delta(self.desired, self.reported)

    def snapshot(self) -> DocumentSnapshot:
        return DocumentSnapshot(
            self.version,
            self.timestamp,
            {n: s.snapshot() for n, s in self.sections.items()},
            self._encoded,
        )

    def rollback(self, snapshot: DocumentSnapshot) -> None:
        self.version, self.timestamp = snapshot.version, snapshot.timestamp
        for name, section in self.sections.items():
            section.rollback(snapshot.sections[name])
        self._encoded = snapshot.encoded

    def encoded(self) -> EncodedDocument:
        """The document as JSON text, encoded once per version and shared by every
        message and the store (see :class:`EncodedDocument`)."""
        if self._encoded is None or self._encoded.version != self.version:
            self._encoded = EncodedDocument.of(self)
        return self._encoded

    def state_bytes(self) -> int:
        """Size of reported + desired as compact JSON, the figure the size limit applies to."""
        return len(compact_bytes({"reported": self.reported, "desired": self.desired}))

    # --- the public document ------------------------------------------------------------
    def to_public(self) -> dict[str, JSON]:
        """The document as ``shadow/get/accepted`` and the API return it."""
        state: dict[str, JSON] = {"reported": self.reported, "desired": self.desired}
        d = self.delta()
        if d:
            state["delta"] = d
        return {
            "state": state,
            "metadata": {name: s.metadata for name, s in self.sections.items()},
            "version": self.version,
            "timestamp": self.timestamp,
        }

    def to_versioned_state(self) -> dict[str, JSON]:
        """``{"state", "metadata", "version"}`` as the ``documents`` topic carries them."""
        return {
            "state": {"reported": self.reported, "desired": self.desired},
            "metadata": {name: s.metadata for name, s in self.sections.items()},
            "version": self.version,
        }

    def writes_to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {name: s.writes_to_json() for name, s in self.sections.items()}
        if self.requests:
            out[_REQUESTS_KEY] = [[fingerprint, v] for fingerprint, v in self.requests.items()]
        return out

    def writes_text(self) -> str:
        """:meth:`writes_to_json` as compact JSON, as the store keeps it."""
        parts = [f'"{name}":{s.writes_text()}' for name, s in self.sections.items()]
        if self.requests:
            requests = [[fingerprint, v] for fingerprint, v in self.requests.items()]
            parts.append(f'"{_REQUESTS_KEY}":{compact(requests)}')
        return "{" + ",".join(parts) + "}"

    @classmethod
    def restore(
        cls, charger_id: str, version: int, timestamp: float, writes: dict[str, list[list[JSON]]]
    ) -> ShadowDocument:
        sections = {name: Section.from_writes(writes.get(name, [])) for name in SECTIONS}
        requests = {str(row[0]): int(str(row[1])) for row in writes.get(_REQUESTS_KEY, [])}
        return cls(charger_id, version, timestamp, sections, requests)
