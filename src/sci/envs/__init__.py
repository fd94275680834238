"""Software environments (SPEC §10): locks read as package sets, declared environments, their
identities and their preparation."""
