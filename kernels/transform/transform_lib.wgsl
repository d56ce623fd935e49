// Shared by the fused transform kernels of this folder (appended to each one's source): QTIP's randomized
// Hadamard transform of vectors held in workgroup memory `sm`. A transform of size n = groups x K x p (groups
// > 1 only for the tensor-parallel checkpoints' per-shard transforms) is, per group of K blocks of p:
//   block j of the result = scale * FWHT_p(sum_a had'[j][a] * block a),
// with had' = had_K or had_K^T (one row of `words` sign bits per j, from word `rows` of `had`; K = 1: none)
// and FWHT_p the unnormalized Sylvester transform. This equals (had' kron H_p) per group (hadamard_ref.ts)
// because the two factors act on different index bits; mixing first lets the block kernel work on a few
// output blocks at a time.
// The including kernel declares WG (workgroup size), `sm` (workgroup f32) and `had` (storage u32).

// 32 bytes, so a Params block can hold several back to back (uniform layout rules for struct members).
struct HadSpec {
  K: u32,
  p: u32,
  groups: u32,
  rows: u32,
  words: u32,
  scale: f32,
  _pad0: u32,
  _pad1: u32,
}

// Unnormalized FWHT along each of the nb contiguous blocks of length p (a power of two) at sm[base..]:
// radix-4 passes (two levels per barrier), then a radix-2 pass when log2 p is odd. All threads call it.
fn fwht(base: u32, p: u32, nb: u32, tid: u32) {
  let n = p * nb;
  var h = 1u;
  loop {
    if (h * 4u > p) {
      break;
    }
    for (var i = tid; i < n / 4u; i += WG) {
      let lo = i & (h - 1u);
      let i0 = base + ((i - lo) << 2u) + lo;
      let a = sm[i0];
      let b = sm[i0 + h];
      let c = sm[i0 + 2u * h];
      let d = sm[i0 + 3u * h];
      let ab0 = a + b;
      let ab1 = a - b;
      let cd0 = c + d;
      let cd1 = c - d;
      sm[i0] = ab0 + cd0;
      sm[i0 + h] = ab1 + cd1;
      sm[i0 + 2u * h] = ab0 - cd0;
      sm[i0 + 3u * h] = ab1 - cd1;
    }
    workgroupBarrier();
    h *= 4u;
  }
  if (h < p) {
    for (var i = tid; i < n / 2u; i += WG) {
      let lo = i & (h - 1u);
      let i0 = base + ((i - lo) << 1u) + lo;
      let a = sm[i0];
      let b = sm[i0 + h];
      sm[i0] = a + b;
      sm[i0 + h] = a - b;
    }
    workgroupBarrier();
  }
}

// sm[dst + (g K + j) p + r] = sum_a had'[j][a] sm[src + (g K + a) p + r] for the whole vector (K > 1).
fn mixSm(src: u32, dst: u32, s: HadSpec, tid: u32) {
  let n = s.groups * s.K * s.p;
  for (var e = tid; e < n; e += WG) {
    let r = e % s.p;
    let gj = e / s.p;
    let j = gj % s.K;
    let first = src + (gj - j) * s.p + r;
    let row = s.rows + j * s.words;
    var acc = 0.0;
    for (var w = 0u; w < s.words; w++) {
      let bits = had[row + w];
      let end = min(32u, s.K - 32u * w);
      for (var b = 0u; b < end; b++) {
        let v = sm[first + (32u * w + b) * s.p];
        acc += select(v, -v, ((bits >> b) & 1u) != 0u);
      }
    }
    sm[dst + e] = acc;
  }
  workgroupBarrier();
}

// Most blocks K the in-place mix takes (one sign word a row).
const MIX_MAX_K = 32u;
// Where a second vector does not fit the workgroup memory (a 32 KiB GPU: Llama 2 13B's 5120 = had_20 x 256
// would need 40 KiB), the host sets MIX_IN_PLACE: the mix then runs in place, each invocation owning
// columns (g, r): it reads the column's K values into registers and writes its K sums back, in mixSm's order
// (so the same values). K <= MIX_MAX_K.
override MIX_IN_PLACE: bool = false;

fn mixSmInPlace(base: u32, s: HadSpec, tid: u32) {
  let cols = s.groups * s.p;
  for (var c = tid; c < cols; c += WG) {
    let r = c % s.p;
    let first = base + (c - r) * s.K + r;
    var col: array<f32, MIX_MAX_K>;
    for (var a = 0u; a < s.K; a++) {
      col[a] = sm[first + a * s.p];
    }
    for (var j = 0u; j < s.K; j++) {
      let bits = had[s.rows + j * s.words];
      var acc = 0.0;
      for (var a = 0u; a < s.K; a++) {
        acc += select(col[a], -col[a], ((bits >> a) & 1u) != 0u);
      }
      sm[first + j * s.p] = acc;
    }
  }
  workgroupBarrier();
}

// The transform (without its scale) of the vector at sm[src..src + n); returns where the result lives:
// src itself when K = 1 or MIX_IN_PLACE, else tmp (n more slots). Callers have stored the input and passed a
// barrier.
fn transformSm(src: u32, tmp: u32, s: HadSpec, tid: u32) -> u32 {
  if (s.K == 1u) {
    fwht(src, s.p, s.groups, tid);
    return src;
  }
  if (MIX_IN_PLACE) {
    mixSmInPlace(src, s, tid);
    fwht(src, s.p, s.groups * s.K, tid);
    return src;
  }
  mixSm(src, tmp, s, tid);
  fwht(tmp, s.p, s.groups * s.K, tid);
  return tmp;
}
