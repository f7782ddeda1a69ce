//! `renkei fsck`: verify replicas on their servers, report, repair.

use super::output::print_json;
use super::replicate::progress;
use crate::replicate::Tick;
use crate::Client;
use clap::Args;
use indicatif::HumanBytes;

/// `fsck` arguments.
#[derive(Args, Debug)]
pub struct FsckArgs {
    /// Copy good replicas over bad or missing ones (server to server).
    #[arg(long)]
    repair: bool,
    /// Verifications (and repair streams) in flight at once.
    #[arg(short = 'j', long = "parallel", default_value_t = 4)]
    parallel: usize,
    /// Files and directories to check (recursively) [default: /].
    #[arg(value_name = "PATH")]
    paths: Vec<String>,
}

pub(crate) async fn fsck(client: &Client, a: &FsckArgs, json: bool) -> anyhow::Result<()> {
    let paths = if a.paths.is_empty() { vec!["/".to_string()] } else { a.paths.clone() };
    let pb = progress(json, "repairing");
    let on_tick = |t: Tick| match t {
        Tick::Total(n) => pb.set_length(n),
        Tick::Done(n) => pb.inc(n),
    };
    let r = client.check(&paths, a.repair, a.parallel.max(1), &on_tick).await?;
    pb.finish_and_clear();
    if json {
        print_json(&r)?;
    } else {
        println!(
            "{} files, {} replicas verified on their servers ({}), {} good",
            r.files,
            r.verified,
            HumanBytes(r.bytes_verified),
            r.good
        );
        for i in &r.corrupt {
            println!("CORRUPT {} on {} @ {}: {}", i.path, i.host, i.site, i.reason);
        }
        for i in &r.missing {
            println!("MISSING {} on {} @ {}: {}", i.path, i.host, i.site, i.reason);
        }
        for i in &r.known_bad {
            println!("BAD {} on {} @ {}: {}", i.path, i.host, i.site, i.reason);
        }
        for i in &r.unreachable {
            println!("UNCHECKED {} on {} @ {}: {}", i.path, i.host, i.site, i.reason);
        }
        for p in &r.lost {
            println!("LOST {p}: no replica at all");
        }
        for e in &r.errors {
            println!("ERROR {}: {}", e.path, e.reason);
        }
        for d in &r.unreadable {
            println!("SKIPPED {d}: directory not readable by you (not checked)");
        }
        if let Some(rep) = &r.repair {
            println!(
                "repair: {} replicas restored ({}), {} failed",
                rep.copied_files + rep.reused_files,
                HumanBytes(rep.copied_bytes),
                rep.failed.len() + rep.skipped.len()
            );
            for f in rep.failed.iter().chain(rep.skipped.iter()) {
                println!("NOT REPAIRED {}: {}", f.path, f.reason);
            }
        }
    }
    if !r.clean() {
        let hint = if a.repair || r.corrupt.is_empty() && r.missing.is_empty() && r.known_bad.is_empty() {
            ""
        } else {
            " (run with --repair)"
        };
        anyhow::bail!("problems found{hint}");
    }
    Ok(())
}
