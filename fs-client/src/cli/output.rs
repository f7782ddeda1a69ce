//! Views of results for humans and for `--json`.

use fs_proto::{hash_hex, Attr, FileKind, Timestamp};
use serde::Serialize;

/// Attributes as `stat --json` prints them.
#[derive(Serialize)]
pub(crate) struct AttrView {
    pub ino: u64,
    pub kind: &'static str,
    pub mode: String,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: String,
    pub ctime: String,
    pub atime: String,
    pub generation: u64,
    pub blake3: Option<String>,
    pub ncopy: u32,
}

pub(crate) fn kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::Regular => "file",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
        FileKind::CharDevice => "char-device",
        FileKind::BlockDevice => "block-device",
    }
}

pub(crate) fn time_str(t: Timestamp) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t.secs) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            d.year(),
            d.month() as u8,
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            t.nanos
        ),
        Err(_) => format!("{}s", t.secs),
    }
}

pub(crate) fn short_time(t: Timestamp) -> String {
    let s = time_str(t);
    format!("{} {}", &s[..10], &s[11..16])
}

impl From<&Attr> for AttrView {
    fn from(a: &Attr) -> Self {
        AttrView {
            ino: a.ino,
            kind: kind_name(a.kind),
            mode: format!("{:o}", a.perm),
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            size: a.size,
            mtime: time_str(a.mtime),
            ctime: time_str(a.ctime),
            atime: time_str(a.atime),
            generation: a.gen,
            blake3: a.hash.as_ref().map(hash_hex),
            ncopy: a.ncopy,
        }
    }
}

/// `-rwxr-xr-x` style mode string.
pub(crate) fn mode_string(a: &Attr) -> String {
    let mut s = String::with_capacity(10);
    s.push(a.kind.ls_char());
    let p = a.perm;
    let bit = |m: u32, c: char| if p & m != 0 { c } else { '-' };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(match (p & 0o100 != 0, p & 0o4000 != 0) {
        (true, true) => 's',
        (false, true) => 'S',
        (true, false) => 'x',
        _ => '-',
    });
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(match (p & 0o010 != 0, p & 0o2000 != 0) {
        (true, true) => 's',
        (false, true) => 'S',
        (true, false) => 'x',
        _ => '-',
    });
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(match (p & 0o001 != 0, p & 0o1000 != 0) {
        (true, true) => 't',
        (false, true) => 'T',
        (true, false) => 'x',
        _ => '-',
    });
    s
}

/// Print a value as pretty JSON.
pub(crate) fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A progress bar for byte transfers on a terminal; hidden otherwise.
pub(crate) fn byte_progress(total: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}
