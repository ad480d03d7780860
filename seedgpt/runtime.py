"""
Where and in what precision a script runs: the device, the dtype, autocast, the DDP process group, and
the matmul peak that MFU and the machine-sized configs compare against.

    rt = setup_runtime('auto', 'auto', seed)     # CUDA, then MPS, then CPU; joins torchrun's group
    with rt.autocast(): ...                      # bf16/fp16 autocast, or nothing for fp32

bf16 is chosen only where the hardware computes it natively: GPUs of compute capability 8.0 and up, and
CPUs with AVX512-BF16 or AMX. Elsewhere PyTorch emulates bf16, slower than fp32 (docs/benchmarks.md).
"""
import dataclasses
import os
import re
import sys
import time
from contextlib import nullcontext

import torch


@dataclasses.dataclass
class Runtime:
    device: str        # 'cuda:0', 'cpu', 'mps'
    device_type: str   # 'cuda', 'cpu', 'mps'
    dtype: str         # 'bfloat16', 'float16', 'float32'
    ddp: bool
    rank: int
    local_rank: int
    world_size: int

    @property
    def master(self):
        return self.rank == 0

    @property
    def ptdtype(self):
        return getattr(torch, self.dtype)

    def autocast(self):
        if self.dtype == 'float32':
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.ptdtype)


def cpu_has_bf16():
    """True where the CPU computes in bf16 natively (AVX512-BF16 or AMX). Elsewhere PyTorch emulates bf16,
    slower than fp32. SEEDGPT_CPU_BF16=0 makes every automatic choice as on a CPU without it."""
    if os.environ.get('SEEDGPT_CPU_BF16') == '0':
        return False
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read()
        return 'avx512_bf16' in flags or 'amx_bf16' in flags
    except OSError:
        return False  # not Linux: plain fp32 is the safe choice on a CPU


def fast_bf16(device_type):
    """Whether bf16 matmuls run natively on this device. On GPUs: compute capability 8.0 (Ampere) and up;
    torch.cuda.is_bf16_supported() also counts the emulated bf16 of older cards."""
    if device_type == 'cuda':
        return torch.cuda.get_device_capability() >= (8, 0)
    return device_type == 'cpu' and cpu_has_bf16()


def fast_matmul_dtype(device_type):
    """The fastest dtype for matmuls that tolerate low precision (Muon's Newton-Schulz)."""
    return torch.bfloat16 if fast_bf16(device_type) else torch.float32


def pick_dtype(device_type, dtype='auto'):
    """'auto': bf16 where native; fp16 with a gradient scaler on older GPUs; fp32 on other CPUs and MPS."""
    if dtype != 'auto':
        return dtype
    if fast_bf16(device_type):
        return 'bfloat16'
    return 'float16' if device_type == 'cuda' else 'float32'


def setup_runtime(device='auto', dtype='auto', seed=1337):
    """Pick the device, join the DDP group when launched by torchrun, seed every rank."""
    ddp = int(os.environ.get('RANK', -1)) != -1
    rank, local_rank, world = 0, 0, 1
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    device_type = device.split(':')[0]
    if dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
        raise SystemExit(f"error: dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    if ddp:
        import torch.distributed as dist
        rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
        if device_type == 'cuda':
            device = f'cuda:{local_rank}'
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend='nccl' if device_type == 'cuda' else 'gloo')
    torch.manual_seed(seed)
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, device_type, pick_dtype(device_type, dtype), ddp, rank, local_rank, world)


def print0(*args, **kwargs):
    if int(os.environ.get('RANK', 0)) == 0:
        print(*args, **kwargs, flush=True)


# dense peaks from the vendors' data sheets (without sparsity), for MFU on GPUs we know: (name pattern, bf16/fp16
# tensor cores, fp32). fp32 is each card's own figure, not a fraction of the other: where the tensor cores take
# TF32 (Ampere and later, with the allow_tf32 set above) it is the TF32 figure, about half the bf16 one; V100
# and T4 have no TF32, so fp32 runs on the plain CUDA cores, at about an eighth. Matched on whole words of the
# device name, so an L40S is not taken for an L4; a GPU not listed gets no MFU rather than a wrong one.
GPU_PEAK_FLOPS = [(r'\bH100\b.*\bPCIe\b', 756e12, 378e12), (r'\bH100\b.*\bNVL\b', 835e12, 417.5e12),
                  (r'\bH100\b', 989e12, 494.5e12), (r'\bH200\b', 989e12, 494.5e12), (r'\bA100\b', 312e12, 156e12),
                  (r'\bL40S\b', 362e12, 183e12), (r'\bL4\b', 121e12, 60e12),
                  (r'\bV100-PCIE\b', 112e12, 14e12), (r'\bV100\b', 125e12, 15.7e12), (r'\bT4\b', 65e12, 8.1e12)]


def gpu_peak_flops(name, dtype):
    """The data-sheet peak of the GPU called `name` in `dtype` ('bfloat16', 'float16', 'float32'), or None."""
    for pattern, half, fp32 in GPU_PEAK_FLOPS:
        if re.search(pattern, name):
            return fp32 if dtype == 'float32' else half
    return None


_measured_peak = {}


def measured_matmul_flops(device='cpu', dtype=torch.float32, n=2048, seconds=0.5, windows=1):
    """Time n×n matmuls on `device`: the best of `windows` windows of about `seconds` each (other load
    only ever lowers a window). The machine's practical peak, measured once per device and dtype.

    The size grows from 256 up to n while one matmul takes under a fifth of the window: a dtype the
    device only emulates (fp16 on a CPU) would take minutes at full size, and its peak is low anyway."""
    key = (str(device), dtype, windows)
    if key not in _measured_peak:
        g = torch.Generator(device=device).manual_seed(0)  # not the global RNG: resumed runs must match
        size = min(256, n)
        while True:
            a = torch.randn(size, size, device=device, dtype=dtype, generator=g)
            b = torch.randn(size, size, device=device, dtype=dtype, generator=g)
            t0 = time.perf_counter()
            a @ b  # also the warm-up
            if str(device).startswith('cuda'):
                torch.cuda.synchronize()
            if size >= n or time.perf_counter() - t0 > seconds / 5:
                break
            size *= 2
        n = size
        best = 0.0
        for _ in range(windows):
            count, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                a @ b
                count += 1
            if str(device).startswith('cuda'):
                torch.cuda.synchronize()
            best = max(best, 2 * n ** 3 * count / (time.perf_counter() - t0))
        _measured_peak[key] = best
    return _measured_peak[key]


def peak_flops(rt):
    """Peak FLOP/s of the device in use: the data sheet for known GPUs (None for others), else measured."""
    if rt.device_type == 'cuda':
        return gpu_peak_flops(torch.cuda.get_device_name(rt.device), rt.dtype)
    return measured_matmul_flops(rt.device, rt.ptdtype)



def rank0_float(value, rt):
    """rank 0's value of a float on every rank: one clock for all, so ranks agree on when to stop (one that
    stopped alone would leave the others hanging in the next collective) and on the time-based learning rate."""
    if not rt.ddp:
        return value
    t = torch.tensor(value, dtype=torch.float64, device=rt.device)
    torch.distributed.broadcast(t, 0)
    return t.item()


def exit_after_torchrun():
    """End a script that ran under torchrun once its work is done and saved: skip the interpreter's teardown,
    where gloo's worker threads can abort the process on a CPU ("terminate called without an active
    exception"), which torchrun would report as a failed run. Does nothing in a single process."""
    if int(os.environ.get('WORLD_SIZE', 1)) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
