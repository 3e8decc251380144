"""The lerobot side of ``check_pi0_parity.py``; runs in a Python with lerobot 0.6 and transformers.

Builds a tiny random ``PI0Policy`` (or ``PI05Policy`` with ``--variant pi05``: adaptive expert
norms, no state argument) (lerobot has no small variant: two module attributes are
patched before construction, the Gemma sizes and the SigLIP tower's), saves it with
``save_pretrained`` (config.json + model.safetensors, what users convert), and records, for fixed
inputs and noise:

    sample_actions   the 10-step Euler sampler (prefix KV cache, expert-only steps), with the
                     raw network output of every step (a hook on action_out_proj)
    forward          the uncached joint pass at a fixed (noise, time): v_t and the per-entry MSE

Everything goes to ``<out>/lerobot.safetensors`` and ``<out>/lerobot.json``: no pickle crosses
the process boundary. Usage: ``python pi0_parity_lerobot.py --out DIR [--variant pi05]``.
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub; fail fast if it did

import torch
from safetensors.torch import save_file

# Sizes of the tiny model: pi0's geometry (8 query heads, 1 KV head, shared head_dim, both
# streams equally deep) at a width a CPU runs in seconds.
VLM = {"width": 64, "depth": 2, "mlp_dim": 128, "num_heads": 8, "num_kv_heads": 1, "head_dim": 16}
EXPERT = {**VLM, "width": 32, "mlp_dim": 64}
SIGLIP = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
SIGLIP_MLP, PATCH, IMAGE, VOCAB = 64, 4, 16, 1024
CHUNK, STATE, ACTION, TEXT, BATCH = 8, 6, 6, 8, 2


def tiny_policy(seed: int, variant: str = "pi0"):
    """A random PI0Policy (PI05Policy) at the sizes above, every parameter perturbed (lerobot
    starts its norms, pi0.5's adaptive-norm weights and its biases at zero, which would hide a
    missing +1, an ignored conditioning or a dropped bias)."""
    from lerobot.configs.types import FeatureType, PolicyFeature

    if variant == "pi05":
        import lerobot.policies.pi05.modeling_pi05 as modeling
        from lerobot.policies.pi05 import PI05Config as PI0Config
        from lerobot.policies.pi05 import PI05Policy as PI0Policy
    else:
        import lerobot.policies.pi0.modeling_pi0 as modeling
        from lerobot.policies.pi0 import PI0Config, PI0Policy

    def gemma_config(variant: str):
        return modeling.GemmaConfig(**(VLM if variant == "gemma_2b" else EXPERT))

    original = modeling.PaliGemmaForConditionalGenerationWithPiGemma

    def small_paligemma(config):
        vision = config.vision_config
        for key, value in SIGLIP.items():
            setattr(vision, key, value)
        vision.intermediate_size, vision.patch_size = SIGLIP_MLP, PATCH
        vision.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = VOCAB
        return original(config)

    modeling.get_gemma_config = gemma_config
    modeling.PaliGemmaForConditionalGenerationWithPiGemma = small_paligemma
    config = PI0Config(
        chunk_size=CHUNK,
        n_action_steps=CHUNK,
        image_resolution=(IMAGE, IMAGE),
        tokenizer_max_length=TEXT,
        device="cpu",
    )
    config.input_features = {
        "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(STATE,)),
        "observation.images.cam0": PolicyFeature(type=FeatureType.VISUAL, shape=(3, IMAGE, IMAGE)),
    }
    config.output_features = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(ACTION,))}
    torch.manual_seed(seed)
    policy = PI0Policy(config).eval()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return policy


def inputs(policy, seed: int) -> dict[str, torch.Tensor]:
    """One camera in [-1, 1] (what the inner model takes), text ids with row 1 padded, padded
    state, noise, actions and a flow time per row."""
    cfg = policy.config
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(BATCH, TEXT, dtype=torch.bool)
    mask[1, 5:] = False
    tokens = torch.randint(2, VOCAB, (BATCH, TEXT), generator=g)
    tokens[~mask] = 0
    state = torch.zeros(BATCH, cfg.max_state_dim)
    state[:, :STATE] = torch.randn(BATCH, STATE, generator=g)
    actions = torch.zeros(BATCH, CHUNK, cfg.max_action_dim)
    actions[..., :ACTION] = torch.randn(BATCH, CHUNK, ACTION, generator=g)
    return {
        "images": torch.rand(BATCH, 3, IMAGE, IMAGE, generator=g) * 2 - 1,
        "tokens": tokens,
        "token_mask": mask,
        "state": state,
        "noise": torch.randn(BATCH, CHUNK, cfg.max_action_dim, generator=g),
        "actions": actions,
        "time": torch.tensor([0.75, 0.3125]),  # dyadic: 1 - t is exact in float32 too
    }


@torch.no_grad()
def run(policy, data: dict[str, torch.Tensor], variant: str = "pi0") -> dict[str, torch.Tensor]:
    model = policy.model
    images, masks = [data["images"]], [torch.ones(BATCH, dtype=torch.bool)]
    state = [data["state"]] if variant == "pi0" else []  # pi0.5: the state is in the prompt
    steps: list[torch.Tensor] = []
    hook = model.action_out_proj.register_forward_hook(lambda m, i, out: steps.append(out.clone()))
    try:
        sampled = model.sample_actions(
            images, masks, data["tokens"], data["token_mask"], *state, noise=data["noise"]
        )
        raw_steps = torch.stack(steps)
        steps.clear()
        losses = model.forward(
            images,
            masks,
            data["tokens"],
            data["token_mask"],
            *state,
            data["actions"],
            data["noise"],
            data["time"],
        )
        (velocity,) = steps
    finally:
        hook.remove()
    return {"sample": sampled, "step_outputs": raw_steps, "velocity": velocity, "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", choices=("pi0", "pi05"), default="pi0")
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = tiny_policy(args.seed, args.variant)
    checkpoint = args.out / f"lerobot-{args.variant}"
    policy.save_pretrained(checkpoint)
    data = inputs(policy, args.seed + 1)
    outputs = run(policy, data, args.variant)
    tensors = {
        **{f"in.{k}": v for k, v in data.items()},
        **{f"out.{k}": v for k, v in outputs.items()},
    }
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(args.out / "lerobot.safetensors")
    )
    import lerobot
    import transformers

    meta = {
        "checkpoint": str(checkpoint),
        "variant": args.variant,
        "vision_heads": SIGLIP["num_attention_heads"],
        "action_dim": ACTION,
        "steps": policy.config.num_inference_steps,
        "versions": {
            "lerobot": lerobot.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
    }
    (args.out / "lerobot.json").write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
