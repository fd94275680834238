"""One build: keys, inputs, the decision, the scheduler, resources and the short paths."""
