"""sci.yaml → a validated document: YAML with positions, the models, parameters."""
