"""
What the benchmarks share (bench/): progress lines, the machine's name, the load other processes put on it,
timed rounds taken in turn, child processes with their own memory, and markdown tables.
"""
import contextlib
import json
import os
import subprocess
import sys
import time

import torch

from seedgpt.runtime import cpu_has_bf16

T0 = time.time()

# child processes run from the repo root, as every script does
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def progress(msg):
    """A line on stderr after the seconds since start: stdout keeps the tables."""
    print(f"[{time.time() - T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


def cpu_name():
    """The CPU's model name, from /proc/cpuinfo on Linux."""
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
        return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), 'unknown CPU')
    return 'unknown CPU'


def device_name(rt):
    """The GPU's name, or the CPU's and whether it computes bf16 natively (the dtype a CPU run picks)."""
    if rt.device_type == 'cuda':
        return torch.cuda.get_device_name(rt.device)
    forced = ' (SEEDGPT_CPU_BF16=0)' if os.environ.get('SEEDGPT_CPU_BF16') == '0' else ''
    return f"{cpu_name()}, {'native bf16' if cpu_has_bf16() else 'no native bf16' + forced}"


class OtherLoad:
    """Cores kept busy by other processes since the last reading: tests running beside us skew every number."""

    def __init__(self):
        self.last = self.read()

    @staticmethod
    def read():
        try:
            with open('/proc/stat') as f:
                ticks = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return None  # not Linux
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf('SC_CLK_TCK')  # all but idle and iowait
        own = sum(os.times()[:4])  # this process and the children it waited for
        return busy, own, time.time()

    def cores(self):
        now, last = self.read(), self.last
        self.last = now
        if now is None:
            return float('nan')
        return max(0.0, (now[0] - last[0]) - (now[1] - last[1])) / max(now[2] - last[2], 1e-9)


def take_turns(fns, rounds, device='cpu', seconds=0.0, calls=1):
    """Time fns round by round, each in turn, so that a change in the machine's load hits all alike. In a round
    each fn runs `calls` times at least, and again until `seconds` have passed. After each round this yields
    [(seconds, calls) of each fn] and the cores other processes kept busy during the round."""
    sync = torch.cuda.synchronize if str(device).startswith('cuda') else (lambda: None)
    others = OtherLoad()
    for _ in range(rounds):
        timings = []
        for fn in fns:
            sync()
            t, n = time.perf_counter(), 0
            while n < calls or time.perf_counter() - t < seconds:
                fn()
                n += 1
            sync()
            timings.append((time.perf_counter() - t, n))
        yield timings, others.cores()


def child(code, *args, env=None):
    """Run a snippet in a fresh Python from the repo root (its own peak memory, its own thread settings); its
    last line of output is JSON, returned."""
    p = subprocess.run([sys.executable, '-c', code, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if p.returncode:
        raise SystemExit(f"error: a benchmark child failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def memory(key, pid='self'):
    """A process's memory in bytes from /proc/PID/status: 'VmRSS:' now, 'VmHWM:' its peak (not ru_maxrss,
    which keeps the forking parent's peak across exec)."""
    with open(f'/proc/{pid}/status') as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def markdown_table(headers, rows):
    """A markdown table of these headers and rows (any values, shown with str)."""
    lines = ['| ' + ' | '.join(headers) + ' |', '|' + '|'.join('---' for _ in headers) + '|']
    return '\n'.join(lines + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows])
