//! `vpe run`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fs_proto::vpe::{RunRequest, UserFile};

use super::output;
use crate::client::VpeClient;

/// `vpe run` arguments.
#[derive(Args, Debug)]
pub(super) struct RunArgs {
    /// Site to run at.
    #[arg(long)]
    site: Option<String>,
    /// Image, NAME[:GEN|:TAG] (latest generation by default).
    #[arg(long)]
    image: Option<String>,
    /// Virtual CPUs.
    #[arg(long)]
    cpus: Option<u32>,
    /// Memory, e.g. 512M or 1G (plain numbers are MiB).
    #[arg(long, value_parser = parse_mem)]
    mem: Option<u64>,
    /// A segment to attach, with your static address on it (repeat for several NICs).
    #[arg(long = "net")]
    nets: Vec<String>,
    /// VM name [default: IMAGE-N].
    #[arg(long)]
    name: Option<String>,
    /// Start from a template (the other options override it).
    #[arg(long)]
    template: Option<String>,
    /// A file of SSH public keys to add to the ones the manager has for you.
    #[arg(long = "ssh-key")]
    ssh_keys: Vec<PathBuf>,
    /// Use this PoP of the site instead of the placement policy's choice.
    #[arg(long)]
    pop: Option<String>,
    /// Have the guest write NAME=CONTENT into its disk (the test image keeps it in /renkei-marks).
    #[arg(long)]
    write: Option<String>,
}

/// `512`, `512M`, `1G` -> MiB.
pub(super) fn parse_mem(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "M"),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("{s:?}: expected a size like 512M or 2G"))?;
    let mib = match mult.to_ascii_uppercase().as_str() {
        "M" | "MB" | "MIB" => n,
        "G" | "GB" | "GIB" => n.checked_mul(1024).ok_or("size too large")?,
        other => return Err(format!("{other:?}: use M or G")),
    };
    Ok(mib)
}

pub(super) async fn run(client: &VpeClient, args: RunArgs, json: bool) -> anyhow::Result<()> {
    let mut ssh_keys = Vec::new();
    for path in &args.ssh_keys {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        ssh_keys.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
    }
    let user_file = match &args.write {
        Some(w) => {
            let (name, content) = w.split_once('=').context("--write wants NAME=CONTENT")?;
            Some(UserFile { name: name.into(), content: content.into() })
        }
        None => None,
    };
    let req = RunRequest {
        site: args.site,
        image: args.image,
        cpus: args.cpus,
        memory_mib: args.mem,
        nets: args.nets,
        name: args.name,
        template: args.template,
        ssh_keys,
        pop: args.pop,
        user_file,
    };
    output::vm(&client.run(req).await?, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_mem("512").unwrap(), 512);
        assert_eq!(parse_mem("512M").unwrap(), 512);
        assert_eq!(parse_mem("2G").unwrap(), 2048);
        assert_eq!(parse_mem("1gib").unwrap(), 1024);
        assert!(parse_mem("12T").is_err());
        assert!(parse_mem("lots").is_err());
    }
}
