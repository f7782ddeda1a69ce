//! Dirty data of one file open for writing: the bytes written since the
//! last commit, kept in memory while they end below [`IN_MEMORY`] bytes and
//! in a local spill file (unlinked, sparse) beyond, with the set of ranges
//! they cover, plus the pending size. (A spill file per small file was an
//! inode created, written, read back and freed on the local disk for each
//! file `tar x` wrote: a third of the mount's FUSE thread time.) A commit sends exactly this
//! to a file server as a new generation built on the current one
//! ([`super::commit`]); reads on the mount overlay it on the current
//! generation ([`Dirty::plan`]).
//!
//! The new contents are, byte by byte below `size`: the spill file inside a
//! dirty range, else the current generation below `floor` (what truncation
//! left of it), else zero.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Written bytes ending below this offset stay in memory; a write beyond
/// moves them into a spill file. Memory is bounded by the files open for
/// writing at once times this.
pub const IN_MEMORY: u64 = 256 << 10;

/// Where the written bytes are.
enum Spill {
    /// Bytes `0..len`; anything beyond reads as zeros.
    Memory(Vec<u8>),
    /// A sparse, unlinked local file.
    File(std::fs::File),
}

/// Where the bytes of one piece of a read come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Written locally: read the spill file.
    Spill(u64, u64),
    /// Unchanged: read the current generation.
    Base(u64, u64),
    /// Zeros (extended or truncated-then-extended).
    Zero(u64, u64),
}

/// Dirty state of one file.
pub struct Dirty {
    spill: Spill,
    spill_dir: PathBuf,
    /// start -> end of written ranges, disjoint, not adjacent.
    ranges: BTreeMap<u64, u64>,
    /// Logical size now.
    pub size: u64,
    /// Bytes of the current generation that survive.
    pub floor: u64,
    /// When it was last written.
    pub mtime: SystemTime,
}

impl Dirty {
    /// Start over a current generation of `base_size` bytes.
    pub fn new(spill_dir: &Path, base_size: u64) -> std::io::Result<Self> {
        Ok(Dirty {
            spill: Spill::Memory(Vec::new()),
            spill_dir: spill_dir.to_path_buf(),
            ranges: BTreeMap::new(),
            size: base_size,
            floor: base_size,
            mtime: SystemTime::now(),
        })
    }

    /// Bytes written and not yet committed.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether the contents are exactly what was written, from offset 0 to
    /// the size, with nothing of the current generation kept.
    pub fn is_prefix(&self) -> bool {
        self.floor == 0 && self.ranges.len() == 1 && self.ranges.first_key_value() == Some((&0, &self.size))
    }

    /// The written ranges, in order.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.ranges.iter().map(|(s, e)| (*s, *e)).collect()
    }

    /// Record a write.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        if end > IN_MEMORY {
            self.spill_to_file()?;
        }
        match &mut self.spill {
            Spill::Memory(buf) => {
                let (a, b) = (offset as usize, end as usize);
                if buf.len() < b {
                    buf.resize(b, 0);
                }
                buf[a..b].copy_from_slice(data);
            }
            Spill::File(f) => f.write_all_at(data, offset)?,
        }
        self.insert(offset, end);
        self.size = self.size.max(end);
        self.mtime = SystemTime::now();
        Ok(())
    }

    /// Move the bytes held in memory into a spill file.
    fn spill_to_file(&mut self) -> std::io::Result<()> {
        if let Spill::Memory(buf) = &self.spill {
            let f = tempfile::tempfile_in(&self.spill_dir)?;
            f.write_all_at(buf, 0)?;
            self.spill = Spill::File(f);
        }
        Ok(())
    }

    fn insert(&mut self, mut start: u64, mut end: u64) {
        // Merge with every range that overlaps or touches [start, end).
        let touching: Vec<(u64, u64)> =
            self.ranges.range(..=end).filter(|(_, e)| **e >= start).map(|(s, e)| (*s, *e)).collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// Change the size (truncate or extend with zeros).
    pub fn truncate(&mut self, size: u64) -> std::io::Result<()> {
        let cut: Vec<(u64, u64)> = self.ranges.range(..).filter(|(_, e)| **e > size).map(|(s, e)| (*s, *e)).collect();
        for (s, _) in &cut {
            self.ranges.remove(s);
            if *s < size {
                self.ranges.insert(*s, size);
            }
        }
        match &mut self.spill {
            // Growing needs nothing: bytes past the buffer read as zeros.
            Spill::Memory(buf) => buf.truncate(size as usize),
            Spill::File(f) => f.set_len(size)?,
        }
        self.floor = self.floor.min(size);
        self.size = size;
        self.mtime = SystemTime::now();
        Ok(())
    }

    /// Where the bytes of `[offset, offset + len)` (clipped to the size) come from.
    pub fn plan(&self, offset: u64, len: u64) -> Vec<Piece> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out = Vec::new();
        if offset >= end {
            // At or past the end (a read beyond EOF): nothing.
            return out;
        }
        let mut pos = offset;
        let push_gap = |out: &mut Vec<Piece>, a: u64, b: u64| {
            if a >= b {
                return;
            }
            let f = self.floor.clamp(a, b);
            if a < f {
                out.push(Piece::Base(a, f));
            }
            if f < b {
                out.push(Piece::Zero(f, b));
            }
        };
        // The range starting before `offset` may cover it.
        let first = self.ranges.range(..=offset).next_back().filter(|(_, e)| **e > offset).map(|(s, e)| (*s, *e));
        let later = self.ranges.range(offset.saturating_add(1)..end).map(|(s, e)| (*s, *e));
        for (s, e) in first.into_iter().chain(later) {
            if pos >= end {
                break;
            }
            push_gap(&mut out, pos, s.max(pos).min(end));
            let a = s.max(pos);
            let b = e.min(end);
            if a < b {
                out.push(Piece::Spill(a, b));
                pos = b;
            }
        }
        push_gap(&mut out, pos, end);
        out
    }

    /// Read written bytes back.
    pub fn read_spill(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut out = vec![0u8; len as usize];
        match &self.spill {
            Spill::Memory(buf) => {
                let a = (offset as usize).min(buf.len());
                let b = (offset.saturating_add(len) as usize).min(buf.len());
                out[..b - a].copy_from_slice(&buf[a..b]);
            }
            Spill::File(f) => f.read_exact_at(&mut out, offset)?,
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(base: u64) -> Dirty {
        Dirty::new(&std::env::temp_dir(), base).unwrap()
    }

    #[test]
    fn ranges_merge() {
        let mut x = d(0);
        x.write(10, &[1; 10]).unwrap();
        x.write(30, &[1; 10]).unwrap();
        x.write(20, &[2; 10]).unwrap();
        assert_eq!(x.ranges(), vec![(10, 40)]);
        x.write(5, &[3; 2]).unwrap();
        assert_eq!(x.ranges(), vec![(5, 7), (10, 40)]);
        assert_eq!(x.bytes(), 32);
        assert_eq!(x.size, 40);
    }

    #[test]
    fn plan_overlays_base_spill_and_zeros() {
        let mut x = d(100);
        x.write(10, &[1; 10]).unwrap();
        assert_eq!(x.plan(0, 100), vec![Piece::Base(0, 10), Piece::Spill(10, 20), Piece::Base(20, 100)]);
        x.truncate(50).unwrap();
        x.truncate(80).unwrap();
        assert_eq!(x.plan(15, 1000), vec![Piece::Spill(15, 20), Piece::Base(20, 50), Piece::Zero(50, 80)]);
        x.truncate(12).unwrap();
        assert_eq!(x.ranges(), vec![(10, 12)]);
        assert_eq!(x.plan(0, 100), vec![Piece::Base(0, 10), Piece::Spill(10, 12)]);
        assert_eq!(x.read_spill(10, 2).unwrap(), vec![1, 1]);
        // Reads at or past the end plan nothing.
        assert_eq!(x.plan(12, 10), vec![]);
        assert_eq!(x.plan(500, 10), vec![]);
    }

    #[test]
    fn bytes_move_from_memory_to_a_spill_file_past_the_bound() {
        let mut x = d(0);
        x.write(0, &[7; 100]).unwrap();
        assert!(matches!(x.spill, Spill::Memory(_)));
        // Truncated, re-extended: the gap reads as zeros, not old bytes.
        x.truncate(10).unwrap();
        x.truncate(100).unwrap();
        x.write(50, &[8; 10]).unwrap();
        assert_eq!(x.read_spill(0, 10).unwrap(), vec![7; 10]);
        assert_eq!(x.read_spill(50, 10).unwrap(), vec![8; 10]);
        x.write(IN_MEMORY - 4, &[9; 8]).unwrap();
        assert!(matches!(x.spill, Spill::File(_)));
        assert_eq!(x.read_spill(0, 10).unwrap(), vec![7; 10]);
        assert_eq!(x.read_spill(50, 10).unwrap(), vec![8; 10]);
        assert_eq!(x.read_spill(IN_MEMORY - 4, 8).unwrap(), vec![9; 8]);
        assert_eq!(x.ranges(), vec![(0, 10), (50, 60), (IN_MEMORY - 4, IN_MEMORY + 4)]);
    }
}
