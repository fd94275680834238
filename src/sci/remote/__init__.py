"""Remote stores: kinds, transfer, push/pull and the build's remote cache."""
