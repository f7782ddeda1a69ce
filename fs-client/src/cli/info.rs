//! `renkei where`, `df`, `hosts`, `whoami`.

use super::output::print_json;
use crate::Client;
use clap::Args;
use fs_proto::hash_hex;
use indicatif::HumanBytes;
use serde::Serialize;

/// `where` arguments.
#[derive(Args, Debug)]
pub struct WhereArgs {
    /// Files.
    #[arg(required = true)]
    paths: Vec<String>,
}

#[derive(Serialize)]
struct ReplicaView {
    host: String,
    site: String,
    generation: u64,
    size: u64,
    blake3: String,
    current: bool,
    alive: bool,
}

#[derive(Serialize)]
struct WhereView {
    path: String,
    generation: u64,
    replicas: Vec<ReplicaView>,
}

pub(crate) async fn where_(client: &Client, a: &WhereArgs, json: bool) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for p in &a.paths {
        let (attr, reps) = client.where_is(p).await?;
        out.push(WhereView {
            path: crate::path::normalize(p),
            generation: attr.gen,
            replicas: reps
                .into_iter()
                .map(|r| ReplicaView {
                    host: r.server.host,
                    site: r.server.site,
                    generation: r.gen,
                    size: r.size,
                    blake3: hash_hex(&r.hash),
                    current: r.gen == attr.gen,
                    alive: r.alive,
                })
                .collect(),
        });
    }
    if json {
        return print_json(&out);
    }
    for w in &out {
        if w.replicas.is_empty() {
            println!("{}: no replicas (empty file)", w.path);
        }
        for r in &w.replicas {
            println!(
                "{}: {} @ {}{}{}",
                w.path,
                r.host,
                r.site,
                if r.alive { "" } else { " (down)" },
                if r.current { "" } else { " (old generation)" }
            );
        }
    }
    Ok(())
}

pub(crate) async fn df(client: &Client, json: bool) -> anyhow::Result<()> {
    let s = client.df().await?;
    if json {
        return print_json(&serde_json::json!({
            "capacity": s.capacity, "free": s.free, "used": s.capacity.saturating_sub(s.free),
            "files": s.files, "live_servers": s.servers,
        }));
    }
    println!("{:>12} {:>12} {:>12} {:>10} {:>8}", "capacity", "used", "free", "files", "servers");
    println!(
        "{:>12} {:>12} {:>12} {:>10} {:>8}",
        HumanBytes(s.capacity).to_string(),
        HumanBytes(s.capacity.saturating_sub(s.free)).to_string(),
        HumanBytes(s.free).to_string(),
        s.files,
        s.servers
    );
    Ok(())
}

#[derive(Serialize)]
struct HostView {
    host: String,
    site: String,
    addr: String,
    alive: bool,
    capacity: u64,
    free: u64,
    load: f32,
    replicas: u64,
    last_heartbeat_ms: u64,
    problems: Vec<String>,
    bytes_in: u64,
    bytes_out: u64,
    draining: bool,
}

pub(crate) async fn hosts(client: &Client, json: bool) -> anyhow::Result<()> {
    print_hosts(client.hosts().await?, json)
}

/// The host table (`renkei hosts`, `renkei host drain`, ...).
pub(crate) fn print_hosts(hosts: Vec<fs_proto::HostInfo>, json: bool) -> anyhow::Result<()> {
    let v: Vec<HostView> = hosts
        .into_iter()
        .map(|h| HostView {
            host: h.host,
            site: h.site,
            addr: h.addr.to_string(),
            alive: h.alive,
            capacity: h.capacity,
            free: h.free,
            load: h.load,
            replicas: h.replicas,
            last_heartbeat_ms: h.last_heartbeat_ms,
            problems: h.problems,
            bytes_in: h.bytes_in,
            bytes_out: h.bytes_out,
            draining: h.draining,
        })
        .collect();
    if json {
        return print_json(&v);
    }
    println!(
        "{:<12} {:<10} {:<22} {:<5} {:>10} {:>10} {:>5} {:>8}  problems",
        "host", "site", "address", "up", "capacity", "free", "load", "replicas"
    );
    for h in &v {
        println!(
            "{:<12} {:<10} {:<22} {:<5} {:>10} {:>10} {:>5.2} {:>8}  {}",
            h.host,
            h.site,
            h.addr,
            match (h.alive, h.draining) {
                (true, false) => "yes",
                (false, false) => "DOWN",
                (true, true) => "drain",
                (false, true) => "DOWN",
            },
            HumanBytes(h.capacity).to_string(),
            HumanBytes(h.free).to_string(),
            h.load,
            h.replicas,
            h.problems.join("; ")
        );
    }
    Ok(())
}

pub(crate) async fn whoami(client: &Client, json: bool) -> anyhow::Result<()> {
    let w = client.meta().whoami().await?;
    if json {
        return print_json(
            &serde_json::json!({"name": w.name, "uid": w.uid, "gid": w.gid, "groups": w.groups, "admin": w.admin, "site": client.config().site}),
        );
    }
    println!(
        "{} (uid {}, gid {}{}) at site {}",
        w.name,
        w.uid,
        w.gid,
        if w.admin { ", admin" } else { "" },
        client.config().site
    );
    Ok(())
}
