"""Evaluations of trained runs. May import `tasks` and `trainers`."""
