"""Tensors in the safetensors format: no pickle, so reading a file runs no code.

    save("model.safetensors", {"weight": w}, metadata={"config": json.dumps(...)})
    tensors, metadata = load("model.safetensors")

The format (https://github.com/huggingface/safetensors): an 8-byte
little-endian header length, a JSON header mapping each name to its dtype,
shape and byte range (plus an optional ``"__metadata__"`` map of strings), then
the raw little-endian bytes. Written here with torch alone, so the model needs
no extra package; files are read by the ``safetensors`` library and vice versa
(tests/test_pretrained.py checks both ways).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import torch
from torch import Tensor

DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
NAMES = {name: dtype for dtype, name in DTYPES.items()}
MAX_HEADER = 100 * 2**20  # the library's own limit on the JSON header


class TensorFileError(ValueError):
    """A file that is not a well-formed safetensors file."""


def save(path: Path | str, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (and string ``metadata``) to ``path`` in one go."""
    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("metadata: keys and values must be strings")
        header["__metadata__"] = dict(metadata)
    blobs, offset = [], 0
    for name, tensor in tensors.items():
        if tensor.dtype not in DTYPES:
            raise TypeError(f"{name}: dtype {tensor.dtype} cannot be stored")
        data = _bytes(tensor)
        header[name] = {"dtype": DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the library pads the header to 8 bytes
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for blob in blobs:
            handle.write(blob)
        handle.flush()
        os.fsync(handle.fileno())


def load(path: Path | str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; `TensorFileError` if malformed."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise TensorFileError(f"{path}: too short to be a safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER or 8 + length > len(data):
        raise TensorFileError(f"{path}: not a safetensors file (header length {length})")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TensorFileError(f"{path}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise TensorFileError(f"{path}: not a safetensors file (header is not a map)")
    metadata = header.pop("__metadata__", None) or {}
    body = memoryview(data)[8 + length :]
    tensors = {}
    for name, entry in header.items():
        try:
            dtype = NAMES[entry["dtype"]]
            shape = [int(n) for n in entry["shape"]]
            start, end = (int(n) for n in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise TensorFileError(f"{path}: entry {name!r} is malformed") from None
        size = torch.empty((), dtype=dtype).element_size()
        count = 1
        for n in shape:
            count *= n
        if not 0 <= start <= end <= len(body) or end - start != count * size:
            raise TensorFileError(f"{path}: entry {name!r} points outside the file")
        raw = torch.frombuffer(bytearray(body[start:end]), dtype=torch.uint8) if end > start \
            else torch.empty(0, dtype=torch.uint8)
        tensor = raw.view(dtype) if dtype != torch.bool else raw.to(torch.bool)
        if sys.byteorder == "big" and size > 1:
            tensor = tensor.view(torch.uint8).view(-1, size).flip(-1).reshape(-1).view(dtype)
        tensors[name] = tensor.reshape(shape)
    return tensors, dict(metadata)


def _bytes(tensor: Tensor) -> bytes:
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bool:
        return tensor.to(torch.uint8).numpy().tobytes()
    raw = tensor.reshape(-1).view(torch.uint8)
    if sys.byteorder == "big" and tensor.element_size() > 1:
        raw = raw.view(-1, tensor.element_size()).flip(-1).reshape(-1)
    return raw.numpy().tobytes()
