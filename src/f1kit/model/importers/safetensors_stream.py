"""Write a safetensors file one tensor at a time: peak memory is one tensor, not the model.

``safetensors.torch.save_file`` takes the whole state dict at once, so converting a 3.5 B-parameter
checkpoint would hold all of it (13 GB in fp32). Here each tensor's bytes go to a data file as it
is produced; the header (names, dtypes, shapes, offsets: the format's JSON, 8-byte aligned) is
written once everything is known, then the data is appended behind it in chunks.
"""

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write_safetensors(
    path: str | Path, tensors: Iterable[tuple[str, Tensor]], metadata: dict[str, str] | None = None
) -> list[str]:
    """Write ``tensors`` (name, tensor) to ``path`` in the safetensors format; return the names.

    A repeated name or an unsupported dtype is a ValueError naming it.
    """
    path = Path(path)
    data_path = path.with_name(path.name + ".data")
    header: dict[str, object] = {}
    offset = 0
    try:
        with open(data_path, "wb") as data:
            for name, tensor in tensors:
                if name in header:
                    raise ValueError(f"{name}: written twice")
                if tensor.dtype not in DTYPES:
                    raise ValueError(f"{name}: dtype {tensor.dtype} has no safetensors name")
                flat = tensor.detach().cpu().contiguous().reshape(-1)
                raw = (
                    flat.view(torch.uint8) if flat.numel() else flat.new_empty(0, dtype=torch.uint8)
                )
                raw.numpy().tofile(data)
                size = raw.numel()
                header[name] = {
                    "dtype": DTYPES[tensor.dtype],
                    "shape": list(tensor.shape),
                    "data_offsets": [offset, offset + size],
                }
                offset += size
        if metadata:
            header["__metadata__"] = dict(metadata)
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        with open(path, "wb") as out, open(data_path, "rb") as data:
            out.write(len(text).to_bytes(8, "little"))
            out.write(text)
            shutil.copyfileobj(data, out, length=16 << 20)
    finally:
        data_path.unlink(missing_ok=True)
    return [k for k in header if k != "__metadata__"]
