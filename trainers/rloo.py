"""RLOO (Ahmadian et al. 2024): k samples per prompt, each one's baseline the mean reward of
the other k - 1, the sequence KL folded into the reward.

    train("rloo", RLOOConfig(), "data/l2", "runs/rloo", init="runs/sft")

The reward of a sample is its score minus `beta` x its sequence KL estimate (k1 by default:
`sum_t log p - log q` of the rollout, a constant of it), the advantage that reward minus the
leave-one-out mean, and the loss REINFORCE's, `-A * sum_t log p(y_t)` per sequence, averaged
over sequences (with the importance ratio, clipped, when `--num-iterations` reuses a rollout).
It is GRPO's step (`trainers/grpo.py`) with these advantages and this aggregation.
"""

from __future__ import annotations

import jax
import optax
from flax import nnx

from tasks.registry import EXAMPLES_KIND
from trainers.config import RLOOConfig
from trainers.engine import Method, Metrics
from trainers.estimators import leave_one_out_advantages
from trainers.grpo import policy_gradient_step, prepare
from trainers.online import Rollout


def rloo_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    opt_state: optax.OptState,
    batch: Rollout,
    key: jax.Array | None = None,
    *,
    config: RLOOConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """RLOO's updates on one rollout. Pure; the engine jits it with the state donated."""
    del key

    def advantages_of(rewards: jax.Array) -> jax.Array:
        return leave_one_out_advantages(rewards, config.group_size)

    return policy_gradient_step(
        graphdef, params, opt_state, batch, config=config, optimizer=optimizer,
        advantages_of=advantages_of, loss_type="sequence_sum",
    )  # fmt: skip


METHOD = Method(
    name="rloo",
    config_class=RLOOConfig,
    data_kind=EXAMPLES_KIND,
    prepare=prepare,
    step=rloo_step,
)
