"""sci: a declarative, make-like, content-addressed pipeline runner for scientific work."""

__version__ = "0.1.0"

# Bump when the meaning of a cache key changes (keys.py), so old action results are never
# mistaken for new ones. Store layout and record formats carry their own versions
# (store.STORE_FORMAT, records.RECORD_FORMAT).
KEY_FORMAT = 1
