"""Meta-World v3 on CPU: seeded fast-rendering envs, expert demos, closed-loop evaluation."""

from f1kit.sim.demos import DemoConfig, DemoResult, generate_demos, run_expert_episode
from f1kit.sim.env import CAMERAS, MetaWorldEnv, layout_seed, load_simulator
from f1kit.sim.evaluate import EvalConfig, EvalReport, Policy, TaskResult, evaluate, wilson_interval
from f1kit.sim.expert import ScriptedExpert
from f1kit.sim.recording import side_by_side, write_rollout
from f1kit.sim.tasks import (
    INSTRUCTIONS,
    MT10,
    MT50,
    TASK_SETS,
    instruction,
    resolve_tasks,
    task_of,
)

__all__ = [
    "CAMERAS",
    "INSTRUCTIONS",
    "MT10",
    "MT50",
    "TASK_SETS",
    "DemoConfig",
    "DemoResult",
    "EvalConfig",
    "EvalReport",
    "MetaWorldEnv",
    "Policy",
    "ScriptedExpert",
    "TaskResult",
    "evaluate",
    "generate_demos",
    "instruction",
    "layout_seed",
    "load_simulator",
    "resolve_tasks",
    "run_expert_episode",
    "side_by_side",
    "task_of",
    "wilson_interval",
    "write_rollout",
]
