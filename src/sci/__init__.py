"""sci: a declarative, make-like, content-addressed pipeline runner for scientific work."""

__version__ = "0.1.0"

# Bump when the meaning of a cache key changes (build/keys.py), so old action results are never
# mistaken for new ones. tests/test_golden_keys.py pins literal key digests: a change that makes
# it fail changes the key format, so it bumps this constant and re-pins those digests in the
# same commit. Store layout and record formats carry their own versions
# (store.cas.STORE_FORMAT, records.run.RECORD_FORMAT).
KEY_FORMAT = 1
