//! `renkei rep` (gfrep-style replication) and `renkei ncopy` (copy counts
//! and the background replication backlog).

use super::output::print_json;
use crate::replicate::{RepOptions, RepReport, Tick};
use crate::Client;
use clap::Args;
use indicatif::{HumanBytes, ProgressBar};
use std::io::IsTerminal;

/// `rep` arguments.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("goal").required(true).multiple(true).args(["copies", "dst"])))]
pub struct RepArgs {
    /// Wanted replicas per file: on the -D host or site if given, otherwise
    /// anywhere (new ones go to distinct sites first). Default 1 with -D.
    #[arg(short = 'N', long = "copies", value_name = "COPIES")]
    copies: Option<u32>,
    /// Read only from replicas on this host or site (default: the nearest
    /// good replica, as the destination measures it).
    #[arg(short = 'S', long = "src", value_name = "SRC_HOST|SITE")]
    src: Option<String>,
    /// Copy to this host or site.
    #[arg(short = 'D', long = "dst", value_name = "DST_HOST|SITE")]
    dst: Option<String>,
    /// Copy orders (server-to-server streams) in flight at once.
    #[arg(short = 'j', long = "parallel", default_value_t = 8, value_name = "PARALLEL")]
    parallel: usize,
    /// Most files per stream (1: one file per request, without bundling).
    #[arg(long, default_value_t = 512)]
    batch_files: usize,
    /// Show what would be copied where, copy nothing.
    #[arg(long)]
    dry_run: bool,
    /// Files and directories (recursively).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<String>,
}

pub(crate) async fn rep(client: &Client, a: &RepArgs, json: bool) -> anyhow::Result<()> {
    let opts = RepOptions {
        copies: a.copies,
        from: a.src.clone(),
        to: a.dst.clone(),
        parallel: a.parallel.max(1),
        dry_run: a.dry_run,
        batch_files: a.batch_files.max(1),
        ..Default::default()
    };
    let pb = progress(json || a.dry_run, "replicating");
    let on_tick = |t: Tick| match t {
        Tick::Total(n) => pb.set_length(n),
        Tick::Done(n) => pb.inc(n),
    };
    let report = client.replicate(&a.paths, &opts, &on_tick).await?;
    pb.finish_and_clear();
    print_report(&report, json, a.dry_run)?;
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} file(s) not replicated; re-run the same command to copy only what is missing",
            report.failed.len()
        );
    }
    if !a.dry_run && !report.complete() {
        anyhow::bail!("some files cannot reach the wanted copies now (see the skipped list)");
    }
    Ok(())
}

/// A bar with rate and ETA on a terminal; hidden otherwise.
pub(crate) fn progress(hidden: bool, what: &str) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

pub(crate) fn print_report(r: &RepReport, json: bool, dry_run: bool) -> anyhow::Result<()> {
    if json {
        let secs = (r.elapsed_ms as f64 / 1000.0).max(1e-3);
        return print_json(&serde_json::json!({
            "files": r.files, "bytes": r.bytes, "satisfied": r.satisfied,
            "copied_files": r.copied_files, "copied_bytes": r.copied_bytes, "reused_files": r.reused_files,
            "orders": r.orders, "elapsed_ms": r.elapsed_ms,
            "rate_bytes_per_sec": (r.copied_bytes as f64 / secs) as u64,
            "skipped": r.skipped, "failed": r.failed, "planned": r.planned,
        }));
    }
    if dry_run {
        for p in &r.planned {
            println!("{} ({}) -> {} @ {} from {}", p.path, HumanBytes(p.size), p.to, p.to_site, p.from.join(", "));
        }
        println!("{} copies planned; {} of {} files already have enough", r.planned.len(), r.satisfied, r.files);
    } else {
        let secs = (r.elapsed_ms as f64 / 1000.0).max(1e-3);
        println!(
            "{} files copied ({}, {}/s server to server){}; {} already had enough; {} failed",
            r.copied_files,
            HumanBytes(r.copied_bytes),
            HumanBytes((r.copied_bytes as f64 / secs) as u64),
            if r.reused_files > 0 { format!(", {} found in place", r.reused_files) } else { String::new() },
            r.satisfied,
            r.failed.len()
        );
    }
    for s in &r.skipped {
        eprintln!("skipped {}: {}", s.path, s.reason);
    }
    for f in &r.failed {
        eprintln!("FAILED {}: {}", f.path, f.reason);
    }
    Ok(())
}

/// `ncopy` arguments.
#[derive(Args, Debug)]
pub struct NcopyArgs {
    /// Show the background replication's state and backlog instead.
    #[arg(long, conflicts_with_all = ["copies", "paths", "recursive"])]
    status: bool,
    /// Also set it on everything under the directories.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Wanted replicas (0: the federation default). New files inherit
    /// their directory's.
    #[arg(required_unless_present = "status", value_name = "N")]
    copies: Option<u32>,
    /// Files or directories.
    #[arg(required_unless_present = "status", value_name = "PATH")]
    paths: Vec<String>,
}

pub(crate) async fn ncopy(client: &Client, a: &NcopyArgs, json: bool) -> anyhow::Result<()> {
    if a.status {
        let s = client.replication_status().await?;
        if json {
            return print_json(&s);
        }
        println!("background replication: {}", if s.enabled { "on" } else { "off" });
        println!("backlog: {} files, {} to copy", s.backlog_files, HumanBytes(s.backlog_bytes));
        println!("  stuck (no live source or no room): {}", s.stuck_files);
        println!("  surplus to trim: {}", s.surplus_files);
        println!("  copies in flight: {}", s.in_flight);
        println!(
            "done since start: {} copies ({}), {} failed, {} surplus removed",
            s.copies_done,
            HumanBytes(s.bytes_copied),
            s.copies_failed,
            s.removed
        );
        println!("passes: {} (last checked {} files)", s.passes, s.files_checked);
        if !s.hosts_lost.is_empty() {
            println!("hosts down past the grace period: {}", s.hosts_lost.join(", "));
        }
        if let Some(e) = &s.last_error {
            println!("last error: {e}");
        }
        return Ok(());
    }
    let copies = a.copies.unwrap_or(0);
    let mut changed = 0;
    for p in &a.paths {
        changed += client.set_ncopy(p, copies, a.recursive).await?;
    }
    if json {
        return print_json(&serde_json::json!({"ncopy": copies, "changed": changed}));
    }
    println!("copy count {copies} set on {changed} file(s)/dir(s)");
    Ok(())
}
