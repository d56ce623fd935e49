#!/usr/bin/env python3
"""PyTorch fp16 baseline for `deno task bench decode`: batch-1 greedy Llama decode with random weights at the
published shapes, one CUDA graph per decode step (the step feeds its own argmax back and advances the position
on the device, so replays need no host sync). Prints one JSON object per architecture and writes them to --out.

Shapes follow bench/synth.ts. The model is a straightforward Llama (RMSNorm, RoPE, GQA attention over a static
KV cache, SwiGLU MLP) with q/k/v and gate/up fused into one matmul each, as gpt-fast does: a strong, simple
baseline. Models that do not fit in memory run with fewer layers at two depths, and the time per token is
extrapolated linearly to the full depth (t = a + b * layers; the embedding/lm_head cost is the intercept).

Usage: python3 bench/baseline_torch.py --arch llama2-7b,llama31-8b [--prompt 128] [--gen 256] [--out FILE]
       python3 bench/baseline_torch.py --arch llama2-70b --layers 20,40   (extrapolated to 80)
       python3 bench/baseline_torch.py --arch tiny --device cpu --no-graph (smoke test without a GPU)
"""
import argparse
import json
import math
import sys
import time

import torch

ARCHS = {
    # name: (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab)
    "llama2-7b": (4096, 11008, 32, 32, 32, 32000),
    "llama2-13b": (5120, 13824, 40, 40, 40, 32000),
    "llama2-70b": (8192, 28672, 80, 64, 8, 32000),
    "llama31-8b": (4096, 14336, 32, 32, 8, 128256),
    "llama31-70b": (8192, 28672, 80, 64, 8, 128256),
    "llama31-405b": (16384, 53248, 126, 128, 8, 128256),
    "tiny": (256, 896, 2, 4, 2, 1024),
}


class Llama:
    """Random fp16 weights; forward(tokens, pos0) appends to the KV cache and returns next-token ids."""

    def __init__(self, arch, n_layers, max_len, device, dtype):
        dim, hidden, _, n_heads, n_kv, vocab = ARCHS[arch]
        self.dim, self.n_heads, self.n_kv = dim, n_heads, n_kv
        self.head_dim = dim // n_heads
        self.group = n_heads // n_kv
        self.max_len = max_len
        g = torch.Generator(device=device)
        g.manual_seed(0)

        def w(*shape, std):
            return torch.randn(*shape, generator=g, device=device, dtype=dtype) * std

        hd = self.head_dim
        self.embed = w(vocab, dim, std=0.02)
        self.layers = []
        for _ in range(n_layers):
            self.layers.append({
                "attn_norm": torch.ones(dim, device=device, dtype=dtype),
                "wqkv": w((n_heads + 2 * n_kv) * hd, dim, std=dim ** -0.5),
                "wo": w(dim, n_heads * hd, std=(n_heads * hd) ** -0.5),
                "ffn_norm": torch.ones(dim, device=device, dtype=dtype),
                "w13": w(2 * hidden, dim, std=dim ** -0.5),
                "w2": w(dim, hidden, std=hidden ** -0.5),
                # (n_kv, max_len, head_dim)
                "k": torch.zeros(n_kv, max_len, hd, device=device, dtype=dtype),
                "v": torch.zeros(n_kv, max_len, hd, device=device, dtype=dtype),
            })
        self.norm = torch.ones(dim, device=device, dtype=dtype)
        self.lm_head = w(vocab, dim, std=0.02)
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
        ang = torch.arange(max_len, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
        self.cos = torch.cat([ang.cos(), ang.cos()], -1).to(dtype)  # (max_len, head_dim)
        self.sin = torch.cat([ang.sin(), ang.sin()], -1).to(dtype)
        self.key_idx = torch.arange(max_len, device=device)
        self.weight_bytes = sum(t.numel() * t.element_size() for L in self.layers
                                for k, t in L.items() if k not in ("k", "v"))
        self.weight_bytes += (self.embed.numel() // vocab + self.lm_head.numel()) * self.embed.element_size()

    @staticmethod
    def rmsnorm(x, w, eps=1e-5):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w

    def rope(self, x, pos):  # x (T, heads, hd), pos (T,)
        cos, sin = self.cos[pos][:, None, :], self.sin[pos][:, None, :]
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rot * sin

    def forward(self, tokens, pos):
        """tokens (T,) long, pos (T,) long consecutive positions -> argmax ids (T,)."""
        T = tokens.shape[0]
        hd, H, Hkv, G = self.head_dim, self.n_heads, self.n_kv, self.group
        x = self.embed[tokens]  # (T, dim)
        # Causal mask over the whole static cache: key j is visible to the query at position p when j <= p.
        mask = (self.key_idx[None, :] > pos[:, None])  # (T, max_len)
        scale = 1.0 / math.sqrt(hd)
        for L in self.layers:
            h = self.rmsnorm(x, L["attn_norm"])
            qkv = h @ L["wqkv"].T
            q = qkv[:, : H * hd].view(T, H, hd)
            k = qkv[:, H * hd: (H + Hkv) * hd].view(T, Hkv, hd)
            v = qkv[:, (H + Hkv) * hd:].view(T, Hkv, hd)
            q, k = self.rope(q, pos), self.rope(k, pos)
            L["k"].index_copy_(1, pos, k.transpose(0, 1))
            L["v"].index_copy_(1, pos, v.transpose(0, 1))
            # (Hkv, G*T, hd) x (Hkv, hd, max_len): one batched matmul per layer, no K/V repeat for GQA
            qg = q.view(T, Hkv, G, hd).permute(1, 2, 0, 3).reshape(Hkv, G * T, hd)
            s = torch.bmm(qg, L["k"].transpose(1, 2)).float() * scale
            s = s.view(Hkv, G, T, self.max_len).masked_fill(mask, float("-inf"))
            p = torch.softmax(s, -1).to(x.dtype).view(Hkv, G * T, self.max_len)
            o = torch.bmm(p, L["v"]).view(Hkv, G, T, hd).permute(2, 0, 1, 3).reshape(T, H * hd)
            x = x + o @ L["wo"].T
            h = self.rmsnorm(x, L["ffn_norm"])
            gu = h @ L["w13"].T
            gate, up = gu.chunk(2, -1)
            x = x + (torch.nn.functional.silu(gate) * up) @ L["w2"].T
        x = self.rmsnorm(x, self.norm)
        return (x @ self.lm_head.T).argmax(-1)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_one(arch, n_layers, args):
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    max_len = args.prompt + args.gen + args.warmup + 8
    m = Llama(arch, n_layers, max_len, args.device, dtype)
    prompt = torch.randint(0, ARCHS[arch][5], (args.prompt,), device=args.device)
    ppos = torch.arange(args.prompt, device=args.device)
    with torch.inference_mode():
        m.forward(prompt, ppos)  # warm the kernels
        sync(args.device)
        t0 = time.perf_counter()
        first = m.forward(prompt, ppos)[-1:]
        sync(args.device)
        ttft = time.perf_counter() - t0

        tok = first.clone()
        pos = torch.tensor([args.prompt], device=args.device)

        def step():
            nxt = m.forward(tok, pos)
            tok.copy_(nxt)
            pos.add_(1)

        if args.no_graph:
            run = step
        else:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    step()
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            run = graph.replay
        pos.fill_(args.prompt)
        for _ in range(args.warmup):
            run()
        sync(args.device)
        pos.fill_(args.prompt)
        t0 = time.perf_counter()
        for _ in range(args.gen):
            run()
        sync(args.device)
        dt = time.perf_counter() - t0
    out = {
        "layers": n_layers,
        "ms_per_token": dt / args.gen * 1e3,
        "ttft_ms": ttft * 1e3,
        "weight_bytes": m.weight_bytes,
    }
    del m
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def stream_read_gbps(device, gib=4):
    """Streaming-read bandwidth of this GPU as PyTorch sees it: a sum over a large fp16 buffer."""
    if not device.startswith("cuda"):
        return None
    buf = torch.ones(gib << 29, device=device, dtype=torch.float16)
    for _ in range(3):
        buf.sum()
    sync(device)
    t0 = time.perf_counter()
    n = 10
    for _ in range(n):
        buf.sum()
    sync(device)
    dt = (time.perf_counter() - t0) / n
    del buf
    torch.cuda.empty_cache()
    return buf_bytes(gib) / dt / 1e9


def buf_bytes(gib):
    return (gib << 29) * 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="llama2-7b", help="comma-separated: " + ",".join(ARCHS))
    ap.add_argument("--layers", default="", help="depths to run, comma-separated (2 values: extrapolate)")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=32)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-graph", action="store_true")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    for a in args.arch.split(","):
        if a not in ARCHS:
            sys.exit(f'Unknown --arch "{a}": expected one of {", ".join(ARCHS)}')
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("CUDA is not available: pass --device cpu --no-graph for a smoke test")

    info = {"torch": torch.__version__, "device": args.device, "cuda_graphs": not args.no_graph}
    if args.device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1), cuda=torch.version.cuda)
        info["stream_read_GBps"] = round(stream_read_gbps(args.device), 1)
    print(json.dumps(info), flush=True)
    results = []
    for arch in args.arch.split(","):
        full = ARCHS[arch][2]
        depths = [int(x) for x in args.layers.split(",") if x] or [full]
        runs = [run_one(arch, min(d, full), args) for d in depths]
        r = {"arch": arch, "prompt": args.prompt, "generated": args.gen, "batch": 1, "runs": runs, **info}
        if len(runs) >= 2 and runs[-1]["layers"] != runs[0]["layers"]:
            a, b = runs[0], runs[-1]
            per_layer = (b["ms_per_token"] - a["ms_per_token"]) / (b["layers"] - a["layers"])
            ms = a["ms_per_token"] + per_layer * (full - a["layers"])
            r["extrapolated_from_layers"] = [x["layers"] for x in runs]
            per_layer_ttft = (b["ttft_ms"] - a["ttft_ms"]) / (b["layers"] - a["layers"])
            r["ttft_ms"] = round(a["ttft_ms"] + per_layer_ttft * (full - a["layers"]), 2)
        else:
            ms = runs[-1]["ms_per_token"] * (1 if runs[-1]["layers"] == full else full / runs[-1]["layers"])
            r["ttft_ms"] = round(runs[-1]["ttft_ms"], 2)
        r["ms_per_token"] = round(ms, 3)
        r["tokens_per_s"] = round(1e3 / ms, 1)
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
