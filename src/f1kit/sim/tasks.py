"""Meta-World v3 task sets and the instruction sentence we give each task.

Meta-World ships no language, so every task gets one imperative sentence written for f1kit. The
sentences name the object and the goal the way a person would instruct the robot; they are the
``task`` strings stored in datasets and handed to policies at evaluation time.
"""

MT10: tuple[str, ...] = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the ring and slide it down over the peg",
    "basketball-v3": "pick up the ball and drop it through the hoop",
    "bin-picking-v3": "move the cube from the left bin into the right bin",
    "box-close-v3": "pick up the lid and put it on top of the box",
    "button-press-topdown-v3": "press the button down from above",
    "button-press-topdown-wall-v3": "reach over the wall and press the button down from above",
    "button-press-v3": "push the button on the front of the box",
    "button-press-wall-v3": "reach around the wall and push the button on the box",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine spout",
    "dial-turn-v3": "turn the dial a quarter turn",
    "disassemble-v3": "lift the ring off the peg",
    "door-close-v3": "swing the door shut",
    "door-lock-v3": "turn the door lock down to lock it",
    "door-open-v3": "pull the door open by its handle",
    "door-unlock-v3": "turn the door lock up to unlock it",
    "hand-insert-v3": "put the hand into the hole in the table",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "pull the drawer open by its handle",
    "faucet-open-v3": "rotate the faucet handle to the left to open it",
    "faucet-close-v3": "rotate the faucet handle to the right to close it",
    "hammer-v3": "pick up the hammer and knock the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck, carry it over the wall and place it at the goal",
    "pick-out-of-hole-v3": "lift the peg out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate forward into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-back-v3": "pull the plate back out of the cabinet",
    "plate-slide-back-side-v3": "slide the plate sideways out of the cabinet",
    "peg-insert-side-v3": "pick up the peg and insert it sideways into the hole",
    "peg-unplug-side-v3": "pull the peg sideways out of the hole",
    "soccer-v3": "push the ball into the goal",
    "stick-push-v3": "grab the stick and use it to push the bottle to the goal",
    "stick-pull-v3": "grab the stick and use it to pull the bottle to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "push-back-v3": "pull the puck back to the goal",
    "reach-v3": "move the gripper to the goal position",
    "reach-wall-v3": "reach over the wall to the goal position",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the edge of the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}

MT50: tuple[str, ...] = tuple(INSTRUCTIONS)

TASK_SETS: dict[str, tuple[str, ...]] = {"MT10": MT10, "MT50": MT50}


def resolve_tasks(tasks: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Expand a task-set name (``"MT10"``, ``"MT50"``) or check a list of Meta-World v3 task names.

    Example: ``resolve_tasks("MT10")[:2] == ("reach-v3", "push-v3")``.
    """
    if isinstance(tasks, str):
        if tasks in TASK_SETS:
            return TASK_SETS[tasks]
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    names = tuple(tasks)
    if not names:
        raise ValueError("tasks: expected at least one Meta-World v3 task name, got none")
    unknown = [t for t in names if t not in INSTRUCTIONS]
    if unknown:
        raise ValueError(
            f"tasks: unknown Meta-World v3 task(s) {unknown}; expected names such as "
            f"'reach-v3' (all 50: f1kit.sim.MT50) or a set name in {sorted(TASK_SETS)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"tasks: duplicate task names in {list(names)}")
    return names


def instruction(task: str) -> str:
    """The instruction sentence for a Meta-World v3 task (e.g. ``"reach-v3"``)."""
    if task not in INSTRUCTIONS:
        raise ValueError(f"task: unknown Meta-World v3 task {task!r}")
    return INSTRUCTIONS[task]


def task_of(sentence: str) -> str | None:
    """The Meta-World v3 task whose instruction is ``sentence``, or None for any other text."""
    return _TASK_OF.get(sentence)


_TASK_OF = {sentence: task for task, sentence in INSTRUCTIONS.items()}
