"""JAX/Flax/Optax model, sampler and RLHF trainers. May import `tasks` (for the gold reward)."""
