"""Step code of sci's bundled investigation: noise bias in a damped oscillator's damping ratio.

See rules/README.md for the question, the pipeline and what each step contributes.
"""
