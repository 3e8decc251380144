"""Model and optimizer state of a sharded stage as `torch.distributed.checkpoint` (DCP) shards.

Every rank writes the shards it holds into a checkpoint's ``state/`` (one ``.distcp`` file per
rank and DCP's ``.metadata`` index, keyed by parameter names); DCP reads them back into any
sharding, so a stage saved on 2 ranks resumes on 1, 2 or 4. Without a process group (one
process) the same calls save and load the whole state. The gathered whole model, for
``model.safetensors``, comes from `full_model_state`.
"""

from pathlib import Path

import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.optim import Optimizer


def _tensors(model: nn.Module) -> dict[str, Tensor]:
    """The model's parameters and persistent buffers under their module names, as the module
    holds them (sharded DTensors, or whole). Not ``state_dict()``: its hooks may rename and
    re-cut tensors for files (F1's fused Q/K/V is stored split), and DCP loads in place."""
    tensors: dict[str, Tensor] = {n: p.data for n, p in model.named_parameters()}
    for owner, module in model.named_modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and name not in module._non_persistent_buffers_set:
                tensors[f"{owner}.{name}" if owner else name] = buffer
    return tensors


def _state(model: nn.Module, optimizer: Optimizer) -> dict:
    return {"model": _tensors(model), "optimizer": get_optimizer_state_dict(model, optimizer)}


def save_sharded(folder: Path, model: nn.Module, optimizer: Optimizer) -> None:
    """Write this rank's shards of the model and optimizer state into ``folder`` (collective)."""
    dcp.save(_state(model, optimizer), checkpoint_id=str(folder))


def load_sharded(folder: Path, model: nn.Module, optimizer: Optimizer) -> None:
    """Read ``folder``'s state into ``model`` (in place) and ``optimizer``, resharded to how
    they are sharded now (collective)."""
    state = _state(model, optimizer)
    # The template holds optimizer state for every trainable parameter; the checkpoint only for
    # those that ever had a gradient (a last layer's Understanding outputs feed nothing, so its
    # o/mlp weights never do). Those stay without state, as they were when it was saved.
    reader = dcp.FileSystemReader(str(folder))
    saved = reader.read_metadata().state_dict_metadata
    moments = state["optimizer"]["state"]
    for name in [n for n, entry in moments.items() if not _saved(saved, n, entry)]:
        del moments[name]
    dcp.load(state, storage_reader=reader)
    # strict=False: the parameters dropped above have no state, and must not get any.
    options = StateDictOptions(strict=False)
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=options)


def _saved(saved: dict, name: str, entry: dict) -> bool:
    return all(f"optimizer.state.{name}.{key}" in saved for key in entry)
