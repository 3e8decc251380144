"""F1Policy at the robot: history by env step whichever entry point drives it (checked against the
training window's frames), lazy tokenizer encoding, a cached instruction, and refusals of bad input
and of incomplete or inconsistent policy directories, each naming its key."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from f1kit.data import WindowConfig, WindowedDataset, read_dataset, write_dataset
from f1kit.model import F1, F1Policy, PretrainedError, load_pretrained
from tests.f1kit.conftest import coded_episodes
from tests.f1kit.model.helpers import micro_config, micro_model

OFFSETS = (-9, -6, -3, 0)
STEPS = 14


def _observation(seed: int, b: int | None = None, step: int | None = None) -> dict:
    rng = np.random.default_rng(seed)
    shape = (64, 64, 3) if b is None else (b, 64, 64, 3)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    if step is not None:
        image[..., 0, 0, :] = step  # the frame says which env step it is
    return {
        "observation.images.corner": image,
        "observation.state": rng.normal(size=(4,) if b is None else (b, 4)).astype(np.float32),
        "task": "reach the goal",
    }


def _tagging(model: F1) -> tuple[list[int], list[torch.Tensor]]:
    """Replace the tokenizer's codes by the frame's step tag (so a history names its steps) and
    record every frame encoded and every history the model is given."""
    encoded: list[int] = []
    histories: list[torch.Tensor] = []
    original_codes, original_predict = model.frame_codes, model.predict

    def frame_codes(frames: torch.Tensor) -> torch.Tensor:
        codes = original_codes(frames)
        tags = frames[:, 0, 0, 0, 0].long()
        encoded.extend(tags.tolist())
        return tags[:, None].expand_as(codes).clone()

    def predict(images, texts, state, history_codes, **kwargs):
        histories.append(history_codes[:, :, 0].clone())
        return original_predict(images, texts, state, history_codes, **kwargs)

    model.frame_codes, model.predict = frame_codes, predict
    return encoded, histories


def _window_steps(tmp_path, steps: int) -> list[list[int]]:
    """The history rows the training window picks at each step of one episode."""
    root = write_dataset(tmp_path / "ep", coded_episodes([steps]), fps=10)
    data = WindowedDataset(read_dataset(root), WindowConfig(history=OFFSETS, chunk=2))
    return [data[t]["history"][:, 0, 0, 0, 0].long().tolist() for t in range(steps)]


def _model(execute: int) -> F1:
    torch.manual_seed(0)
    action = {"action_dim": 4, "state_dim": 4, "chunk": 3, "execute": execute}
    return F1(micro_config(overrides={"action": action}))


@pytest.mark.parametrize("loop", ["select_action", "observe+predict_action_chunk"])
@pytest.mark.parametrize("execute", [1, 2, 3])
def test_history_follows_env_steps_like_the_training_window(tmp_path, loop, execute) -> None:
    model = _model(execute)
    policy = F1Policy(model, seed=0, history_offsets=OFFSETS)
    _, histories = _tagging(model)
    for step in range(STEPS):
        obs = _observation(step, step=step)
        if loop == "select_action":
            policy.select_action(obs)
        else:
            policy.observe(obs)
            if step % execute == 0:
                policy.predict_action_chunk(obs)
    window = _window_steps(tmp_path, STEPS)
    plans = list(range(0, STEPS, execute))
    assert [h[0].tolist() for h in histories] == [window[t] for t in plans]


def test_predict_action_chunk_alone_records_each_new_observation_once() -> None:
    model = micro_model()
    policy = F1Policy(model, seed=0)
    _, histories = _tagging(model)
    for step in range(5):
        obs = _observation(step, step=step)
        policy.predict_action_chunk(obs)
        policy.predict_action_chunk(obs)  # the same observation again: still step `step`
    assert [h[0].tolist() for h in histories[::2]] == [
        [0, 0, 0, 0],
        [0, 0, 0, 1],
        [0, 0, 0, 2],
        [0, 0, 0, 3],
        [0, 0, 1, 4],
    ]
    assert all(torch.equal(a, b) for a, b in zip(histories[::2], histories[1::2], strict=True))


def test_only_the_frames_the_history_reads_are_encoded_each_once() -> None:
    model = _model(execute=3)  # plans at steps 0, 3, 6, 9: the history reads 0, 3, 6, 9 only
    policy = F1Policy(model, seed=0, history_offsets=OFFSETS)
    encoded, _ = _tagging(model)
    for step in range(12):
        policy.select_action(_observation(step, step=step))
    assert sorted(encoded) == [0, 3, 6, 9]


@pytest.mark.parametrize("execute", [1, 2, 3])
def test_select_action_encodes_each_frame_a_plan_reads_as_it_arrives(execute) -> None:
    """Under select_action the plan steps are known: every frame a plan will read is encoded at
    its own step (so a plan step encodes one frame, not the four it reads), and no other."""
    model = _model(execute)
    policy = F1Policy(model, seed=0, history_offsets=OFFSETS)
    encoded, histories = _tagging(model)
    when: list[int] = []
    tagged = model.frame_codes

    def frame_codes(frames: torch.Tensor) -> torch.Tensor:
        when.extend([policy._step] * frames.shape[0])
        return tagged(frames)

    model.frame_codes = frame_codes
    for step in range(STEPS):
        policy.select_action(_observation(step, step=step))
    read = {int(t) for h in histories for t in h[0]}
    plans = range(0, STEPS + 9, execute)  # this loop's plans and the ones right after it
    will_read = {max(0, p + o) for p in plans for o in OFFSETS} & set(range(STEPS))
    assert read <= set(encoded)
    assert sorted(encoded) == sorted(will_read)  # each frame a plan reads, once; no other
    assert encoded == when  # ... at its own env step, as it arrives


def test_an_unchanged_instruction_is_tokenised_once() -> None:
    model = micro_model()
    policy = F1Policy(model, seed=0)
    tokenizer = model.understanding.tokenizer
    calls: list[list[str]] = []

    class Counting:
        vocab_size, max_length = tokenizer.vocab_size, tokenizer.max_length

        def __call__(self, texts, device=None):
            calls.append(list(texts))
            return tokenizer(texts, device)

        def decode(self, ids):
            return tokenizer.decode(ids)

    model.understanding._tokenizer = Counting()
    for step in range(6):  # chunk 3, execute 2: three plans
        policy.select_action(_observation(step))
    assert calls == [["reach the goal"]]
    policy.select_action({**_observation(6), "task": "open the drawer"})
    policy.select_action({**_observation(7), "task": "open the drawer"})
    assert calls == [["reach the goal"], ["open the drawer"]]


def test_a_batch_size_change_without_reset_is_refused() -> None:
    policy = F1Policy(micro_model(generation=False), seed=0)
    batched = _observation(0, b=2)
    batched["task"] = ["a", "b"]
    assert policy.select_action(batched).shape == (2, 4)
    with pytest.raises(ValueError, match=r"batch: .*2 rows.*got 1.*reset\(\)"):
        policy.select_action(_observation(1))
    policy.reset()
    assert policy.select_action(_observation(1)).shape == (4,)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_state_or_float_images_are_refused_naming_the_key(bad) -> None:
    policy = F1Policy(micro_model(), seed=0)
    obs = _observation(0)
    obs["observation.state"][2] = bad
    with pytest.raises(ValueError, match=r"observation\.state: .*NaN or inf"):
        policy.select_action(obs)
    obs = _observation(0)
    image = obs["observation.images.corner"].astype(np.float32) / 255.0
    # A float image in [0, 1] is accepted...
    policy.reset()
    policy.predict_action_chunk({**obs, "observation.images.corner": image})
    image[3, 4, 1] = bad
    policy.reset()
    with pytest.raises(ValueError, match=r"observation\.images\.corner: .*NaN or inf"):
        policy.predict_action_chunk({**obs, "observation.images.corner": image})


def test_empty_batches_bad_instructions_are_named() -> None:
    policy = F1Policy(micro_model(), seed=0)
    empty = _observation(0, b=0)
    empty["task"] = []
    with pytest.raises(ValueError, match=r"observation\.images\.corner: .*batch of 0"):
        policy.select_action(empty)
    with pytest.raises(ValueError, match=r"task\[0\]: .*UTF-8"):
        policy.select_action({**_observation(0), "task": "\ud800"})
    with pytest.raises(TypeError, match=r"task: expected a str or a list of str, got int"):
        policy.select_action({**_observation(0), "task": 5})
    with pytest.raises(TypeError, match=r"task\[1\]: expected str, got int"):
        policy.select_action({**_observation(0, b=2), "task": ["a", 5]})


def _saved(tmp_path, generation: bool = True):
    return F1Policy(micro_model(generation=generation), seed=0).save_pretrained(tmp_path / "p")


def test_a_policy_directory_without_its_processor_is_refused(tmp_path) -> None:
    out = _saved(tmp_path)
    for f in out.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            f.unlink()
    with pytest.raises(PretrainedError, match=r"processor"):
        load_pretrained(out)


def test_unknown_policy_config_keys_are_refused(tmp_path) -> None:
    out = _saved(tmp_path, generation=False)
    config = json.loads((out / "config.json").read_text())
    config["policy"]["camera"] = ["corner"]  # a typo of 'cameras'
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedError, match=r"policy: unknown keys \['camera'\]"):
        load_pretrained(out)


def test_weights_of_another_dtype_or_non_finite_are_refused(tmp_path) -> None:
    out = _saved(tmp_path, generation=False)
    path = out / "model.safetensors"
    clean = load_file(str(path))
    tensors = dict(clean)
    tensors["action_head.action_out.weight"] = tensors["action_head.action_out.weight"].half()
    save_file(tensors, str(path))
    with pytest.raises(PretrainedError, match=r"dtype.*action_head\.action_out\.weight: file "):
        load_pretrained(out)
    tensors = dict(clean)
    tensors["action_head.action_out.bias"] = tensors["action_head.action_out.bias"].clone()
    tensors["action_head.action_out.bias"][0] = float("nan")
    save_file(tensors, str(path))
    with pytest.raises(PretrainedError, match=r"non-finite.*action_head\.action_out\.bias"):
        load_pretrained(out)


def test_the_cached_instruction_acts_like_the_strings() -> None:
    model = micro_model(generation=False)
    policy = F1Policy(model, seed=4)
    obs = _observation(3)
    chunk = policy.predict_action_chunk(obs)
    images = torch.from_numpy(obs["observation.images.corner"]).permute(2, 0, 1)[None, None]
    state = torch.from_numpy(obs["observation.state"])[None]
    generator = torch.Generator().manual_seed(4)
    direct = model.predict(images, ["reach the goal"], state, None, generator=generator).actions
    torch.testing.assert_close(chunk, direct, rtol=0, atol=0)


def test_a_default_embodiment_stands_in_for_observations_without_one(tmp_path) -> None:
    from f1kit.data import ProcessorError, make_processors
    from tests.f1kit.test_processor import two_datasets

    pre, post = make_processors(two_datasets(tmp_path))
    model = micro_model()
    obs = _observation(1)
    obs["observation.state"] = obs["observation.state"][:3]  # the datasets' 3 state dims
    with pytest.raises(ProcessorError, match=r"embodiment: .* say which"):
        F1Policy(model, preprocessor=pre, postprocessor=post).predict_action_chunk(obs)
    default = F1Policy(model, preprocessor=pre, postprocessor=post, embodiment="gripper")
    named = F1Policy(model, preprocessor=pre, postprocessor=post)
    chunk = default.predict_action_chunk(obs)
    assert torch.equal(chunk, named.predict_action_chunk({**obs, "embodiment": "gripper"}))
    other = F1Policy(model, preprocessor=pre, postprocessor=post, embodiment="arm")
    assert not torch.equal(chunk, other.predict_action_chunk(obs))  # the id is really used
