//! `vpe bench`: boots the same image uncached and cached on one PoP, in one
//! run, and reports the prepare and fetch times, the whole run-to-booted
//! time, and the guest's own boot time beside it (so the overhead vpe adds
//! is the difference).
//!
//! Each round registers a fresh variant of the image (its command line
//! carries a nonce, so its content id is new and no PoP has it cached),
//! boots it (uncached), stops it, boots it again on the same PoP (cached),
//! stops it, and removes the variant.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use fs_proto::vpe::{RunRequest, Timings};
use serde::Serialize;

use super::output;
use crate::client::VpeClient;
use crate::store::transfer::LocalImage;

/// `vpe bench` arguments.
#[derive(Args, Debug)]
pub(super) struct BenchArgs {
    /// Site to boot at.
    #[arg(long)]
    site: String,
    /// A local image directory (e.g. built by scripts/vm-image/build.sh).
    #[arg(long)]
    image_dir: PathBuf,
    /// PoP to use [default: where the first boot lands].
    #[arg(long)]
    pop: Option<String>,
    /// Rounds (each: one uncached and one cached boot).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Segments to attach (your static addresses on them).
    #[arg(long = "net")]
    nets: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Sample {
    round: u32,
    cached: bool,
    pop: String,
    timings: Timings,
    /// Wall time of the `run` call as the client saw it.
    client_wall: Duration,
    /// run_to_booted minus the guest's own boot time.
    overhead: Option<Duration>,
}

#[derive(Debug, Serialize)]
struct Report {
    site: String,
    image_bytes: u64,
    samples: Vec<Sample>,
    median_uncached: Summary,
    median_cached: Summary,
}

#[derive(Debug, Serialize)]
struct Summary {
    prepare: Duration,
    fetch: Duration,
    fetched_bytes: u64,
    run_to_booted: Duration,
    guest_boot: Duration,
    overhead: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn summary(samples: &[&Sample]) -> Summary {
    let pick = |f: &dyn Fn(&Sample) -> Duration| median(samples.iter().map(|s| f(s)).collect());
    Summary {
        prepare: pick(&|s| s.timings.prepare),
        fetch: pick(&|s| s.timings.fetch),
        fetched_bytes: samples.iter().map(|s| s.timings.fetched_bytes).max().unwrap_or(0),
        run_to_booted: pick(&|s| s.timings.run_to_booted),
        guest_boot: pick(&|s| s.timings.guest_boot.unwrap_or_default()),
        overhead: pick(&|s| s.overhead.unwrap_or_default()),
    }
}

async fn boot(
    client: &VpeClient,
    args: &BenchArgs,
    image: &str,
    name: &str,
    pop: Option<String>,
) -> anyhow::Result<(String, Timings, Duration)> {
    let req = RunRequest {
        site: Some(args.site.clone()),
        image: Some(image.to_string()),
        nets: args.nets.clone(),
        name: Some(name.to_string()),
        pop,
        ..RunRequest::default()
    };
    let start = Instant::now();
    let vm = client.run(req).await?;
    let wall = start.elapsed();
    client.stop(name).await?;
    let t = vm.timings.ok_or_else(|| anyhow::anyhow!("{name} reported no timings"))?;
    Ok((vm.pop, t, wall))
}

/// Waits (bounded) until every live PoP of the site decided KVM or TCG, so
/// no boot measured here waits behind an agent's one-time probe.
async fn wait_for_accel(client: &VpeClient, site: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let pops = client.pops().await?;
        let at_site: Vec<_> = pops.iter().filter(|p| p.site == site && p.alive).collect();
        if !at_site.is_empty() && at_site.iter().all(|p| p.accel.is_some()) {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "PoPs of {site} did not decide KVM or TCG in 60 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(super) async fn run(client: &VpeClient, args: BenchArgs, json: bool) -> anyhow::Result<()> {
    let base = LocalImage::from_dir(&args.image_dir)?;
    wait_for_accel(client, &args.site).await?;
    let nonce = blake3::hash(format!("{:?}", std::time::SystemTime::now()).as_bytes()).to_hex()[..8].to_string();
    let mut samples = Vec::new();
    let mut pop = args.pop.clone();
    for round in 1..=args.rounds {
        let name = format!("bench-{nonce}-{round}");
        let mut image = base.clone();
        image.manifest.cmdline = format!("{} renkei.bench={name}", image.manifest.cmdline);
        client.register_image(&name, &image, false, None).await?;
        let result = async {
            for cached in [false, true] {
                let vm = format!("{name}-{}", if cached { "c" } else { "u" });
                let (at, timings, client_wall) = boot(client, &args, &name, &vm, pop.clone()).await?;
                pop.get_or_insert(at.clone());
                let overhead = timings.guest_boot.map(|g| timings.run_to_booted.saturating_sub(g));
                if !json {
                    eprintln!(
                        "round {round} {}: {}",
                        if cached { "cached  " } else { "uncached" },
                        output::timings_line(&timings)
                    );
                }
                samples.push(Sample { round, cached, pop: at, timings, client_wall, overhead });
            }
            anyhow::Ok(())
        }
        .await;
        client.remove_image(&name).await?;
        result?;
    }
    let uncached: Vec<&Sample> = samples.iter().filter(|s| !s.cached).collect();
    let cached: Vec<&Sample> = samples.iter().filter(|s| s.cached).collect();
    let report = Report {
        site: args.site.clone(),
        image_bytes: base.manifest.total_size(),
        median_uncached: summary(&uncached),
        median_cached: summary(&cached),
        samples,
    };
    if json {
        return output::json(&report);
    }
    let s = |d: Duration| format!("{:.3}", d.as_secs_f64());
    println!(
        "\nvpe bench: site {}, PoP {}, image {} bytes, {} round(s), medians (seconds)",
        report.site,
        pop.unwrap_or_default(),
        report.image_bytes,
        args.rounds
    );
    println!(
        "{:<10} {:>8} {:>8} {:>12} {:>14} {:>11} {:>10}",
        "", "prepare", "fetch", "bytes", "run->booted", "guest boot", "overhead"
    );
    for (label, m) in [("uncached", &report.median_uncached), ("cached", &report.median_cached)] {
        println!(
            "{:<10} {:>8} {:>8} {:>12} {:>14} {:>11} {:>10}",
            label,
            s(m.prepare),
            s(m.fetch),
            m.fetched_bytes,
            s(m.run_to_booted),
            s(m.guest_boot),
            s(m.overhead)
        );
    }
    println!("(overhead = run to booted - the guest's own boot; design targets for a cached image: prepare <= 1 s, overhead <= 2 s)");
    Ok(())
}
