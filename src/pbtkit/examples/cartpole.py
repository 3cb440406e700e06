"""PPO on gymnasium's CartPole-v1, with PBT tuning the learning rate, entropy
coefficient, clip range and discount.

The agent: separate actor and critic MLPs (two hidden layers of 64, tanh), trained with
PPO's clipped objective, generalised advantage estimation (lambda 0.95), a value loss
weight of 0.5, gradient clipping at 0.5 and Adam. One step is one PPO iteration: a
rollout of 128 steps in each of 8 environments (1,024 environment steps), then 4 epochs
over it in minibatches of 256. Episodes that reach the time limit bootstrap from the
critic, as the time limit is not part of the task. Nothing is rendered.

At the end of each trial the greedy policy plays 10 episodes on fixed seeds; their mean
return, ``eval_return`` (at most 500), is what PBT ranks members by. Environments are
not reset between trials: their state goes into the checkpoint with the weights and the
optimizer's moments (pbtkit.torch), so episodes run on as if training had never stopped.

PPO on CartPole is notoriously unstable: a run that reached 500 can fall back to 150 a few
iterations later. PBT's exploit keeps the members that held on, which is where it beats
random search at the same number of environment steps (``benchmarks/torch_examples.py``).

Runs in a few minutes on 2 cores: ``python examples/cartpole.py``. Needs
``pip install 'pbtkit[rl]'`` (PyTorch and gymnasium).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import pbtkit as pk
from pbtkit.examples import run_in

try:
    import gymnasium as gym
    import torch
    from torch import nn
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise pk.ConfigError(
        f"the CartPole example needs PyTorch and gymnasium ({_missing}): pip install 'pbtkit[rl]'"
    ) from _missing

import pbtkit.torch as pt

__all__ = ["SETTINGS", "SPACE", "ActorCritic", "evaluate", "load_policy", "main", "train"]

ENV_ID = "CartPole-v1"
N_ENVS, N_STEPS = 8, 128
EPOCHS, MINIBATCH = 4, 256
GAE_LAMBDA, VALUE_COEF, MAX_GRAD_NORM = 0.95, 0.5, 0.5
EVAL_EPISODES, EVAL_SEED = 10, 1_000_000
STEPS_PER_ITERATION = N_ENVS * N_STEPS

SPACE = {
    "lr": pk.LogUniform(1e-4, 1e-2),
    "ent_coef": pk.LogUniform(1e-4, 0.1),
    "clip_range": pk.Uniform(0.05, 0.4),
    "gamma": pk.Uniform(0.9, 0.999),
}


class ActorCritic(nn.Module):
    """The policy (logits of the two actions) and the value function, separate MLPs."""

    def __init__(self, n_obs: int = 4, n_actions: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.actor = nn.Sequential(
            nn.Linear(n_obs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, n_actions),
        )  # fmt: skip
        self.critic = nn.Sequential(
            nn.Linear(n_obs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, 1),
        )  # fmt: skip

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Action logits and state values of a batch of observations."""
        return self.actor(obs), self.critic(obs).squeeze(-1)


@torch.no_grad()
def evaluate(
    policy: ActorCritic, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED
) -> list[float]:
    """The returns of ``episodes`` greedy episodes, on the seeds ``seed, seed + 1, ...``."""
    envs = [gym.make(ENV_ID) for _ in range(episodes)]
    device = next(policy.parameters()).device
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    returns = np.zeros(episodes)
    running = np.ones(episodes, dtype=bool)
    while running.any():
        logits, _ = policy(torch.as_tensor(obs, dtype=torch.float32, device=device))
        actions = logits.argmax(dim=1).cpu().numpy()
        for i in np.flatnonzero(running):
            obs[i], reward, terminated, truncated, _ = envs[i].step(int(actions[i]))
            returns[i] += float(reward)
            running[i] = not (terminated or truncated)
    for env in envs:
        env.close()
    return [float(r) for r in returns]


def load_policy(checkpoint: str | Path) -> ActorCritic:
    """The policy saved in a checkpoint directory (a run's best member's, say)."""
    policy = ActorCritic()
    pt.load(checkpoint, model=policy)
    return policy


class _Rollout:
    """Eight environments stepped together, each reset as its episode ends.

    Their state (the cart-pole's four numbers, the episode's length and return so far)
    goes into the checkpoint, so that episodes run on across trials as if training had
    never stopped; after an exploit, the donor's environments come with its weights.
    The raw environment is stepped and the time limit of CartPole-v1 (500 steps)
    applied here, because a wrapper's step counter cannot be restored.
    """

    def __init__(self, seed: int, saved: dict[str, Any] | None) -> None:
        spec = gym.spec(ENV_ID)
        self.limit = int(spec.max_episode_steps or 500)
        self.envs = [gym.make(ENV_ID).unwrapped for _ in range(N_ENVS)]
        self.obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)])
        self.lengths = np.zeros(N_ENVS, dtype=np.int64)
        self.episode_returns = np.zeros(N_ENVS)
        if saved:
            for i, env in enumerate(self.envs):
                env.state = np.asarray(saved["state"][i], dtype=np.float64)  # type: ignore[attr-defined]
            self.obs = np.asarray(saved["state"], dtype=np.float32).copy()
            self.lengths = np.asarray(saved["lengths"], dtype=np.int64).copy()
            self.episode_returns = np.asarray(saved["returns"], dtype=np.float64).copy()
        self.finished: list[float] = []

    def state(self) -> dict[str, Any]:
        """What the checkpoint keeps of the environments."""
        return {
            "state": np.stack([np.asarray(env.state, dtype=np.float64) for env in self.envs]),  # type: ignore[attr-defined]
            "lengths": self.lengths.copy(),
            "returns": self.episode_returns.copy(),
        }

    def collect(
        self, policy: ActorCritic, gamma: float, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        obs = np.zeros((N_STEPS, N_ENVS, 4), dtype=np.float32)
        actions = np.zeros((N_STEPS, N_ENVS), dtype=np.int64)
        log_probs = np.zeros((N_STEPS, N_ENVS), dtype=np.float32)
        values = np.zeros((N_STEPS + 1, N_ENVS), dtype=np.float32)
        rewards = np.zeros((N_STEPS, N_ENVS), dtype=np.float32)
        ended = np.zeros((N_STEPS, N_ENVS), dtype=np.float32)
        with torch.no_grad():
            for t in range(N_STEPS):
                logits, value = policy(torch.as_tensor(self.obs, dtype=torch.float32))
                action = torch.multinomial(logits.softmax(dim=1), 1, generator=generator)[:, 0]
                obs[t], actions[t], values[t] = self.obs, action.numpy(), value.numpy()
                log_probs[t] = logits.log_softmax(dim=1).gather(1, action[:, None])[:, 0].numpy()
                for i, env in enumerate(self.envs):
                    nxt, reward, terminated, _, _ = env.step(int(actions[t, i]))
                    rewards[t, i] = float(reward)
                    self.episode_returns[i] += float(reward)
                    self.lengths[i] += 1
                    truncated = self.lengths[i] >= self.limit
                    if terminated or truncated:
                        if truncated and not terminated:
                            # the time limit is not the task's end: bootstrap from the critic
                            _, tail = policy(torch.as_tensor(nxt, dtype=torch.float32)[None])
                            rewards[t, i] += gamma * float(tail[0])
                        ended[t, i] = 1.0
                        self.finished.append(float(self.episode_returns[i]))
                        self.episode_returns[i], self.lengths[i] = 0.0, 0
                        nxt, _ = env.reset()
                    self.obs[i] = nxt
            _, last = policy(torch.as_tensor(self.obs, dtype=torch.float32))
            values[N_STEPS] = last.numpy()
        advantages = np.zeros_like(rewards)
        running = np.zeros(N_ENVS, dtype=np.float32)
        for t in reversed(range(N_STEPS)):
            alive = 1.0 - ended[t]
            delta = rewards[t] + gamma * values[t + 1] * alive - values[t]
            running = delta + gamma * GAE_LAMBDA * alive * running
            advantages[t] = running
        flat = {
            "obs": obs.reshape(-1, 4),
            "actions": actions.reshape(-1),
            "log_probs": log_probs.reshape(-1),
            "advantages": advantages.reshape(-1),
            "returns": (advantages + values[:-1]).reshape(-1),
        }
        return {name: torch.as_tensor(array) for name, array in flat.items()}

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _update(
    policy: ActorCritic,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    hparams: dict[str, Any],
    generator: torch.Generator,
) -> dict[str, float]:
    clip, ent_coef = float(hparams["clip_range"]), float(hparams["ent_coef"])
    n = len(batch["obs"])
    sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0}
    updates = 0
    for _ in range(EPOCHS):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, MINIBATCH):
            idx = order[start : start + MINIBATCH]
            logits, value = policy(batch["obs"][idx])
            log_p = logits.log_softmax(dim=1)
            new_log_prob = log_p.gather(1, batch["actions"][idx][:, None])[:, 0]
            ratio = (new_log_prob - batch["log_probs"][idx]).exp()
            adv = batch["advantages"][idx]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
            entropy = -(log_p.exp() * log_p).sum(dim=1).mean()
            value_loss = 0.5 * (value - batch["returns"][idx]).pow(2).mean()
            loss = policy_loss - ent_coef * entropy + VALUE_COEF * value_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            sums["policy_loss"] += policy_loss.item()
            sums["value_loss"] += value_loss.item()
            sums["entropy"] += entropy.item()
            updates += 1
    return {name: total / updates for name, total in sums.items()}


def train(trial: pk.Trial) -> None:
    """Run the trial's PPO iterations from its parent checkpoint; report training
    returns and losses, then the greedy evaluation return."""
    torch.manual_seed(trial.member)
    # PPO's batches are small: the CPU is quicker than a round trip to a GPU here.
    policy = ActorCritic()
    optimizer = torch.optim.Adam(policy.parameters(), lr=float(trial.hparams["lr"]), eps=1e-5)
    extra = pt.load(trial, model=policy, optimizer=optimizer, device="cpu")
    env_steps = int(extra.get("env_steps", 0))
    seed = trial.member * 1_000_003 + trial.start_step
    generator = torch.Generator().manual_seed(seed)
    rollout = _Rollout(seed, extra.get("envs"))
    try:
        for step in trial.steps():
            batch = rollout.collect(policy, float(trial.hparams["gamma"]), generator)
            losses = _update(policy, optimizer, batch, trial.hparams, generator)
            env_steps += STEPS_PER_ITERATION
            recent = rollout.finished[-N_ENVS:]
            if recent:
                losses["episode_return"] = float(np.mean(recent))
            trial.report(step, env_steps=env_steps, **losses)
        trial.report(trial.last_step, eval_return=float(np.mean(evaluate(policy))))
        pt.save(trial, model=policy, optimizer=optimizer, env_steps=env_steps, envs=rollout.state())
    finally:
        rollout.close()


#: The run's settings: 8 members x 12 iterations (12,288 environment steps each), ready
#: after every iteration, the bottom quarter copying the top quarter. With twice the
#: steps most members of either PBT or random search reach the ceiling of 500, and
#: there is nothing left to compare.
SETTINGS: dict[str, Any] = {
    "space": SPACE,
    "metric": "eval_return",
    "mode": "max",
    "population": 8,
    "workers": 2,
    "ready_every": 1,
    "total_steps": 12,
    "exploit": pk.Truncation(0.25),
    "name": "cartpole",
}


def main(
    directory: str | Path = "pbt-cartpole", *, progress: bool | None = None, **overrides: Any
) -> pk.Result:
    """Run :data:`SETTINGS` into ``directory`` (``overrides`` win)."""
    return run_in(directory, train, overrides, progress=progress, **SETTINGS)


if __name__ == "__main__":
    result = main()
    print(result.summary_text())
    best = result.best
    assert best.checkpoint is not None
    test = evaluate(load_policy(best.checkpoint), episodes=20, seed=2_000_000)
    print(f"best member's greedy return over 20 new episodes: {np.mean(test):.1f}")
