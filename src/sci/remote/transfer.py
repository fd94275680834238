"""Push and pull: copy action results, and the objects they need, between a store and a remote.

Order makes a half-finished transfer harmless: blobs first, then the trees that list them, then
the action results that name both — so whoever finds an action result, on either side, finds
everything it needs. Every object that arrives from a remote streams into the local store's
tmp/ while it is hashed, and is published under its name (the store's atomic rename) only if
its digest matches; action results, named by key rather than by digest, must parse and name
their own key. Nothing is listed: what to move is computed from the keys asked for.
"""

from __future__ import annotations

import os
import queue
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from enum import Enum
from typing import Any

from blake3 import blake3

from sci import canonical
from sci.errors import StoreError, WorkFailed
from sci.store.hashing import MMAP_THRESHOLD, TreeEntry, UnsafeTree, digest_bytes, digest_file, entries_from_document
from sci.remote.stores import DirectoryRemote, Remote, write_all
from sci.store.cas import STORE_FORMAT, Store, _reflink_or_copy
from sci.values import Value

EMPTY_DIGEST = digest_bytes(b"")  # the blob of no bytes: the log of every quiet step

_DIGEST = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[0-9a-f]{16,128}")
# A download larger than this gets a writer thread, so hashing and writing overlap; smaller
# objects (the common case) are written inline and start no thread.
THREADED_WRITE_AFTER = 8 * 1024 * 1024
_QUEUE_CHUNKS = 8  # chunks in flight to the writer thread: bounds memory at 8 × remote.CHUNK


class ObjectKind(str, Enum):
    BLOB = "blob"
    TREE = "tree"
    ACTION = "action"


def object_path(kind: ObjectKind, name: str) -> str:
    """Where an object lives, in a store and on every remote: `blobs/ab/abcd…`."""
    return f"{kind.value}s/{name[:2]}/{name}"


class Outcome(str, Enum):
    SENT = "sent"  # uploaded to the remote
    RECEIVED = "received"  # downloaded, verified and admitted (actions: admitted at the end)
    SKIPPED = "skipped"  # the other side already had it
    FAILED = "failed"  # missing or corrupt; the error is in TransferFailed.errors


class TransferEvent(Value):
    """One object's fate, handed to the `progress` callback on the calling thread."""

    __slots__ = _FIELDS = ("kind", "name", "size", "outcome")

    def __init__(self, kind: ObjectKind, name: str, size: int, outcome: Outcome):
        self.kind, self.name, self.size, self.outcome = kind, name, size, outcome


class TransferStats(Value):
    """What a transfer moved: objects and bytes transferred, skipped (already there), failed."""

    __slots__ = _FIELDS = ("objects", "bytes", "skipped", "skipped_bytes", "failed", "by_kind")

    def __init__(self, objects: int = 0, bytes: int = 0, skipped: int = 0, skipped_bytes: int = 0,
                 failed: int = 0, by_kind: dict[str, int] | None = None):
        self.objects, self.bytes, self.skipped, self.skipped_bytes, self.failed = (
            objects, bytes, skipped, skipped_bytes, failed)
        self.by_kind = by_kind if by_kind is not None else {}  # transferred objects per kind

    def record(self, event: TransferEvent) -> None:
        if event.outcome in (Outcome.SENT, Outcome.RECEIVED):
            self.objects += 1
            self.bytes += event.size
            self.by_kind[event.kind.value] = self.by_kind.get(event.kind.value, 0) + 1
        elif event.outcome is Outcome.SKIPPED:
            self.skipped += 1
            self.skipped_bytes += event.size
        else:
            self.failed += 1

    def to_json(self) -> dict[str, Any]:
        return {"objects": self.objects, "bytes": self.bytes, "skipped": self.skipped,
                "skipped_bytes": self.skipped_bytes, "failed": self.failed,
                "by_kind": dict(sorted(self.by_kind.items()))}


class TransferError(WorkFailed):
    """An object could not be moved; `kind`, `name` and `where` say which and from where."""

    def __init__(self, message: str, *, kind: ObjectKind | None = None, name: str | None = None,
                 where: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.kind = kind
        self.name = name
        self.where = where


class CorruptObject(TransferError):
    """A remote object's bytes do not match its digest (or an action result is malformed).
    It was not admitted into the local store."""

    def __init__(self, kind: ObjectKind, name: str, where: str, problem: str):
        super().__init__(f"{kind.value} {name} from remote {where} {problem}; it was not admitted",
                         kind=kind, name=name, where=where,
                         hint=f"the remote copy is damaged: delete {object_path(kind, name)} on the "
                              "remote, then push it again from a sound store")


class MissingObject(TransferError):
    """An object an action result needs is absent (from the remote, or from the local store)."""

    def __init__(self, kind: ObjectKind, name: str, where: str):
        super().__init__(f"{kind.value} {name} is missing from {where}",
                         kind=kind, name=name, where=where)


class TransferFailed(TransferError):
    """Some objects failed; the rest were transferred. `errors` lists each failure."""

    def __init__(self, errors: list[WorkFailed], stats: TransferStats):
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(errors[0].message + more, hint=errors[0].hint)
        self.errors = errors
        self.stats = stats


class _TooLarge(Exception):
    """Raised inside a download once it passes the size its record promised."""


class _Item(Value):
    __slots__ = _FIELDS = ("kind", "name", "size")

    def __init__(self, kind: ObjectKind, name: str, size: int | None = None):
        self.kind, self.name = kind, name
        self.size = size  # expected size where a record says it


# -- checking what a remote sends ------------------------------------------------------------
def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def _action_problem(doc: Any, key: str) -> str | None:
    """None if `doc` is a usable action result for `key`, else what is wrong with it."""
    if not isinstance(doc, dict) or doc.get("key") != key:
        return "does not name its own key"
    outputs = doc.get("outputs", {})
    if not isinstance(outputs, dict):
        return "has malformed outputs"
    for name, rec in outputs.items():
        if (not isinstance(rec, dict) or rec.get("type") not in ("file", "tree")
                or not _is_digest(rec.get("digest")) or not isinstance(rec.get("size"), int)):
            return f"has a malformed output {name!r}"
    for log in ("stdout", "stderr"):
        if doc.get(log) is not None and not _is_digest(doc[log]):
            return f"has a malformed {log} digest"
    from sci.build.keys import outputs_problem

    problem = outputs_problem(doc)  # the outputs its key's definition declares, at their paths
    return f"is refused: {problem}" if problem else None


def _tree_entries(data: bytes, digest: str) -> list[TreeEntry] | str:
    """The entries of a downloaded tree document, or what is wrong with it."""
    if digest_bytes(data) != digest:
        return "does not match its digest"
    try:
        return entries_from_document(canonical.loads(data))
    except UnsafeTree as exc:
        return f"lists an unsafe or malformed entry ({exc})"
    except (ValueError, KeyError, TypeError):
        return "is not a tree document"


def _needs(doc: dict, outputs: bool | set[str] | frozenset[str]) -> tuple[list[_Item], list[str]]:
    """The blobs (file outputs and logs) and trees an action result needs, for `outputs`."""
    blobs: list[_Item] = []
    trees: list[str] = []
    if outputs is False:
        return blobs, trees
    for name, rec in sorted((doc.get("outputs") or {}).items()):
        if outputs is not True and name not in outputs:
            continue
        if rec["type"] == "file":
            blobs.append(_Item(ObjectKind.BLOB, rec["digest"], rec["size"]))
        else:
            trees.append(rec["digest"])
    for log in ("stdout", "stderr"):
        if _is_digest(doc.get(log)):
            blobs.append(_Item(ObjectKind.BLOB, doc[log]))
    return blobs, trees


def _unique_keys(keys: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(keys))
    for key in out:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"not an action key: {key!r}")
    return out


def check_format(remote: Remote, *, create: bool = False) -> None:
    """Refuse a remote written in another store format; with `create`, mark an empty one.

    A remote without FORMAT is empty (nothing was pushed yet), not an error: its look-ups miss.
    """
    if remote.format_checked:
        return
    data = remote.get("FORMAT")
    if data is None:
        if not create:
            return
        remote.put("FORMAT", (STORE_FORMAT + "\n").encode())
    elif data.decode("utf-8", "replace").strip() != STORE_FORMAT:
        raise StoreError(f"remote {remote} has store format {data.decode('utf-8', 'replace').strip()!r}, "
                         f"this sci reads {STORE_FORMAT!r}",
                         hint="use a remote written by this version of sci, or another URL")
    remote.format_checked = True


# -- running many object transfers -----------------------------------------------------------
def _run(pool: ThreadPoolExecutor, items: Iterable[_Item], fn: Callable[[_Item], TransferEvent],
         stats: TransferStats, progress: Callable[[TransferEvent], Any] | None,
         errors: list[WorkFailed]) -> set[str]:
    """Run `fn` on every item in the pool; record events; return the names that failed.

    An object-level failure (missing, corrupt) is collected and the rest go on; a remote-level
    one (unreachable, auth, missing bucket) cancels what has not started and propagates.
    Events reach `progress` on this thread, in completion order.
    """
    failed: set[str] = set()
    futures: dict[Future, _Item] = {pool.submit(fn, item): item for item in items}
    try:
        for fut in as_completed(futures):
            item = futures[fut]
            try:
                event = fut.result()
            except (TransferError, StoreError) as exc:
                errors.append(exc)
                failed.add(item.name)
                event = TransferEvent(item.kind, item.name, 0, Outcome.FAILED)
            stats.record(event)
            if progress is not None:
                progress(event)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
    return failed


# -- push ------------------------------------------------------------------------------------
def push(store: Store, remote: Remote, keys: Iterable[str], *, jobs: int = 8,
         progress: Callable[[TransferEvent], Any] | None = None) -> TransferStats:
    """Copy the action results for `keys`, and every object they need, to `remote`.

    Objects the remote already has (HEAD) are skipped; an action result is re-sent only if the
    remote's differs. The local store is trusted (`sci fsck` checks it), not re-hashed: readers
    verify. An action whose objects are not all in the local store is not pushed and is
    reported. Raises TransferFailed after doing everything else if anything failed.
    """
    stats = TransferStats()
    errors: list[WorkFailed] = []
    local = "the local store"
    actions: dict[str, bytes] = {}
    needs: dict[str, set[str]] = {}
    blobs: dict[str, _Item] = {}
    trees: dict[str, _Item] = {}
    for key in _unique_keys(keys):
        data = store.action_bytes(key)
        if data is None:
            errors.append(MissingObject(ObjectKind.ACTION, key, local))
            continue
        try:
            doc = canonical.loads(data)
        except (ValueError, UnicodeDecodeError):
            doc = None
        problem = _action_problem(doc, key)
        if problem:
            errors.append(StoreError(f"action {key} in the local store {problem}",
                                     hint="run `sci fsck`, then rebuild the node"))
            continue
        blob_items, tree_names = _needs(doc, True)
        names = {i.name for i in blob_items}
        try:
            for tree in tree_names:
                entries = store.get_tree(tree)
                trees[tree] = _Item(ObjectKind.TREE, tree, store.tree_path(tree).stat().st_size)
                names.add(tree)
                blob_items += [_Item(ObjectKind.BLOB, e.digest, e.size) for e in entries]
                names.update(e.digest for e in entries)
        except StoreError as exc:
            errors.append(exc)
            continue
        absent = [i.name for i in blob_items if not store.has_blob(i.name)]
        if absent:
            errors.append(MissingObject(ObjectKind.BLOB, absent[0], local))
            continue
        for item in blob_items:
            if item.size is None:
                item = _Item(item.kind, item.name, store.blob_path(item.name).stat().st_size)
            blobs.setdefault(item.name, item)
        actions[key] = data
        needs[key] = names

    def send(item: _Item) -> TransferEvent:
        relpath = object_path(item.kind, item.name)
        if remote.exists(relpath):
            return TransferEvent(item.kind, item.name, item.size or 0, Outcome.SKIPPED)
        source = store.blob_path(item.name) if item.kind is ObjectKind.BLOB else store.tree_path(item.name)
        remote.put(relpath, source)
        return TransferEvent(item.kind, item.name, item.size or 0, Outcome.SENT)

    def send_action(item: _Item) -> TransferEvent:
        relpath = object_path(ObjectKind.ACTION, item.name)
        data = actions[item.name]
        if remote.get(relpath) == data:
            return TransferEvent(item.kind, item.name, len(data), Outcome.SKIPPED)
        remote.put(relpath, data)
        return TransferEvent(item.kind, item.name, len(data), Outcome.SENT)

    if actions:
        remote.prepare()
        check_format(remote, create=True)
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="sci-push") as pool:
            failed = _run(pool, blobs.values(), send, stats, progress, errors)
            failed |= _run(pool, trees.values(), send, stats, progress, errors)
            ready = [_Item(ObjectKind.ACTION, k) for k in actions if not needs[k] & failed]
            _run(pool, ready, send_action, stats, progress, errors)
    if errors:
        raise TransferFailed(errors, stats)
    return stats


# -- pull ------------------------------------------------------------------------------------
class _Sink:
    """One object streaming into the store's tmp/: hashed as its bytes pass, then written.

    Once an object proves large, writing moves to a helper thread so hashing (this thread) and
    writing overlap; with two free cores a verified copy then takes about as long as a plain one.
    """

    def __init__(self, store: Store, limit: int | None):
        store.tmp.mkdir(parents=True, exist_ok=True)
        self.fd, self.tmp = tempfile.mkstemp(dir=store.tmp, prefix="pull-")
        self.hasher = blake3()
        self.size = 0
        self.limit = limit
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            raise _TooLarge()
        self.hasher.update(chunk)
        if self._queue is None:
            if self.size <= THREADED_WRITE_AFTER:
                write_all(self.fd, chunk)
                return
            self._queue = queue.Queue(maxsize=_QUEUE_CHUNKS)
            self._thread = threading.Thread(target=self._writer, name="sci-pull-write", daemon=True)
            self._thread.start()
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def _writer(self) -> None:
        assert self._queue is not None
        while (chunk := self._queue.get()) is not None:
            if self._error is None:  # after an error keep draining, so write() never blocks
                try:
                    write_all(self.fd, chunk)
                except OSError as exc:
                    self._error = exc

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def finish(self) -> str:
        """Close the file; return the digest of everything written."""
        self._stop()
        os.close(self.fd)
        self.fd = -1
        if self._error is not None:
            raise self._error
        return self.hasher.hexdigest()

    def discard(self) -> None:
        self._stop()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def _receive_blob(store: Store, remote: Remote, item: _Item) -> TransferEvent:
    """Download one blob into tmp/, verify it, and publish it; skip one the store has, and
    the empty blob (its bytes are known: none), which is written here."""
    if store.has_blob(item.name):
        return TransferEvent(item.kind, item.name, item.size or 0, Outcome.SKIPPED)
    if item.name == EMPTY_DIGEST:
        store.put_bytes(b"")
        return TransferEvent(item.kind, item.name, 0, Outcome.SKIPPED)
    where = str(remote)
    if isinstance(remote, DirectoryRemote) and (item.size or 0) >= MMAP_THRESHOLD:
        return _receive_local_blob(store, remote, item, where)
    sink = _Sink(store, item.size)
    try:
        found = remote.download(object_path(ObjectKind.BLOB, item.name), sink.write)
        if not found:
            raise MissingObject(item.kind, item.name, f"remote {where}")
        digest = sink.finish()
    except _TooLarge:
        sink.discard()
        raise CorruptObject(item.kind, item.name, where, "is larger than its recorded size") from None
    except OSError as exc:
        sink.discard()
        raise StoreError(f"cannot write {item.kind.value} {item.name} into {store.root}: {exc}") from None
    except BaseException:
        sink.discard()
        raise
    if digest != item.name or (item.size is not None and sink.size != item.size):
        sink.discard()
        raise CorruptObject(item.kind, item.name, where, "does not match its digest")
    store.put_file(sink.tmp, digest, move=True)  # the store's atomic rename
    return TransferEvent(item.kind, item.name, sink.size, Outcome.RECEIVED)


def _receive_local_blob(store: Store, remote: DirectoryRemote, item: _Item, where: str) -> TransferEvent:
    """A large blob from a directory remote: the kernel copies it (copy_file_range / reflink)
    and BLAKE3 verifies the copy with all cores over mmap, instead of streaming it through one
    thread; nothing is published before the digest matches."""
    src = remote._path(object_path(ObjectKind.BLOB, item.name))
    if not src.is_file():
        raise MissingObject(item.kind, item.name, f"remote {where}")
    if item.size is not None and src.stat().st_size > item.size:  # never copy more than recorded
        raise CorruptObject(item.kind, item.name, where, "is larger than its recorded size")
    tmp = store._tmp_name()
    try:
        os.unlink(tmp)
        _reflink_or_copy(str(src), tmp)
        size = os.stat(tmp).st_size
        if (item.size is not None and size != item.size) or digest_file(tmp, size) != item.name:
            raise CorruptObject(item.kind, item.name, where, "does not match its digest")
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    store.put_file(tmp, item.name, move=True)
    return TransferEvent(item.kind, item.name, size, Outcome.RECEIVED)


def _receive_tree(store: Store, remote: Remote, name: str,
                  entries_out: dict[str, list[TreeEntry]]) -> TransferEvent:
    if store.has_tree(name):
        entries_out[name] = store.get_tree(name)
        return TransferEvent(ObjectKind.TREE, name, store.tree_path(name).stat().st_size, Outcome.SKIPPED)
    data = remote.get(object_path(ObjectKind.TREE, name))
    if data is None:
        raise MissingObject(ObjectKind.TREE, name, f"remote {remote}")
    entries = _tree_entries(data, name)
    if isinstance(entries, str):
        raise CorruptObject(ObjectKind.TREE, name, str(remote), entries)
    if store.put_tree(entries) != name:  # a non-canonical document cannot hash to `name`
        raise CorruptObject(ObjectKind.TREE, name, str(remote), "is not in canonical form")
    entries_out[name] = entries
    return TransferEvent(ObjectKind.TREE, name, len(data), Outcome.RECEIVED)


def _fetch_action_doc(remote: Remote, key: str) -> tuple[dict, int] | None:
    data = remote.get(object_path(ObjectKind.ACTION, key))
    if data is None:
        return None
    try:
        doc = canonical.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise CorruptObject(ObjectKind.ACTION, key, str(remote), "is not valid JSON") from None
    problem = _action_problem(doc, key)
    if problem:
        raise CorruptObject(ObjectKind.ACTION, key, str(remote), problem)
    return doc, len(data)


def _receive_objects(store: Store, remote: Remote, pool: ThreadPoolExecutor, blobs: list[_Item],
                     trees: list[str], stats: TransferStats, progress,
                     errors) -> tuple[set[str], dict[str, list[TreeEntry]]]:
    """Trees first (their entries name more blobs), then every blob.

    Returns the names that failed and the entries of every tree now in the store."""
    entries: dict[str, list[TreeEntry]] = {}
    tree_items = [_Item(ObjectKind.TREE, t) for t in dict.fromkeys(trees)]
    failed = _run(pool, tree_items, lambda i: _receive_tree(store, remote, i.name, entries),
                  stats, progress, errors)
    wanted: dict[str, _Item] = {}
    for item in blobs:
        wanted.setdefault(item.name, item)
    for tree in sorted(entries):
        for e in entries[tree]:
            wanted.setdefault(e.digest, _Item(ObjectKind.BLOB, e.digest, e.size))
    failed |= _run(pool, wanted.values(), lambda i: _receive_blob(store, remote, i),
                   stats, progress, errors)
    return failed, entries


def pull(store: Store, remote: Remote, keys: Iterable[str], *,
         outputs: bool | set[str] | frozenset[str] = True, jobs: int = 8,
         progress: Callable[[TransferEvent], Any] | None = None) -> TransferStats:
    """Download the action results for `keys` and, as asked, the objects they need.

    `outputs`: True for every output (and the stdout/stderr blobs), a set of output names for
    those (and the logs), False for the action results alone. An action result the local store
    already has is used as it is. Every object is verified before it is admitted; a downloaded
    action result is admitted last, and only if all the objects it needs arrived. Raises
    TransferFailed, naming each missing or corrupt object, after doing everything else.
    """
    stats = TransferStats()
    errors: list[WorkFailed] = []
    keys = _unique_keys(keys)
    check_format(remote)
    fetched: dict[str, dict] = {}
    docs: dict[str, dict] = {}
    for key in keys:
        data = store.action_bytes(key)
        try:
            doc = canonical.loads(data) if data is not None else None
        except ValueError:  # a damaged local result: fetched again, as a miss would be
            doc = None
        if doc is not None:
            docs[key] = doc
            size = len(data)
            event = TransferEvent(ObjectKind.ACTION, key, size, Outcome.SKIPPED)
            stats.record(event)
            if progress is not None:
                progress(event)

    def receive_action(item: _Item) -> TransferEvent:
        found = _fetch_action_doc(remote, item.name)
        if found is None:
            raise MissingObject(ObjectKind.ACTION, item.name, f"remote {remote}")
        fetched[item.name] = found[0]
        return TransferEvent(ObjectKind.ACTION, item.name, found[1], Outcome.RECEIVED)

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="sci-pull") as pool:
        todo = [_Item(ObjectKind.ACTION, k) for k in keys if k not in docs]
        _run(pool, todo, receive_action, stats, progress, errors)
        docs.update(fetched)
        blobs: list[_Item] = []
        trees: list[str] = []
        for key in keys:
            if key in docs:
                b, t = _needs(docs[key], outputs)
                blobs += b
                trees += t
        failed, entries = _receive_objects(store, remote, pool, blobs, trees, stats, progress, errors)
    # Admit each downloaded action result only now, and only if nothing it needs failed (a
    # tree that failed leaves its members unknown, but the tree's own name is in `failed`).
    for key, doc in fetched.items():
        b, t = _needs(doc, outputs)
        names = {i.name for i in b} | set(t)
        names.update(e.digest for tree in t for e in entries.get(tree, ()))
        if not names & failed:
            store.put_action(key, doc)
    if errors:
        raise TransferFailed(errors, stats)
    return stats


# -- the build's path: consult the remote on a local miss -------------------------------------
def fetch_action(store: Store, remote: Remote, key: str) -> dict | None:
    """The action result for `key`: the local store's if it has one, else the remote's
    (checked: it must parse and name its key; CorruptObject otherwise), else None.

    A remote result is returned, not admitted: the caller stores it (`store.put_action`) once
    the outputs it needs are in place, keeping the rule that an action result never precedes
    its objects.
    """
    _unique_keys([key])
    local = store.get_action(key)
    if local is not None:
        return local
    check_format(remote)
    found = _fetch_action_doc(remote, key)
    return found[0] if found else None


def fetch_logs(store: Store, remote: Remote, action: dict, *,
               progress: Callable[[TransferEvent], Any] | None = None) -> int:
    """Make the stdout and stderr blobs an action result names present in the local store (an
    action result is admitted only with every object it needs: `sci fsck` checks that, and
    `sci log` reads them); returns the bytes downloaded. Raises TransferFailed if it cannot."""
    done = 0
    for log in ("stdout", "stderr"):
        digest = action.get(log)
        if _is_digest(digest):
            done += fetch_output(store, remote, {"type": "file", "digest": digest}, progress=progress)
    return done


def fetch_output(store: Store, remote: Remote, output: dict, *, jobs: int = 8,
                 progress: Callable[[TransferEvent], Any] | None = None) -> int:
    """Make one output (an action result's `{"type", "digest", "size", …}` entry) present in
    the local store, downloading only the objects it lacks; returns the bytes downloaded.

    Raises TransferFailed (naming each missing or corrupt object) if it cannot.
    """
    kind, digest = output.get("type"), output.get("digest")
    if kind not in ("file", "tree") or not _is_digest(digest):
        raise ValueError(f"not an output record: {output!r}")
    stats = TransferStats()
    errors: list[WorkFailed] = []
    check_format(remote)
    blobs = [_Item(ObjectKind.BLOB, digest, output.get("size"))] if kind == "file" else []
    trees = [digest] if kind == "tree" else []
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="sci-fetch") as pool:
        _receive_objects(store, remote, pool, blobs, trees, stats, progress, errors)
    if errors:
        raise TransferFailed(errors, stats)
    return stats.bytes
