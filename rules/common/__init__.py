"""Helpers shared by the investigation's steps: the oscillator model, estimators, tables, figures."""
