//! BLAKE3 over fixed-size chunks: each chunk of a replica gets its own
//! chaining value, so any range can be verified by reading only its chunks,
//! and the chaining values merge into exactly `blake3::hash(whole file)`,
//! the hash the meta server records. One hashing pass serves both.

use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode};

/// Bytes per verified chunk (a power of two, a multiple of BLAKE3's 1 KiB).
pub const CHUNK: u64 = 256 * 1024;

/// Number of chunks of a file of `size` bytes.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK)
}

/// The value stored for chunk `index` of a file with `count` chunks: its
/// chaining value, or for a single-chunk file the root hash itself.
pub fn chunk_value(index: u64, count: u64, data: &[u8]) -> [u8; 32] {
    if count <= 1 {
        return *blake3::hash(data).as_bytes();
    }
    let mut h = blake3::Hasher::new();
    if index > 0 {
        h.set_input_offset(index * CHUNK);
    }
    h.update(data);
    h.finalize_non_root()
}

/// The root hash of a file of `size` bytes from its chunk values.
pub fn root_hash(values: &[[u8; 32]], size: u64) -> [u8; 32] {
    match values.len() {
        0 => *blake3::hash(&[]).as_bytes(),
        1 => values[0],
        _ => {
            let (l, r) = split(values, size);
            *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
        }
    }
}

fn split(values: &[[u8; 32]], size: u64) -> (ChainingValue, ChainingValue) {
    let left_len = left_subtree_len(size);
    let k = (left_len / CHUNK) as usize;
    (subtree(&values[..k], left_len), subtree(&values[k..], size - left_len))
}

fn subtree(values: &[[u8; 32]], size: u64) -> ChainingValue {
    if values.len() == 1 {
        return values[0];
    }
    let (l, r) = split(values, size);
    merge_subtrees_non_root(&l, &r, Mode::Hash)
}

/// Computes chunk values of sequential input as it arrives.
pub struct ChunkHasher {
    values: Vec<[u8; 32]>,
    current: blake3::Hasher,
    in_chunk: u64,
    total: u64,
    single: Vec<u8>,
}

impl Default for ChunkHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkHasher {
    /// Start at offset 0.
    pub fn new() -> Self {
        ChunkHasher { values: Vec::new(), current: blake3::Hasher::new(), in_chunk: 0, total: 0, single: Vec::new() }
    }

    /// Bytes consumed so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Nothing consumed yet.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Consume the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            // Close a full chunk only once more input arrives: the last
            // chunk (or the only one) is finished differently.
            if self.in_chunk == CHUNK {
                self.close_chunk();
            }
            let room = (CHUNK - self.in_chunk) as usize;
            let take = room.min(data.len());
            let part = &data[..take];
            self.current.update(part);
            // The first chunk might be the only one; then its value is the
            // root hash, which needs the bytes hashed as a root.
            if self.values.is_empty() {
                self.single.extend_from_slice(part);
            }
            self.in_chunk += take as u64;
            self.total += take as u64;
            data = &data[take..];
        }
    }

    fn close_chunk(&mut self) {
        let done = std::mem::replace(&mut self.current, blake3::Hasher::new());
        self.values.push(done.finalize_non_root());
        self.single = Vec::new();
        self.in_chunk = 0;
        self.current.set_input_offset(self.values.len() as u64 * CHUNK);
    }

    /// Finish: the chunk values and the root hash.
    pub fn finish(mut self) -> (Vec<[u8; 32]>, [u8; 32]) {
        let total = self.total;
        if total <= CHUNK {
            let root = *blake3::hash(&self.single).as_bytes();
            return (if total == 0 { Vec::new() } else { vec![root] }, root);
        }
        if self.in_chunk > 0 {
            let done = std::mem::replace(&mut self.current, blake3::Hasher::new());
            self.values.push(done.finalize_non_root());
        }
        let root = root_hash(&self.values, total);
        (self.values, root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    #[test]
    fn matches_plain_blake3() {
        let c = CHUNK as usize;
        for n in [0, 1, 1000, c - 1, c, c + 1, 2 * c, 3 * c + 17, 5 * c, 8 * c + 1] {
            let d = data(n);
            let mut h = ChunkHasher::new();
            for piece in d.chunks(70_001) {
                h.update(piece);
            }
            let (values, root) = h.finish();
            assert_eq!(root, *blake3::hash(&d).as_bytes(), "size {n}");
            assert_eq!(values.len() as u64, chunk_count(n as u64));
            assert_eq!(root_hash(&values, n as u64), root);
            let count = values.len() as u64;
            for (i, piece) in d.chunks(c).enumerate() {
                assert_eq!(chunk_value(i as u64, count, piece), values[i], "chunk {i} of size {n}");
            }
        }
    }
}
