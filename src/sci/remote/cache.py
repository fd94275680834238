"""The build's view of a remote store: consult its action cache on a local miss, fetch only
the outputs a build needs ("build without the bytes"), and upload what a build produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from sci.store.cas import Store


@dataclass
class RemoteCache:
    store: Store
    remote: object  # sci.remote.stores.Remote
    emit: Callable[..., None]
    stats: object = None  # sci.remote.transfer.TransferStats
    looked_up: int = 0
    hits: int = 0
    disabled: bool = False
    _warned: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        from sci.remote.transfer import TransferStats

        self.stats = TransferStats()

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
