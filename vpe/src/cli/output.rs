//! How the `vpe` command prints things (text, or JSON with `--json`).

use std::time::Duration;

use fs_proto::vpe::{ImageInfo, PopInfo, Template, Timings, UserInfo, VmInfo};
use serde::Serialize;

pub(super) fn json(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// One line with every timing of a boot.
pub(super) fn timings_line(t: &Timings) -> String {
    format!(
        "prepare {} (fetch {}, {} bytes), boot {}, guest's own boot {}, run to booted {}",
        secs(t.prepare),
        secs(t.fetch),
        t.fetched_bytes,
        secs(t.boot),
        t.guest_boot.map(secs).unwrap_or_else(|| "?".into()),
        secs(t.run_to_booted)
    )
}

pub(super) fn vm(v: &VmInfo, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(v);
    }
    println!("VM        {} ({} on its PoP)", v.name, v.pop_name);
    println!("owner     {}", v.owner);
    println!("state     {}", v.phase);
    println!("site      {}", v.site);
    println!("PoP       {}", v.pop);
    println!("image     {} (id {})", v.image, &v.image_id[..v.image_id.len().min(16)]);
    println!("size      {} CPU(s), {} MiB", v.cpus, v.memory_mib);
    if let Some(a) = &v.accel {
        println!("accel     {a}");
    }
    for (i, n) in v.nics.iter().enumerate() {
        println!("nic {i}     {} {}", n.segment, n.address);
    }
    if let Some(t) = &v.timings {
        println!("timings   {}", timings_line(t));
    }
    Ok(())
}

pub(super) fn vms(list: &[VmInfo], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&list);
    }
    println!("{:<16} {:<9} {:<10} {:<10} {:<14} ADDRESSES", "NAME", "STATE", "SITE", "POP", "IMAGE");
    for v in list {
        let addrs: Vec<String> = v.nics.iter().map(|n| format!("{}={}", n.segment, n.address)).collect();
        println!(
            "{:<16} {:<9} {:<10} {:<10} {:<14} {}",
            v.name,
            v.phase.to_string(),
            v.site,
            v.pop,
            v.image,
            addrs.join(" ")
        );
    }
    Ok(())
}

pub(super) fn image(i: &ImageInfo, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(i);
    }
    println!("image     {} ({})", i.name, i.path);
    println!("owner     {}{}", i.owner, if i.shared { ", shared" } else { ", private" });
    for (tag, gen) in &i.tags {
        println!("tag       {tag} -> {gen}");
    }
    for g in &i.generations {
        println!("gen {:<5} {}  {:>11} bytes  {}", g.gen, &g.id[..g.id.len().min(16)], g.size, g.origin);
    }
    Ok(())
}

pub(super) fn images(list: &[ImageInfo], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&list);
    }
    println!("{:<20} {:<12} {:<8} {:<6} TAGS", "NAME", "OWNER", "SHARED", "GENS");
    for i in list {
        let gens: Vec<String> = i.generations.iter().map(|g| g.gen.to_string()).collect();
        let tags: Vec<String> = i.tags.iter().map(|(t, g)| format!("{t}={g}")).collect();
        println!(
            "{:<20} {:<12} {:<8} {:<6} {}",
            i.name,
            i.owner,
            if i.shared { "yes" } else { "no" },
            gens.join(","),
            tags.join(" ")
        );
    }
    Ok(())
}

pub(super) fn templates(list: &[Template], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&list);
    }
    println!(
        "{:<16} {:<10} {:<7} {:<8} {:<14} {:<5} {:<6} NETS",
        "NAME", "OWNER", "SHARED", "SITE", "IMAGE", "CPUS", "MEM"
    );
    for t in list {
        println!(
            "{:<16} {:<10} {:<7} {:<8} {:<14} {:<5} {:<6} {}",
            t.name,
            t.owner,
            if t.shared { "yes" } else { "no" },
            t.site.as_deref().unwrap_or("-"),
            t.image.as_deref().unwrap_or("-"),
            t.cpus.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            t.memory_mib.map(|m| format!("{m}M")).unwrap_or_else(|| "-".into()),
            t.nets.join(",")
        );
    }
    Ok(())
}

pub(super) fn pops(list: &[PopInfo], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&list);
    }
    println!(
        "{:<12} {:<10} {:<6} {:<8} {:<6} {:<7} {:<14} PROBLEMS",
        "POP", "SITE", "ALIVE", "VMS", "ACCEL", "CACHED", "FETCHED"
    );
    for p in list {
        println!(
            "{:<12} {:<10} {:<6} {:<8} {:<6} {:<7} {:<14} {}",
            p.name,
            p.site,
            if p.alive { "yes" } else { "no" },
            format!("{}/{}", p.vms, p.max_vms),
            p.accel.as_deref().unwrap_or("-"),
            p.cached_images,
            p.image_bytes_fetched,
            p.problems.join("; ")
        );
    }
    Ok(())
}

pub(super) fn whoami(u: &UserInfo, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(u);
    }
    println!("user      {}", u.name);
    let sites = u.allowed_sites.as_ref().map(|s| s.join(", ")).unwrap_or_else(|| "all".into());
    println!("sites     {sites}");
    println!("VMs       {} running, at most {}", u.running, u.max_vms);
    for (seg, addrs) in &u.addresses {
        println!("segment   {seg}: {}", addrs.join(", "));
    }
    println!("ssh keys  {}", u.ssh_keys.len());
    Ok(())
}
