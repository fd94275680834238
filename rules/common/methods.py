"""The names of the three damping-ratio estimators, in the order every table and figure uses.

Kept apart from estimators.py so that the summary and the figure, which only need the names,
do not count the estimators' code as theirs: editing an estimator then re-runs `fit`, and the
steps after it run again only if the estimates themselves change.
"""

METHODS = ("nls", "ar2", "logdec")
