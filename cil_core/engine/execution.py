"""How a run executes on its device: precision, memory format, compilation, threads.

One place turns the config's requests (``amp``, ``channels_last``, ``compile``) into what
actually runs, on the CPU exactly as on CUDA: bf16 autocast where the device supports
bf16 (CUDA: ``torch.cuda.is_bf16_supported()``; CPU: oneDNN's bf16 kernels, i.e. AVX-512
BF16 / AMX), channels-last activations and weights, ``torch.compile``. A request the device
cannot honour is said once per process and recorded as what ran (fp32), never dropped
silently. ``result.json`` records :meth:`Execution.to_dict`.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable, ContextManager, TypeVar

import torch

from ..config import RunConfig
from ..errors import ConfigError

log = logging.getLogger(__name__)

_warned: set[str] = set()


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matmuls/convolutions natively (not emulated, which is slower than fp32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def device_name(device: torch.device) -> str:
    """A human-readable name of the device: the GPU model, or the CPU model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        import platform

        return platform.processor() or "cpu"
    return str(device)


@dataclass(frozen=True)
class Execution:
    """What runs (recorded in ``result.json["execution"]``)."""

    device: str  # "cpu", "cuda:0"
    device_name: str  # "NVIDIA H200", "AMD EPYC ..."
    precision: str  # "bf16" (autocast) or "fp32"
    memory_format: str  # "channels_last" or "contiguous"
    compiled: bool
    torch_threads: int

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    @property
    def channels_last(self) -> bool:
        return self.memory_format == "channels_last"

    def autocast(self, device: torch.device) -> ContextManager[Any]:
        """bf16 autocast on ``device`` when the run is bf16, else nothing."""
        if self.bf16:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return nullcontext()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_execution(config: RunConfig, device: torch.device) -> Execution:
    """The execution the config asks for, minus what ``device`` cannot do (said once)."""
    bf16 = bool(config.amp)
    if bf16 and not bf16_supported(device):
        key = f"bf16:{device.type}"
        if key not in _warned:
            _warned.add(key)
            log.warning("amp=true asks for bf16 autocast, but %s has no native bf16 support: running in fp32", device)
        bf16 = False
    if config.compile and device.type == "cpu" and not shutil.which(os.environ.get("CXX", "g++")) and not shutil.which("c++"):
        raise ConfigError("compile=true on the CPU needs a C++ compiler (torch.compile's inductor builds C++ kernels); "
                          "install g++ or drop --set compile=true")
    index = device.index if device.index is not None else (torch.cuda.current_device() if device.type == "cuda" else None)
    return Execution(
        device=device.type if index is None else f"{device.type}:{index}",
        device_name=device_name(device),
        precision="bf16" if bf16 else "fp32",
        memory_format="channels_last" if config.channels_last else "contiguous",
        compiled=bool(config.compile),
        torch_threads=torch.get_num_threads(),
    )


_F = TypeVar("_F", bound=Callable[..., Any])


def in_fp32(fn: _F) -> _F:
    """Run ``fn`` with autocast off on every device: numerics that must stay float32 whoever
    calls them (DGR's logit adjustment, distillation, per-class gradient norms and their
    accumulation). Inputs are cast by ``fn`` itself (``.float()``); this only guarantees no op
    inside is lowered to bf16 by an enclosing autocast region."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type="cpu", enabled=False):
            if torch.cuda.is_available():
                with torch.autocast(device_type="cuda", enabled=False):
                    return fn(*args, **kwargs)
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
