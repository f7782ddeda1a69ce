//! Which files to read ahead (sans IO): the files of recently listed
//! directories in the two orders programs read a directory in — by name
//! (the listing's order: `tar`, `rsync`, shells' globs) and by inode number
//! (GNU `cp -r` sorts a directory's entries by inode before copying them) —
//! and, per directory, which of the two the opens follow.
//!
//! Each open of a listed file ([`Ahead::opened`]) first settles the order:
//! an open of the file that follows the previous one in exactly one of the
//! orders chooses that order; the first open of a directory chooses by
//! inode number if it is the lowest-numbered file but not the first name.
//! It then answers the files after the opened one in that order, as many as
//! [`Ahead::window`] bytes reach.

use fs_proto::Ino;
use std::collections::{HashMap, VecDeque};

/// Directories remembered (oldest forgotten first).
pub const MAX_DIRS: usize = 256;

/// The order a directory's files are being opened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// By name, as listed.
    Name,
    /// By inode number.
    Inode,
}

struct Listed {
    /// (inode, size) by name.
    by_name: Vec<(Ino, u64)>,
    /// (inode, size) by inode number.
    by_ino: Vec<(Ino, u64)>,
    /// Where each file sits: (by name, by inode).
    pos: HashMap<Ino, (usize, usize)>,
    /// The last file opened here.
    last: Option<Ino>,
    order: Order,
}

impl Listed {
    fn new(by_name: Vec<(Ino, u64)>) -> Self {
        let mut by_ino = by_name.clone();
        by_ino.sort_unstable_by_key(|(ino, _)| *ino);
        let mut pos: HashMap<Ino, (usize, usize)> = HashMap::with_capacity(by_name.len());
        for (i, (ino, _)) in by_name.iter().enumerate() {
            pos.insert(*ino, (i, 0));
        }
        for (i, (ino, _)) in by_ino.iter().enumerate() {
            if let Some(p) = pos.get_mut(ino) {
                p.1 = i;
            }
        }
        Listed { by_name, by_ino, pos, last: None, order: Order::Name }
    }

    /// Settle the order with an open of `ino` at `(n, i)`.
    fn settle(&mut self, ino: Ino, (n, i): (usize, usize)) {
        let prev = self.last.filter(|p| *p != ino).and_then(|p| self.pos.get(&p).copied());
        let (by_name, by_ino) = match prev {
            Some((pn, pi)) => (n == pn + 1, i == pi + 1),
            None => (n == 0, i == 0),
        };
        if by_ino && !by_name {
            self.order = Order::Inode;
        } else if by_name && !by_ino {
            self.order = Order::Name;
        }
        self.last = Some(ino);
    }
}

/// What to read ahead of one open.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// The files after the opened one, in the order the opens follow,
    /// within the window's bytes (at least one when any follow).
    pub files: Vec<(Ino, u64)>,
    /// The window reaches the directory's last file.
    pub to_end: bool,
}

/// The listings and the order each directory is read in.
pub struct Ahead {
    window: u64,
    dirs: HashMap<Ino, Listed>,
    /// Listed directories, oldest first.
    age: VecDeque<Ino>,
    /// The directory each file was listed in.
    place: HashMap<Ino, Ino>,
}

impl Ahead {
    /// Read up to `window` bytes ahead of each open.
    pub fn new(window: u64) -> Self {
        Ahead { window, dirs: HashMap::new(), age: VecDeque::new(), place: HashMap::new() }
    }

    /// Bytes read ahead of an open.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Remember the files worth reading ahead of directory `dir`, as
    /// (inode, size) in listing (name) order; replaces what was known.
    pub fn listed(&mut self, dir: Ino, files: Vec<(Ino, u64)>) {
        self.forget_dir(dir);
        if files.is_empty() {
            return;
        }
        for (ino, _) in &files {
            self.place.insert(*ino, dir);
        }
        self.dirs.insert(dir, Listed::new(files));
        self.age.push_back(dir);
        while self.age.len() > MAX_DIRS {
            if let Some(old) = self.age.pop_front() {
                self.forget_dir(old);
            }
        }
    }

    fn forget_dir(&mut self, dir: Ino) {
        if let Some(l) = self.dirs.remove(&dir) {
            for (ino, _) in l.by_name {
                if self.place.get(&ino) == Some(&dir) {
                    self.place.remove(&ino);
                }
            }
            self.age.retain(|d| *d != dir);
        }
    }

    /// Forget every listing.
    pub fn clear(&mut self) {
        self.dirs.clear();
        self.age.clear();
        self.place.clear();
    }

    /// Whether `ino` is a file of a remembered listing.
    pub fn knows(&self, ino: Ino) -> bool {
        self.place.contains_key(&ino)
    }

    /// `ino` is being opened: the files to have ahead of it.
    pub fn opened(&mut self, ino: Ino) -> Window {
        let Some(dir) = self.place.get(&ino).copied() else { return Window::default() };
        let Some(l) = self.dirs.get_mut(&dir) else { return Window::default() };
        let Some(at) = l.pos.get(&ino).copied() else { return Window::default() };
        l.settle(ino, at);
        let (list, start) = match l.order {
            Order::Name => (&l.by_name, at.0 + 1),
            Order::Inode => (&l.by_ino, at.1 + 1),
        };
        let mut files = Vec::new();
        let mut bytes = 0u64;
        for &(f, size) in list.iter().skip(start) {
            if !files.is_empty() && bytes + size > self.window {
                break;
            }
            bytes += size;
            files.push((f, size));
        }
        let to_end = start + files.len() >= list.len();
        Window { files, to_end }
    }

    /// The order a directory's opens were last seen to follow.
    pub fn order(&self, dir: Ino) -> Option<Order> {
        self.dirs.get(&dir).map(|l| l.order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names in order a..; inode numbers shuffled: name i has inode
    /// `inos[i]`.
    fn dir(inos: &[Ino], size: u64) -> Vec<(Ino, u64)> {
        inos.iter().map(|i| (*i, size)).collect()
    }

    fn files(w: &Window) -> Vec<Ino> {
        w.files.iter().map(|f| f.0).collect()
    }

    #[test]
    fn name_order_is_followed_by_default() {
        let mut a = Ahead::new(3_000);
        a.listed(1, dir(&[10, 11, 12, 13, 14, 15], 1_000));
        let w = a.opened(10);
        assert_eq!(files(&w), vec![11, 12, 13]);
        assert!(!w.to_end);
        assert_eq!(files(&a.opened(11)), vec![12, 13, 14]);
        let w = a.opened(13);
        assert_eq!(files(&w), vec![14, 15]);
        assert!(w.to_end);
        assert!(a.opened(15).files.is_empty() && a.opened(15).to_end);
        assert!(a.opened(99).files.is_empty(), "a file of no listing");
    }

    #[test]
    fn cp_reading_by_inode_number_is_recognised() {
        // Names a..e carry inodes 50, 20, 40, 10, 30: cp -r opens 10 (d)
        // first, then 20 (b), 30 (e), ...
        let mut a = Ahead::new(10_000);
        a.listed(1, dir(&[50, 20, 40, 10, 30], 100));
        assert_eq!(files(&a.opened(10)), vec![20, 30, 40, 50], "lowest inode, not first name: by inode");
        assert_eq!(a.order(1), Some(Order::Inode));
        assert_eq!(files(&a.opened(20)), vec![30, 40, 50]);
        // A program that then goes by name is followed too.
        a.listed(2, dir(&[1, 2, 3, 4], 100));
        assert_eq!(files(&a.opened(1)), vec![2, 3, 4]);
        assert_eq!(a.order(2), Some(Order::Name));
    }

    #[test]
    fn the_order_switches_when_opens_follow_the_other() {
        // By name: 50 20 40 10 30; by inode: 10 20 30 40 50.
        let mut a = Ahead::new(10_000);
        a.listed(1, dir(&[50, 20, 40, 10, 30], 100));
        a.opened(50);
        assert_eq!(a.order(1), Some(Order::Name), "the first name opened first");
        a.opened(10);
        assert_eq!(a.order(1), Some(Order::Name), "10 follows 50 in neither order: unchanged");
        a.opened(20);
        assert_eq!(a.order(1), Some(Order::Inode), "20 follows 10 by inode only");
        assert_eq!(files(&a.opened(30)), vec![40, 50]);
    }

    #[test]
    fn one_file_larger_than_the_window_is_still_read_ahead() {
        let mut a = Ahead::new(1_000);
        a.listed(1, vec![(1, 10), (2, 50_000), (3, 10)]);
        assert_eq!(files(&a.opened(1)), vec![2]);
        assert_eq!(files(&a.opened(2)), vec![3]);
    }

    #[test]
    fn old_directories_are_forgotten() {
        let mut a = Ahead::new(1_000);
        for d in 0..(MAX_DIRS as Ino + 10) {
            a.listed(d, vec![(1_000 + d, 1)]);
        }
        assert!(!a.knows(1_000), "the oldest went");
        assert!(a.knows(1_000 + MAX_DIRS as Ino + 9));
        a.listed(5_000, Vec::new());
        a.clear();
        assert!(!a.knows(1_000 + MAX_DIRS as Ino + 9));
    }
}
