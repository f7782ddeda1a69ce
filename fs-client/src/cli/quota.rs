//! `renkei quota`: show what a user holds against their limits, and (for
//! admins) set the limits.
//!
//! Usage counts every inode a user owns as a file and every replica of
//! their files as its size, so a file kept at two sites counts twice (as
//! Gfarm's physical quota does).

use super::output::print_json;
use crate::Client;
use clap::{Args, Subcommand};
use fs_proto::meta::{QuotaLimits, QuotaReport};
use fs_proto::Timestamp;
use indicatif::HumanBytes;
use std::time::Duration;

/// `quota` arguments.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QuotaArgs {
    #[command(subcommand)]
    set: Option<QuotaCommand>,
    /// Whose quota (admins only; default: yours).
    user: Option<String>,
    /// Every user with a quota or with files (admins only).
    #[arg(long, conflicts_with = "user")]
    all: bool,
}

/// `quota` subcommands.
#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Set a user's limits (admins only). Sizes take units (10G, 500MiB);
    /// 0 or an omitted limit means none; no limit at all removes the quota.
    Set(SetArgs),
}

/// `quota set` arguments.
#[derive(Args, Debug)]
pub struct SetArgs {
    /// The user (certificate name).
    user: String,
    /// Hard limit on bytes (every replica counted): never passed.
    #[arg(long, value_parser = parse_bytes, default_value = "0")]
    bytes: u64,
    /// Soft limit on bytes: may be passed for the grace period.
    #[arg(long, value_parser = parse_bytes, default_value = "0")]
    soft_bytes: u64,
    /// Hard limit on files (inodes: files, directories, links).
    #[arg(long, default_value_t = 0)]
    files: u64,
    /// Soft limit on files.
    #[arg(long, default_value_t = 0)]
    soft_files: u64,
    /// How long usage may stay above a soft limit (e.g. 7d, 12h).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "7d")]
    grace: Duration,
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s).map_err(|e| format!("{s:?} is not a size ({e}); e.g. 10G, 500MiB, 1048576"))
}

/// Run `renkei quota`.
pub(crate) async fn quota(client: &Client, a: &QuotaArgs, json: bool) -> anyhow::Result<()> {
    let reports = match &a.set {
        Some(QuotaCommand::Set(s)) => {
            let limits = QuotaLimits {
                files_soft: s.soft_files,
                files_hard: s.files,
                bytes_soft: s.soft_bytes,
                bytes_hard: s.bytes,
                grace_s: s.grace.as_secs().max(1),
            };
            client.meta().set_quota(&s.user, limits).await?
        }
        None => client.meta().quota(a.user.clone(), a.all).await?,
    };
    if json {
        return print_json(&reports);
    }
    let now = Timestamp::now().as_millis();
    println!(
        "{:<16} {:>7} {:>11} {:>11} {:>11} {:>9} {:>9} {:>9}  grace",
        "user", "uid", "bytes", "soft", "hard", "files", "soft", "hard"
    );
    for r in &reports {
        let limit = |v: u64, human: bool| match (v, human) {
            (0, _) => "-".to_string(),
            (v, true) => HumanBytes(v).to_string(),
            (v, false) => v.to_string(),
        };
        println!(
            "{:<16} {:>7} {:>11} {:>11} {:>11} {:>9} {:>9} {:>9}  {}",
            if r.user.is_empty() { "?" } else { &r.user },
            r.uid,
            HumanBytes(r.bytes).to_string(),
            limit(r.limits.bytes_soft, true),
            limit(r.limits.bytes_hard, true),
            r.files,
            limit(r.limits.files_soft, false),
            limit(r.limits.files_hard, false),
            grace_left(r, now),
        );
    }
    Ok(())
}

/// What is left of the grace period for usage above a soft limit.
fn grace_left(r: &QuotaReport, now_ms: u64) -> String {
    let Some(since) = [r.files_over_since_ms, r.bytes_over_since_ms].into_iter().flatten().min() else {
        return "-".to_string();
    };
    let end = since.saturating_add(r.limits.grace() * 1000);
    if now_ms >= end {
        "over: adding refused".to_string()
    } else {
        let left = Duration::from_secs((end - now_ms) / 1000);
        format!("{} left", humantime::format_duration(left))
    }
}
