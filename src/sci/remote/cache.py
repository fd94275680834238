"""The build's view of a remote store: consult its action cache on a local miss, fetch only
the outputs a build needs ("build without the bytes"), and upload what a build produced."""

from __future__ import annotations

from typing import Callable

from sci.store.cas import Store
from sci.values import Value


class RemoteCache(Value):
    """One build's remote: its store, the `emit` for warnings, and what the build moved (`stats`)."""

    __slots__ = _FIELDS = ("store", "remote", "emit", "stats", "looked_up", "hits", "disabled", "_warned")

    def __init__(self, store: Store, remote: object, emit: Callable[..., None], stats: object = None,
                 looked_up: int = 0, hits: int = 0, disabled: bool = False, _warned: set[str] | None = None):
        from sci.remote.transfer import TransferStats

        self.store = store
        self.remote = remote  # sci.remote.stores.Remote
        self.emit = emit
        self.stats = stats if stats is not None else TransferStats()  # sci.remote.transfer.TransferStats
        self.looked_up, self.hits, self.disabled = looked_up, hits, disabled
        self._warned = _warned if _warned is not None else set()

    def lookup(self, key: str) -> dict | None:
        """The remote's action result for `key` (checked, not yet admitted), or None."""
        from sci.errors import WorkFailed
        from sci.remote.stores import RemoteNotFound
        from sci.remote.transfer import fetch_action

        if self.disabled:
            return None
        self.looked_up += 1
        try:
            action = fetch_action(self.store, self.remote, key)
        except RemoteNotFound as exc:  # nothing was ever pushed there: every look-up would miss
            self.disabled = True
            self._warn(f"{exc.message}; building without the remote")
            return None
        except WorkFailed as exc:
            self._warn(f"remote action result {key[:12]} unusable: {exc.message}; the node will be built")
            return None
        if action is not None:
            self.hits += 1
        return action

    def fetch(self, key: str, action: dict) -> bool:
        """Download (verified) every object of `action`'s outputs and its logs, then admit the
        action result (never before all it names is here: `sci fsck` holds the store to that).
        False, with a warning, when the remote's copy is missing or corrupt."""
        from sci.errors import WorkFailed
        from sci.remote.transfer import fetch_logs, fetch_output

        try:
            for rec in action["outputs"].values():
                fetch_output(self.store, self.remote, rec, progress=self.stats.record)
            fetch_logs(self.store, self.remote, action, progress=self.stats.record)
        except WorkFailed as exc:
            self._warn(f"{action.get('node', key[:12])}: remote outputs not admitted ({exc.message}); "
                       "the node will be built")
            return False
        self.store.put_action(key, action)
        return True

    def _warn(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            self.emit("warning", None, message=text)


def open_remote_cache(store: Store, remotes: dict, name: str | None, base_dir, emit) -> RemoteCache | None:
    from sci.remote.stores import open_remote, select_remote

    chosen = select_remote(remotes, name)
    if chosen is None:
        return None
    return RemoteCache(store, open_remote(chosen[1], name=chosen[0], base_dir=base_dir), emit)
