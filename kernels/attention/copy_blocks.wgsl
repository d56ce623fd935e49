// Block copy for copy-on-write: cache[dst, :] = cache[src, :] for each (src, dst) in pairs.
// Bindings: pairs u32 (numPairs, 2) as (src, dst) block ids; cache u32 (numBlocks, blockWords) where
//           blockWords = nKvHeads * blockSize * headDim / 2; params.
// Dispatch: x = ceil(blockWords / WG), y = numPairs; one invocation per u32 of a block. No block may be
// both a source and a destination in one dispatch.
// Reference: attention_ref.ts `copyBlocksRef`.

override WG: u32 = 256u;

struct Params {
  numPairs: u32,
  blockWords: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> pairs: array<u32>;
@group(0) @binding(1) var<storage, read_write> cache: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = wg.x * WG + lid;
  if (i >= params.blockWords || wg.y >= params.numPairs) {
    return;
  }
  let src = pairs[2u * wg.y];
  let dst = pairs[2u * wg.y + 1u];
  cache[dst * params.blockWords + i] = cache[src * params.blockWords + i];
}
