//! Acceptance 1-3: register, run (two segments, key, static addresses),
//! timings, a cached second run (no image bytes), save and boot the saved
//! generation, stop leaving nothing; templates and image generations.

use anyhow::{ensure, Context, Result};
use fs_proto::vpe::{ImageInfo, PopInfo, Template, VmInfo, VmPhase};
use std::time::Duration;

use crate::bounded;
use crate::harness::{enabled, Setup, Stack, ALICE_KEY};

fn fetched_by(pops: &[PopInfo], pop: &str) -> Result<u64> {
    Ok(pops.iter().find(|p| p.name == pop).context("PoP not listed")?.image_bytes_fetched)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_run_save_and_stop_leave_nothing() -> Result<()> {
    let Some(lock) = enabled("register_run_save_and_stop_leave_nothing").await else { return Ok(()) };
    bounded(900, async {
        let s = Stack::start(lock, Setup::new(1, 1)).await?;
        let size = s.image_bytes()?;

        // Register: generation 1, owned by alice, private, tagged.
        let image = s.register("alice", "deb", &["--tag", "stable"])?;
        ensure!(image.owner == "alice" && !image.shared, "{image:?}");
        ensure!(image.generations.len() == 1 && image.generations[0].size == size, "{image:?}");
        ensure!(image.tags == [("stable".to_string(), 1)], "{image:?}");

        // 1. Two segments: the guest has two NICs with alice's static addresses and her key.
        let args = ["--site", "site1", "--image", "deb:stable", "--net", "lab", "--net", "data", "--name", "web"];
        let vm = s.run("alice", &[&args[..], &["--write", "from-web=written-by-web"]].concat())?;
        ensure!(vm.phase == VmPhase::Running && vm.site == "site1" && vm.pop == "pop1", "{vm:?}");
        let c = s.console("alice", "web")?;
        ensure!(c.booted, "no boot marker on the console");
        ensure!(c.ssh_keys == [ALICE_KEY], "keys on the console: {:?}", c.ssh_keys);
        ensure!(c.nic_count == Some(2), "NIC count: {:?}", c.nic_count);
        let nics: Vec<(&str, &str)> = c.nics.iter().map(|n| (n.addr.as_str(), n.segment.as_str())).collect();
        ensure!(nics == [("10.71.0.11/24", "lab"), ("10.72.0.11/16", "data")], "NICs: {:?}", c.nics);
        ensure!(c.hostname.as_deref() == Some("web"));

        // `vpe show` reports the timings.
        let shown: VmInfo = serde_json::from_str(&s.vpe_ok("alice", &["show", "web"])?)?;
        let t = shown.timings.context("vpe show reports no timings")?;
        ensure!(t.fetched_bytes == size, "first run fetched {} of {size} bytes", t.fetched_bytes);
        ensure!(t.prepare > Duration::ZERO && t.fetch > Duration::ZERO && t.fetch <= t.prepare, "{t:?}");
        ensure!(t.boot > Duration::ZERO && t.guest_boot.is_some_and(|g| g > Duration::ZERO), "{t:?}");
        ensure!(t.run_to_booted >= t.prepare + t.boot, "{t:?}");
        ensure!(shown.accel.is_some() && shown.nics == vm.nics, "{shown:?}");

        // 2. A second run of the same image on the same PoP (through a template) moves no image bytes.
        let fetched_before = fetched_by(&s.pop_infos()?, "pop1")?;
        ensure!(fetched_before == size, "PoP reports {fetched_before} bytes fetched");
        let tpl = ["template", "create", "small", "--site", "site1", "--image", "deb:stable", "--net", "lab"];
        s.vpe_ok("alice", &[&tpl[..], &["--mem", "192M"]].concat())?;
        let templates: Vec<Template> = serde_json::from_str(&s.vpe_ok("alice", &["template", "ls"])?)?;
        ensure!(templates.len() == 1 && templates[0].memory_mib == Some(192), "{templates:?}");
        let cached = s.run("alice", &["--template", "small", "--name", "cached"])?;
        let t2 = cached.timings.context("no timings")?;
        ensure!(cached.pop == vm.pop, "the second run went to {}", cached.pop);
        ensure!(t2.fetched_bytes == 0 && t2.fetch == Duration::ZERO, "cached run fetched: {t2:?}");
        ensure!(t2.prepare > Duration::ZERO, "no prepare time reported: {t2:?}");
        ensure!(cached.memory_mib == 192 && cached.nics.len() == 1, "template not applied: {cached:?}");
        ensure!(cached.nics[0].address == "10.71.0.12/24", "second lab address expected: {:?}", cached.nics);
        ensure!(fetched_by(&s.pop_infos()?, "pop1")? == fetched_before, "the PoP fetched image bytes again");
        let c2 = s.console("alice", "cached")?;
        ensure!(c2.booted && c2.nics.len() == 1 && c2.nics[0].addr == "10.71.0.12/24", "{c2:?}");
        eprintln!("uncached: {t:?}\ncached:   {t2:?}");

        // 3. Save the first VM's disk as a new image; stop both; nothing is left.
        let saved: ImageInfo = serde_json::from_str(&s.vpe_ok("alice", &["save", "web", "--as", "web-disk"])?)?;
        ensure!(saved.owner == "alice" && saved.generations.len() == 1, "{saved:?}");
        ensure!(saved.generations[0].origin.contains("saved from VM web"), "{saved:?}");
        for vm in ["web", "cached"] {
            s.vpe_ok("alice", &["stop", vm])?;
            s.assert_gone(&format!("{vm}.alice"))?;
        }
        s.assert_pops_empty()?;
        let left: Vec<VmInfo> = serde_json::from_str(&s.vpe_ok("alice", &["ls"])?)?;
        ensure!(left.is_empty(), "{left:?}");

        // The saved generation boots and shows the file the first VM wrote.
        let reborn = s.run("alice", &["--site", "site1", "--image", "web-disk:1", "--name", "reborn"])?;
        let c3 = s.console("alice", "reborn")?;
        ensure!(
            c3.marks.iter().any(|(n, v)| n == "from-web" && v == "written-by-web"),
            "marks on the saved disk: {:?}",
            c3.marks
        );
        ensure!(reborn.timings.is_some_and(|t| t.fetched_bytes > 0), "the saved image is new to the PoP");
        s.vpe_ok("alice", &["stop", "reborn"])?;
        s.assert_pops_empty()?;

        // Generations are kept until removed; tags move; a removed generation is gone.
        let again = s.register("alice", "deb", &[])?;
        ensure!(again.generations.iter().map(|g| g.gen).collect::<Vec<_>>() == [1, 2], "{again:?}");
        let tagged: ImageInfo = serde_json::from_str(&s.vpe_ok("alice", &["image", "tag", "deb:2", "stable"])?)?;
        ensure!(tagged.tags == [("stable".to_string(), 2)], "{tagged:?}");
        s.vpe_ok("alice", &["image", "rm", "deb:1"])?;
        let shown: ImageInfo = serde_json::from_str(&s.vpe_ok("alice", &["image", "show", "deb"])?)?;
        ensure!(shown.generations.len() == 1 && shown.generations[0].gen == 2, "{shown:?}");
        let e = s.vpe_err("alice", &["run", "--site", "site1", "--image", "deb:1"])?;
        ensure!(e.contains("has no generation 1"), "{e}");
        s.vpe_ok("alice", &["template", "rm", "small"])?;
        s.assert_pops_empty()
    })
    .await
}
