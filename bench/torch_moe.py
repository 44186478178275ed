#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The benchmark's own PyTorch reference (TARGETS.md's "naive" column): a per-expert loop
in bf16 on the GPU, for the rows of TARGETS.md, timed like moed's kernel (CUDA events,
median of warm runs, routing computed beforehand). Writes "model M microseconds" lines,
which bench/moed-gpu-bench reads (MOED_BENCH_TORCH=file) to print beside its own times.

Usage: torch_moe.py [repetitions] > torch.txt   (needs a GPU and PyTorch)
"""
import sys

import torch
import torch.nn.functional as F

MODELS = [  # name, experts, top-k, hidden, intermediate (TARGETS.md)
    ("Mixtral-8x7B", 8, 2, 4096, 14336),
    ("Qwen3-30B-A3B", 128, 8, 2048, 768),
    ("DeepSeek-V3", 256, 8, 7168, 2048),
]
MS = [1, 4, 16, 64, 256, 1024, 4096]


def route(m, e, k, gen):
    """Softmax of Gaussian logits, top-k, renormalised."""
    logits = torch.randn(m, e, device="cuda", generator=gen)
    w, ids = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
    return ids, (w / w.sum(dim=-1, keepdim=True)).to(torch.float32)


def naive_moe(x, ids, tw, w13, w2):
    out = torch.zeros_like(x, dtype=torch.float32)
    inter = w2.shape[2]
    for e in range(w13.shape[0]):
        tok, slot = torch.nonzero(ids == e, as_tuple=True)
        if tok.numel() == 0:
            continue
        gu = x[tok] @ w13[e].t()
        a = F.silu(gu[:, :inter]) * gu[:, inter:]
        y = (a @ w2[e].t()).float() * tw[tok, slot, None]
        out.index_add_(0, tok, y)
    return out.to(x.dtype)


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    gen = torch.Generator(device="cuda").manual_seed(1)
    print(f"# card: {torch.cuda.get_device_name()}; torch {torch.__version__}; "
          f"median of {reps} warm runs", flush=True)
    for name, e, k, h, i in MODELS:
        w13 = (torch.rand(e, 2 * i, h, device="cuda", generator=gen) - 0.5).mul_(3.4 / h**0.5).bfloat16()
        w2 = (torch.rand(e, h, i, device="cuda", generator=gen) - 0.5).mul_(3.4 / i**0.5).bfloat16()
        last_ms = 0.0
        for m in MS:
            if last_ms * (reps + 2) > 60e3:  # over a minute a row: skip the rest
                print(f"# {name} {m} skipped: the previous row took {last_ms:.0f} ms", flush=True)
                continue
            x = torch.randn(m, h, device="cuda", generator=gen).bfloat16()
            ids, tw = route(m, e, k, gen)
            for _ in range(2):
                naive_moe(x, ids, tw, w13, w2)
            times = []
            for _ in range(reps):
                t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                t0.record()
                naive_moe(x, ids, tw, w13, w2)
                t1.record()
                t1.synchronize()
                times.append(t0.elapsed_time(t1))
            times.sort()
            last_ms = times[len(times) // 2]
            print(f"{name} {m} {last_ms * 1e3:.1f}", flush=True)
        del w13, w2
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
