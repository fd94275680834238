"""Evidence for a reviewer: the dossier, its page, citations, bundles, signatures, repro-check."""
