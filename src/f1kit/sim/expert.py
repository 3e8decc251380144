"""Meta-World's scripted expert for one task, as an f1kit policy (``reset`` / ``select_action``)."""

import importlib
import warnings

import numpy as np

from f1kit.sim.env import load_simulator


class ScriptedExpert:
    """Meta-World's scripted expert for one task as a policy (``reset`` / ``select_action``).

    It reads the raw 39-float observation (``observation.environment_state``).
    """

    def __init__(self, task: str) -> None:
        load_simulator()
        policies = importlib.import_module("metaworld.policies")
        if task not in policies.ENV_POLICY_MAP:
            raise ValueError(f"task: no scripted expert for {task!r}")
        self.task = task
        self._policy = policies.ENV_POLICY_MAP[task]()

    def reset(self) -> None:
        """The experts are memoryless: nothing to clear."""

    def select_action(self, observation: dict[str, object]) -> np.ndarray:
        state = np.asarray(observation["observation.environment_state"], dtype=np.float64)
        with warnings.catch_warnings():
            # The experts' gains exceed the action box on purpose; the env clips.
            warnings.simplefilter("ignore", UserWarning)
            return np.asarray(self._policy.get_action(state), dtype=np.float32)
