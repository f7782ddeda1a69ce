//! `renkei config check FILE`: validate any of renkei's TOML configurations
//! (client, meta server, file server, VM manager, VM agent), reporting the
//! line and field at fault. The client's is checked here; the others by
//! their own program (`renkei-meta --check`, `renkei-server --check`, `vpe
//! serve --check`, `vpe agent --check`), found beside this one or on PATH,
//! so each is checked by exactly the code that will read it.

use crate::ClientConfig;
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

/// `config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check a configuration file: exit 0 if it is valid; otherwise print
    /// the line and field at fault (a wrong type, an unknown or misspelt
    /// field, a missing required one, broken TOML) and exit 1.
    ///
    /// The kind is detected from the fields present (`db`: meta server,
    /// `spool`: file server, `state_dir`: VM manager, `manager`: VM agent,
    /// else a client configuration); `--kind` names it.
    Check(CheckArgs),
}

/// `config check` arguments.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The configuration file.
    file: PathBuf,
    /// What the file configures [default: detected from its fields].
    #[arg(long, value_enum)]
    kind: Option<Kind>,
}

/// The kinds of configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// `renkei`, its mount and `vpe` (fs-client/client.toml).
    Client,
    /// `renkei-meta` (fs-meta/meta.toml).
    Meta,
    /// `renkei-server` (fs-server/server.toml).
    Server,
    /// `vpe serve` (vpe/manager.toml).
    Manager,
    /// `vpe agent` (vpe/agent.toml).
    Agent,
}

impl Kind {
    /// The kind a parsed file looks like.
    pub fn detect(table: &toml::Table) -> Kind {
        if table.contains_key("db") {
            Kind::Meta
        } else if table.contains_key("spool") {
            Kind::Server
        } else if table.contains_key("manager") {
            Kind::Agent
        } else if table.contains_key("state_dir") {
            Kind::Manager
        } else {
            Kind::Client
        }
    }

    /// The program that checks it and its arguments before the file.
    fn checker(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Kind::Client => None,
            Kind::Meta => Some(("renkei-meta", &["--check", "--config"])),
            Kind::Server => Some(("renkei-server", &["--check", "--config"])),
            Kind::Manager => Some(("vpe", &["serve", "--check", "--config"])),
            Kind::Agent => Some(("vpe", &["agent", "--check", "--config"])),
        }
    }
}

/// Run `config`; the process exit code.
pub fn run(c: &ConfigCommand) -> anyhow::Result<i32> {
    match c {
        ConfigCommand::Check(a) => check(a),
    }
}

fn check(a: &CheckArgs) -> anyhow::Result<i32> {
    let kind = match a.kind {
        Some(k) => k,
        // Broken TOML is reported here, with its line, whatever the kind.
        None => Kind::detect(&fs_proto::config::load::<toml::Table>(&a.file)?),
    };
    let Some((program, args)) = kind.checker() else {
        ClientConfig::load(&a.file)?;
        println!("{}: valid client configuration", a.file.display());
        return Ok(0);
    };
    let exe = sibling(program);
    let status = std::process::Command::new(&exe).args(args).arg(&a.file).status().map_err(|e| {
        anyhow::anyhow!(
            "{} looks like a {kind:?} configuration, checked by {program}, which cannot be run ({}: {e}); \
             install it beside renkei or on PATH, or name the kind with --kind",
            a.file.display(),
            exe.display()
        )
    })?;
    Ok(status.code().unwrap_or(1))
}

/// `program` beside this executable, else the bare name (found on PATH).
fn sibling(program: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(program)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| Path::new(program).to_path_buf())
}
