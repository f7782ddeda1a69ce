//! Shell completions and man pages of every renkei binary, generated from
//! its clap definition. Each binary flattens [`DocCommand`] into its
//! subcommands (`renkei completions bash`, `renkei-meta man DIR`, ...) and
//! hands its `clap::Command` to [`run`], so what is installed always
//! matches the binary.

use clap::Subcommand;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The documentation subcommands every renkei binary has.
#[derive(Subcommand, Debug, Clone)]
pub enum DocCommand {
    /// Print a shell completion script to stdout.
    ///
    /// Install it where your shell looks, e.g. `renkei completions bash >
    /// /usr/share/bash-completion/completions/renkei`, `renkei completions
    /// zsh > /usr/share/zsh/vendor-completions/_renkei`, `renkei completions
    /// fish > /usr/share/fish/vendor_completions.d/renkei.fish`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages of this program into DIR: one for the program
    /// and one per subcommand (`renkei-put.1`, ...), section 1 (8 for
    /// `mount.renkei`).
    Man {
        /// Directory to write the pages into (made if missing).
        dir: PathBuf,
    },
}

/// Run a documentation command for `cmd` (the binary's
/// `<Cli as clap::CommandFactory>::command()`); `extra` are further
/// programs the same binary is (`mount.renkei`), documented as section 8
/// pages by `man`.
pub fn run(doc: &DocCommand, cmd: clap::Command, extra: &[clap::Command]) -> std::io::Result<()> {
    match doc {
        DocCommand::Completions { shell } => {
            let mut cmd = cmd;
            let name = cmd.get_name().to_string();
            let mut out = std::io::stdout().lock();
            clap_complete::generate(*shell, &mut cmd, name, &mut out);
            out.flush()
        }
        DocCommand::Man { dir } => {
            for path in write_man_pages(dir, cmd, extra)? {
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}

/// Write the man pages of `cmd` (and its visible subcommands) and of
/// `extra` into `dir`; the files written.
pub fn write_man_pages(dir: &Path, cmd: clap::Command, extra: &[clap::Command]) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| annotate(dir, e))?;
    let before = listing(dir)?;
    clap_mangen::generate_to(cmd, dir).map_err(|e| annotate(dir, e))?;
    for c in extra {
        let mut c = c.clone().disable_help_subcommand(true);
        c.build();
        clap_mangen::Man::new(c).section("8").generate_to(dir).map_err(|e| annotate(dir, e))?;
    }
    let mut written: Vec<PathBuf> = listing(dir)?.into_iter().filter(|p| !before.contains(p)).collect();
    if written.is_empty() {
        // Pages that already existed were rewritten in place.
        written = listing(dir)?;
    }
    written.sort();
    Ok(written)
}

fn listing(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| annotate(dir, e))? {
        v.push(e?.path());
    }
    Ok(v)
}

fn annotate(dir: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("writing man pages into {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    #[command(name = "demo", about = "A demo.")]
    struct Demo {
        #[command(subcommand)]
        cmd: Sub,
    }
    #[derive(Subcommand)]
    enum Sub {
        /// Put things.
        Put,
        #[command(flatten)]
        Doc(DocCommand),
    }

    #[test]
    fn pages_for_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_man_pages(dir.path(), Demo::command(), &[]).unwrap();
        let names: Vec<String> = pages.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert!(names.contains(&"demo.1".to_string()), "{names:?}");
        assert!(names.contains(&"demo-put.1".to_string()), "{names:?}");
        let text = std::fs::read_to_string(dir.path().join("demo.1")).unwrap();
        assert!(text.contains("put"), "{text}");
    }
}
