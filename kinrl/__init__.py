"""The thin application layer: the `kinrl` command that turns configs into library calls."""
