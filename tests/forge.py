"""A kit for forging bundles in tests: start from a real bundle made by `sci export`, change it
the way an attacker would, and seal it again consistently — every manifest digest fixed, the
manifest canonical, store objects at their true addresses — so that only sci's checks of what
the objects *say* can refuse it. Optionally sign the forgery (with a trusted key or not).

    items = Forgery.read(real_zip)          # member name -> bytes
    act = items.result("figure")            # the action result of a node (a dict)
    act["outputs"]["figure"]["digest"] = items.put_blob(b"attacker bytes")
    items.set_result(act)                   # same key: outputs are not part of it
    items.write(tmp / "forged.zip")
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from sci import canonical
from sci.build.keys import key_of
from sci.store.hashing import digest_bytes

MANIFEST = "MANIFEST.json"


class Forgery:
    """The members of a bundle, editable; `write` re-seals them."""

    def __init__(self, items: dict[str, bytes]):
        self.items = dict(items)

    @classmethod
    def read(cls, path: Path) -> Forgery:
        with zipfile.ZipFile(path) as zf:
            return cls({info.filename: zf.read(info) for info in zf.infolist()})

    # -- the manifest and results ------------------------------------------------------------
    @property
    def manifest(self) -> dict:
        return canonical.loads(self.items[MANIFEST])

    def set_manifest(self, manifest: dict) -> None:
        self.items[MANIFEST] = canonical.dumps(manifest)

    def key(self, node: str) -> str:
        return self.manifest["nodes"][node]

    def result(self, node: str) -> dict:
        key = self.key(node)
        return canonical.loads(self.items[f"store/actions/{key[:2]}/{key}"])

    def set_result(self, doc: dict, node: str | None = None) -> str:
        """Store an action result under its own `key` (recomputed from its components when
        they changed, and the manifest's node pointed at it); returns the key."""
        key = key_of(doc["components"])
        if key != doc["key"]:
            old = doc["key"]
            self.items.pop(f"store/actions/{old[:2]}/{old}", None)
            doc = dict(doc, key=key)
            manifest = self.manifest
            for name, k in manifest["nodes"].items():
                if k == old:
                    manifest["nodes"][name] = key
            self.set_manifest(manifest)
        self.items[f"store/actions/{key[:2]}/{key}"] = canonical.dumps(doc)
        return key

    # -- objects -------------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        digest = digest_bytes(data)
        self.items[f"store/blobs/{digest[:2]}/{digest}"] = data
        return digest

    def tree(self, digest: str) -> list[list]:
        return canonical.loads(self.items[f"store/trees/{digest[:2]}/{digest}"])["entries"]

    def put_tree(self, entries: list[list]) -> str:
        """A tree listing exactly as given (unsorted, duplicated, escaping: whatever the test wants)."""
        data = canonical.dumps({"type": "sci.tree", "format": 1, "entries": entries})
        digest = digest_bytes(data)
        self.items[f"store/trees/{digest[:2]}/{digest}"] = data
        return digest

    # -- sealing -------------------------------------------------------------------------------
    def write(self, dst: Path, *, manifest_bytes: bytes | None = None) -> Path:
        """The forgery as a zip whose manifest lists every member with its true digest (or
        `manifest_bytes` as given), MANIFEST.json first."""
        manifest = self.manifest
        old = {r["path"]: r for r in manifest["members"]}
        rows = []
        for name, data in sorted(self.items.items()):
            if name != MANIFEST:
                rows.append({"path": name, "digest": digest_bytes(data), "size": len(data),
                             "executable": old.get(name, {}).get("executable", False)})
        manifest["members"] = rows
        data = canonical.dumps(manifest) if manifest_bytes is None else manifest_bytes
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST, data)
            for name, blob in sorted(self.items.items()):
                if name != MANIFEST:
                    zf.writestr(name, blob)
        return dst
