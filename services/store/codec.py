"""How a stored event looks on disk: its key, its id hash, its compressed body and its search words.

- key: the row's primary key is the event's `ts` in ns, bumped by 1 ns when
  another event already holds that ns; key order is time order, so every
  secondary index on (x) is also an index on (x, time), and a cursor is a key.
- idh: 64-bit hash of the event id; duplicates (redelivery) share the ts, so
  a conflict on the key plus an equal idh means "already stored".
- body: one byte naming the zstd dictionary (0 = none) + a zstd frame of the
  orjson text. Dictionaries are trained from the first events written and
  kept in the database for as long as it lives.
- words: what text search (q) finds, from the fields people search for: paths,
  command line, comm, exe, container name, addresses, names (alerts: also rule
  and output); lowercased, dotted/colon parts also on their own ("ld.so.preload"
  is found by "preload", "10.0.0.5" by "10.0").
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
import threading
from collections.abc import Awaitable, Callable

import orjson
import zstandard

from shared import log
from shared.background import idle_child
from shared.bounded import Bounded

LEVEL = 3
DICT_SIZE = 112 * 1024      # measured on bench/eventmix.py: 73 B/body with 64 KiB, 61 with 112
TRAIN_SAMPLES = 4000          # bodies collected before (re)training a dictionary
RETRAIN_EVERY = 500_000       # events written between retrainings
MAX_DICTS = 255
MAX_WORDS_TEXT = 1500         # characters of searchable text per event
MIN_PREFIX = 3                # `ab*` matches the word ab only

_log = log.get("store.codec")
_WORD = re.compile(r"[\w.:]+")
_QUERY_WORD = re.compile(r"([\w.:]+)(\*?)")
_PART = re.compile(r"[^.:\s]+")


def id_hash(id_: str) -> int:
    """Signed 64-bit hash of an event id (stable across processes and backends)."""
    return int.from_bytes(hashlib.blake2b(id_.encode(), digest_size=8).digest(), "little", signed=True)


def split_words(text: str) -> list[str]:
    """Words of 2+ characters of `text`, lowercased, plus the non-numeric parts of dotted/colon words;
    sorted, no repeats."""
    words = {w.strip(".:") for w in _WORD.findall(text.lower())}
    dotted = " ".join(w for w in words if "." in w or ":" in w)
    if dotted:      # parts on their own, but not the numbers of an address or version ("10.0.3.7": "10.0" finds it)
        words.update(p for p in _PART.findall(dotted) if not p.isdigit())
    return sorted(w for w in words if len(w) >= 2)


def _str(d: dict, k: str) -> str:
    v = d.get(k)
    return v if isinstance(v, str) else ""


_FIELDS = ("path", "filename", "oldpath", "newpath", "target", "source", "name", "query", "qname", "daddr", "saddr")
# the words of who did it (comm, exe, command line, container): the same for most of a process's events
_who_words: Bounded[str, frozenset[str]] = Bounded(4096)


def _who(item: dict) -> str:
    proc = item.get("proc")
    parts = [_str(item, "comm")]
    if isinstance(proc, dict):
        parts += (_str(proc, "exe"), _str(proc, "cmdline"))
    if isinstance(item.get("argv"), list) and not (isinstance(proc, dict) and proc.get("cmdline")):
        parts += [a for a in item["argv"] if isinstance(a, str)]
    if isinstance(item.get("container"), dict):     # image, pod, namespace: the API filters on those
        parts.append(_str(item["container"], "name"))
    return " ".join(parts)[:MAX_WORDS_TEXT]


# the whole text of a (who, what) pair: a process touching the same paths again
_texts: Bounded[tuple[str, str], str] = Bounded(8192)


def search_text(item: dict) -> str:
    """The searchable text of an event or alert, as space-separated words."""
    who = _who(item)
    what = [v for k in _FIELDS if (v := item.get(k)).__class__ is str]
    if item.get("kind") == "alert":
        what += (_str(item, "rule"), _str(item, "output"))
        if isinstance(item.get("event"), dict):
            what.append(search_text(item["event"]))
    what_s = " ".join(what)[:MAX_WORDS_TEXT]
    text = _texts.get((who, what_s))
    if text is None:
        words = _who_words.get(who)
        if words is None:
            words = _who_words[who] = frozenset(split_words(who))
        text = _texts[(who, what_s)] = " ".join(sorted(words.union(split_words(what_s))))
    return text


def query_words(q: str) -> list[tuple[str, bool]]:
    """(word, is_prefix) of a text query: words match whole; `word*` (MIN_PREFIX+ characters) matches as a
    prefix. Whole words are the fast case: a prefix must merge the lists of every word it starts."""
    out = []
    for m in _QUERY_WORD.finditer(q.lower()):
        w = m.group(1).strip(".:")
        if len(w) >= 2:
            out.append((w, bool(m.group(2)) and len(w) >= MIN_PREFIX))
    return out


class Codec:
    """Compresses bodies with the newest dictionary; decompresses with whichever one a body names."""

    def __init__(self) -> None:
        self._c: dict[int, zstandard.ZstdCompressor] = {0: zstandard.ZstdCompressor(level=LEVEL)}
        self._d: dict[int, zstandard.ZstdDecompressor] = {0: zstandard.ZstdDecompressor()}
        self.current = 0
        self._samples: list[bytes] = []
        self._seen = 0
        self._since_train = 0
        self._training = False
        self._lock = threading.Lock()  # sample() runs on the writer's thread, take_samples() on the loop

    def add_dict(self, dict_id: int, data: bytes) -> None:
        zd = zstandard.ZstdCompressionDict(data)
        self._c[dict_id] = zstandard.ZstdCompressor(level=LEVEL, dict_data=zd, write_checksum=False,
                                                   write_dict_id=False)
        self._d[dict_id] = zstandard.ZstdDecompressor(dict_data=zd)
        self.current = max(self.current, dict_id)

    def has(self, dict_id: int) -> bool:
        return dict_id in self._d

    def encode(self, raw: bytes) -> bytes:
        return bytes((self.current,)) + self._c[self.current].compress(raw)

    def decode(self, blob: bytes) -> bytes:
        d = self._d.get(blob[0])
        if d is None:
            raise ValueError(f"body names zstd dictionary {blob[0]}, which this database does not have")
        return d.decompress(blob[1:])

    def sample(self, raw: bytes) -> None:
        """Reservoir-sample bodies for the next dictionary. A sample is kept as an exact-size copy:
        orjson's output keeps its whole growth buffer (~8 KB for a 600-byte event)."""
        with self._lock:
            self._seen += 1
            self._since_train += 1
            if len(self._samples) < TRAIN_SAMPLES:
                self._samples.append(memoryview(raw).tobytes())
            else:
                i = random.randrange(self._seen)
                if i < TRAIN_SAMPLES:
                    self._samples[i] = memoryview(raw).tobytes()

    def wants_training(self) -> bool:
        """True once per schedule: the caller then trains, between take_samples() and training_done()
        (Training below)."""
        if len(self._samples) < TRAIN_SAMPLES or self.current >= MAX_DICTS or self._training:
            return False
        self._training = self.current == 0 or self._since_train >= RETRAIN_EVERY
        return self._training

    def take_samples(self) -> list[bytes]:
        """The samples (the codec keeps none) and a new schedule."""
        with self._lock:
            samples, self._samples = self._samples, []
            self._since_train, self._seen = 0, 0
        return samples

    def training_done(self) -> None:
        self._training = False


def train_samples(samples: list[bytes]) -> bytes | None:
    try:
        return zstandard.train_dictionary(DICT_SIZE, samples, level=LEVEL).as_bytes()
    except zstandard.ZstdError:
        return None


QUIET_S = 2.0              # a training waits for a spell this long with fewer than QUIET_ITEMS written,
QUIET_ITEMS = 200
QUIET_MAX_WAIT_S = 60.0    # or this long at most (meanwhile bodies keep the current dictionary)


class Training:
    """A backend's dictionary training: when the codec wants one, it waits for a quiet spell (the
    samples are complete when a burst of events is still arriving), then is trained in a child
    process at idle priority (services/store/train_dict.py) while writes go on with the current
    dictionary, then handed to `install` (which stores it and adds it to the codec)."""

    MODULE = "services.store.train_dict"

    def __init__(self, codec: Codec, install: Callable[[bytes], Awaitable[None]]) -> None:
        self.codec, self.install = codec, install
        self.quiet_s, self.quiet_items, self.max_wait_s = QUIET_S, QUIET_ITEMS, QUIET_MAX_WAIT_S
        self.written = 0
        self._task: asyncio.Task[None] | None = None

    def after_write(self, items: int) -> bool:
        """Count a write of `items`; start a training if the codec wants one (and none is under
        way). True if started."""
        self.written += items
        if (self._task is not None and not self._task.done()) or not self.codec.wants_training():
            return False
        self._task = asyncio.create_task(self._run(), name="zstd dictionary training")
        return True

    async def _quiet_spell(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while asyncio.get_running_loop().time() < deadline:
            before = self.written
            await asyncio.sleep(self.quiet_s)
            if self.written - before < self.quiet_items:
                return

    async def _run(self) -> None:
        from .train_dict import frame
        try:
            await self._quiet_spell()
            data = await idle_child(self.MODULE, frame(self.codec.take_samples()))
            if data:
                await self.install(data)
        except Exception as e:  # bodies keep the current dictionary; the next schedule tries again
            _log.error("training a zstd dictionary failed: %s", e)
        finally:
            self.codec.training_done()

    async def wait(self) -> None:
        """Until the training under way (if any) is over."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Cancel a training under way (its child is killed)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def dumps(item: dict) -> bytes:
    return orjson.dumps(item)
