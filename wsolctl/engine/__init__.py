"""The shared engine: plan runs from a recipe, train with per-epoch evaluation, select (B-LOC /
B-CL) and score on test. Methods plug in through :class:`wsolctl.methods.base.Method`; nothing
here branches on a method's name."""
