"""What model runs and who made it: the bundle, its signature, its reference outputs, and
the runtimes and accelerators that run it. Depends on ``edge.analysis`` only."""
