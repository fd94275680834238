"""What a run leaves: outcomes, manifests, logs, state and the record models."""
