#!/usr/bin/env python3
"""Decode goldens for kernels/qtip/qtip_goldens_test.ts, made by the official QTIP code's own functions.

For each code (HYB, 1MAD, 3INST) at K = 2, 3, 4 (plus HYB with an 8-bit LUT, which the official code stores in the
plain layout) this builds a small seeded random packed trellis exactly as a checkpoint stores it (int16 words;
swizzled when the official `has_kernel` is true, plain `pack_trellis` order otherwise), a seeded random LUT of the
official shape for HYB, and decodes them with the official functions, on the CPU:

  has_kernel (HYB, L16, V2, tlut_bits 9, 16x16 tiles):
      lib/codebook/bitshift.py  BitshiftLinear.get_hatW_kernel -> lib/utils/kernel_decompress.py decode_compressed
  otherwise (1MAD, 3INST, HYB with tlut_bits != 9):
      lib/codebook/bitshift.py  bitshift_codebook.unpack_trellis, then BitshiftLinear.get_hatW
  the value tables: bitshift_codebook(...).lut, built by quantlut_sym / decode_1mad / decode_3inst
  the layout choice: lib/utils/kernel_check.py  has_kernel

These are the calls BitshiftLinear.cache_hatW makes before it scales hatW by 1/32, and the decode the forward pass
runs for batch > 1 (at batch 1 HYB uses the CUDA matvec kernel, whose layout decode_compressed inverts). Nothing is
re-implemented here: the script only makes inputs, calls those functions and writes what they return.

Only these three official files are loaded; the package __init__ files are bypassed (lib/codebook/__init__.py
imports the built CUDA extension `qtip_kernels`, lib/utils/__init__.py the data and Hadamard utilities with
`fast_hadamard_transform`), and the Hadamard functions bitshift.py imports but the decode never calls are
replaced by stubs that raise. decode_compressed is wrapped in @torch.compile; it runs eagerly
(torch.compiler.set_stance("force_eager")), falling back to compiled if eager fails; with CUDA present the
compiled CUDA run (what inference does) is also made and must agree bit for bit.

Needs only torch (>= 2.6 for set_stance; 2.11 tested target) and numpy.

Export the official files from the fetched mirror into a small folder (about 21 KB):

  M=/work/.mirror/Cornell-RelaxML+qtip/repo; D=/tmp/qtip-src; mkdir -p $D
  git --git-dir=$M archive HEAD lib/codebook/bitshift.py lib/utils/kernel_check.py \\
      lib/utils/kernel_decompress.py | tar -x -C $D
  git --git-dir=$M rev-parse HEAD > $D/QTIP_COMMIT

Run (a few seconds on CPU; the compiled CUDA cross-check adds compile time):

  python3 bench/official_goldens.py /tmp/qtip-src kernels/qtip/goldens

Output (about 140 KB): <out>/official_decode.safetensors and <out>/README.md. In the safetensors file, per case
NAME (e.g. "hyb-k3"): NAME.trellis I16 [(m/16)(n/16), 16K] (the checkpoint's words), NAME.tlut F16
[2^tlut_bits, 2] (HYB only), NAME.hatW [m, n] in the dtype the official decode returns (F16 for HYB, F32 for
1MAD/3INST), NAME.states I32 [(m/16)(n/16), 256/V] (plain layout only: unpack_trellis's states). __metadata__
holds "cases" (a JSON list: name, code, decode_mode, K, L, V, tlut_bits, m, n, layout, has_kernel, seed, decode,
lut_dtype, lut_sha256 = sha256 of the official (65536, V) value table's little-endian bytes) and provenance.
"""
import contextlib
import hashlib
import importlib
import json
import os
import sys
import types

import numpy as np

L = 16
TD = 16  # td_x = td_y
FORMAT = "trellis-qtip-decode-goldens/1"
OFFICIAL_FILES = ["lib/codebook/bitshift.py", "lib/utils/kernel_check.py", "lib/utils/kernel_decompress.py"]
DECODE_MODES = {"hyb": "quantlut_sym", "1mad": "1mad", "3inst": "3inst"}


def make_cases():
    """The case table: every code at K = 2, 3, 4, plus HYB with an 8-bit LUT (plain layout)."""
    cases = []
    for code in ["hyb", "1mad", "3inst"]:
        for K in [2, 3, 4]:
            cases.append({
                "name": f"{code}-k{K}",
                "code": code,
                "K": K,
                "tlut_bits": 9 if code == "hyb" else 0,
                # Swizzled HYB needs m, n divisible by 32: 4 x 6 tiles = 2 x 3 interleaved groups. m != n so a
                # transpose cannot pass.
                "m": 64 if code == "hyb" else 32,
                "n": 96 if code == "hyb" else 48,
            })
    cases.append({"name": "hyb-t8-k2", "code": "hyb", "K": 2, "tlut_bits": 8, "m": 32, "n": 48})
    for i, c in enumerate(cases):
        c["seed"] = 8000 + i
        c["V"] = 2 if c["code"] == "hyb" else 1
    return cases


def make_inputs(case):
    """Seeded random checkpoint tensors: trellis int16 [(m/16)(n/16), 16K], tlut float16 [2^tlut_bits, 2] or None.

    Every bitstream is a valid trellis: states are the circular L-bit windows of the stream."""
    rng = np.random.default_rng(case["seed"])
    tiles = (case["m"] // TD) * (case["n"] // TD)
    words = rng.integers(0, 1 << 16, size=(tiles, TD * TD * case["K"] // 16), dtype=np.uint16).view(np.int16)
    tlut = None
    if case["code"] == "hyb":
        tlut = rng.standard_normal((1 << case["tlut_bits"], 2)).astype(np.float16)
    return words, tlut


SAFETENSORS_DTYPES = {
    np.dtype(np.float16): "F16",
    np.dtype(np.float32): "F32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int32): "I32",
    np.dtype(np.uint16): "U16",
}


def write_safetensors(path, tensors, metadata):
    """Writes {name: ndarray} as safetensors: 8-byte LE header length, JSON header, little-endian data."""
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    chunks, offset = [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dtype = SAFETENSORS_DTYPES[arr.dtype]
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for data in chunks:
            f.write(data)


def read_safetensors(path):
    """The inverse of write_safetensors (for the self-check): ({name: ndarray}, metadata)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    by_name = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        dtype = by_name[info["dtype"]].newbyteorder("<")
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dtype).reshape(info["shape"])
    return out, meta


def load_official(src):
    """Imports lib.codebook.bitshift and lib.utils.kernel_check from the exported official source."""
    src = os.path.abspath(src)
    for rel in OFFICIAL_FILES:
        if not os.path.isfile(os.path.join(src, rel)):
            sys.exit(f"Cannot find official file {rel!r} under {src!r}: export it first (see this script's header)")

    def package(name, rel):
        mod = types.ModuleType(name)
        mod.__path__ = [os.path.join(src, rel)]  # a package whose __init__.py is not run
        sys.modules[name] = mod
        return mod

    lib = package("lib", "lib")
    lib.codebook = package("lib.codebook", "lib/codebook")
    lib.codebook.kdict = {}  # bitshift.py imports it; it only names the CUDA matvec kernels
    lib.utils = package("lib.utils", "lib/utils")

    def no_hadamard(*args, **kwargs):
        raise RuntimeError("The Hadamard transform is not part of the decode and is not loaded")

    had = types.ModuleType("lib.utils.matmul_had")
    had.matmul_hadU_cuda = had.matmul_hadUt_cuda = no_hadamard
    sys.modules["lib.utils.matmul_had"] = lib.utils.matmul_had = had
    try:
        import tqdm  # noqa: F401  (bitshift.py imports it; only its quantizer uses it)
    except ImportError:
        stub = types.ModuleType("tqdm")
        stub.tqdm = lambda it=None, *a, **k: it
        sys.modules["tqdm"] = stub
    bitshift = importlib.import_module("lib.codebook.bitshift")
    kernel_check = importlib.import_module("lib.utils.kernel_check")
    return bitshift, kernel_check


def sha256_of_files(src):
    out = {}
    for rel in OFFICIAL_FILES:
        with open(os.path.join(src, rel), "rb") as f:
            out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def decode_swizzled(torch, lin, trellis, m, n):
    """BitshiftLinear.get_hatW_kernel on the CPU, eagerly; compiled as a fallback; compiled on CUDA as a check."""
    runs, errors = {}, {}

    def attempt(label, stance, device):
        try:
            lut = lin.cb.lut
            lin.cb.lut = lut.to(device)  # get_hatW_kernel hands cb.lut.T to decode_compressed
            try:
                with torch.compiler.set_stance(stance) if stance != "default" else contextlib.nullcontext():
                    runs[label] = lin.get_hatW_kernel(trellis.to(device), m, n).cpu()
            finally:
                lin.cb.lut = lut
        except Exception as e:  # noqa: BLE001  (report and try the next way)
            errors[label] = f"{type(e).__name__}: {e}"
            print(f"  decode_compressed {label} failed: {errors[label]}", file=sys.stderr)

    attempt("eager cpu", "force_eager", "cpu")
    if not runs:
        attempt("compiled cpu", "default", "cpu")
    if torch.cuda.is_available():
        attempt("compiled cuda", "default", "cuda")
    if not runs:
        sys.exit(f"decode_compressed failed every way: {errors}")
    first_label, first = next(iter(runs.items()))
    for label, out in runs.items():
        if out.dtype != first.dtype or out.numpy().tobytes() != first.numpy().tobytes():
            sys.exit(f"decode_compressed {label} differs from {first_label}")
    return first, list(runs), errors


def decode_case(torch, bitshift, kernel_check, case, words, tlut):
    """Runs the official decode of one case; returns (tensors, case metadata, decode_compressed runs, errors)."""
    K, V, m, n, code = case["K"], case["V"], case["m"], case["n"], case["code"]
    mode = DECODE_MODES[code]
    has_kernel = bool(kernel_check.has_kernel(mode, L, K, V, case["tlut_bits"], TD, TD))
    trellis = torch.from_numpy(words.copy())
    tl = torch.from_numpy(tlut.copy()) if tlut is not None else None
    # As QuantizedLinear builds it: the codebook (and its value table) is made on the CPU.
    lin = bitshift.BitshiftLinear(TD, TD, L, K, V, case["tlut_bits"], mode, tlut=tl, has_kernel=has_kernel)
    tensors = {f"{case['name']}.trellis": words}
    if tlut is not None:
        tensors[f"{case['name']}.tlut"] = tlut
    runs, errors = [], {}
    if has_kernel:
        hat, runs, errors = decode_swizzled(torch, lin, trellis, m, n)
        decode = "bitshift.py:BitshiftLinear.get_hatW_kernel -> kernel_decompress.py:decode_compressed"
    else:
        states = lin.cb.unpack_trellis(trellis, TD * TD)
        hat = lin.get_hatW(states, m, n)
        decode = "bitshift.py:bitshift_codebook.unpack_trellis -> bitshift.py:BitshiftLinear.get_hatW"
        tensors[f"{case['name']}.states"] = states.to(torch.int32).numpy()
        # The official packer must give back the stored words (a check of the inputs, not part of the golden).
        try:
            repacked = lin.cb.pack_trellis(states).view(torch.int16).numpy()
        except Exception as e:  # noqa: BLE001
            print(f"  {case['name']}: pack_trellis check skipped: {type(e).__name__}: {e}", file=sys.stderr)
        else:
            if not np.array_equal(repacked, words):
                sys.exit(f"{case['name']}: pack_trellis(unpack_trellis(words)) != words")
    lut = lin.cb.lut.T.contiguous().cpu().numpy()  # (2^L, V): row s = the values of state s
    if tuple(hat.shape) != (m, n) or tuple(lut.shape) != (1 << L, V):
        sys.exit(f"{case['name']}: unexpected shapes hatW {tuple(hat.shape)}, lut {lut.shape}")
    tensors[f"{case['name']}.hatW"] = hat.cpu().numpy()
    meta = {
        "name": case["name"], "code": code, "decode_mode": mode, "K": K, "L": L, "V": V,
        "tlut_bits": case["tlut_bits"], "td_x": TD, "td_y": TD, "m": m, "n": n,
        "layout": "swizzled" if has_kernel else "plain", "has_kernel": has_kernel, "seed": case["seed"],
        "decode": decode, "hatW_dtype": str(hat.dtype).replace("torch.", ""),
        "lut_dtype": str(lut.dtype),
        "lut_sha256": hashlib.sha256(lut.astype(lut.dtype.newbyteorder("<")).tobytes()).hexdigest(),
    }
    return tensors, meta, runs, errors


def readme(metadata, cases):
    """Provenance in Markdown that `deno fmt --check` accepts: one-line bullets under 110 characters, a table
    with its columns padded the way deno fmt pads them."""
    rows = [["case", "code", "K", "tlut_bits", "m x n", "layout", "official decode"]]
    for c in cases:
        rows.append([c["name"], c["code"], str(c["K"]), str(c["tlut_bits"]), f"{c['m']} x {c['n']}", c["layout"],
                     f"`{c['decode']}`"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def row(cells):
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(cells, widths)) + " |"

    table = [row(rows[0]), row(["-" * w for w in widths])] + [row(r) for r in rows[1:]]
    return "\n".join([
        "# Official QTIP decode goldens",
        "",
        "- Made by `bench/official_goldens.py`, read by `kernels/qtip/qtip_goldens_test.ts`.",
        f"- Official code: Cornell-RelaxML/qtip commit `{metadata['qtip_commit']}`.",
        f"- torch {metadata['torch_version']}, numpy {metadata['numpy_version']}.",
        f"- decode_compressed ran: {', '.join(metadata['decode_compressed_ok']) or 'not used'}.",
        "- Inputs are seeded random; the values are what the official functions return.",
        "- Format: the header of `bench/official_goldens.py`.",
        "",
        *table,
        "",
    ])


def main(argv):
    if len(argv) != 3:
        sys.exit(f"Usage: python3 {argv[0]} <qtip-src-dir> <out-dir>")
    src, out_dir = os.path.abspath(argv[1]), argv[2]
    import torch

    bitshift, kernel_check = load_official(src)
    commit_file = os.path.join(src, "QTIP_COMMIT")
    commit = open(commit_file).read().strip() if os.path.isfile(commit_file) else "unknown"
    tensors, case_meta, all_runs, all_errors = {}, [], set(), {}
    for case in make_cases():
        print(f"{case['name']}: code {case['code']} K={case['K']} {case['m']}x{case['n']}", file=sys.stderr)
        words, tlut = make_inputs(case)
        t, meta, runs, errors = decode_case(torch, bitshift, kernel_check, case, words, tlut)
        tensors.update(t)
        case_meta.append(meta)
        all_runs.update(runs)
        all_errors.update({f"{case['name']} {k}": v for k, v in errors.items()})
    metadata = {
        "format": FORMAT,
        "qtip_commit": commit,
        "official_sha256": json.dumps(sha256_of_files(src)),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "decode_compressed_runs": ", ".join(sorted(all_runs)),
        "decode_compressed_failures": json.dumps(all_errors),
        "cases": json.dumps(case_meta),
    }
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "official_decode.safetensors")
    write_safetensors(path, tensors, metadata)
    back, _ = read_safetensors(path)
    assert all(back[k].tobytes() == np.ascontiguousarray(v).tobytes() for k, v in tensors.items())
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(readme({**metadata, "decode_compressed_ok": sorted(all_runs)}, case_meta))
    print(f"Wrote {path} ({os.path.getsize(path)} bytes, {len(case_meta)} cases)", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
