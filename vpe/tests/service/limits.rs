//! Acceptance 4: over the VM count or at a forbidden site, a clear error and
//! nothing started; another user cannot see, stop, save or read the console
//! of your VM, nor see, change or run your private image and templates.

use anyhow::{ensure, Result};
use fs_proto::vpe::{ImageInfo, Template, VmInfo, VmPhase};

use crate::bounded;
use crate::harness::{enabled, Setup, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_clearly_and_users_cannot_touch_each_others_vms() -> Result<()> {
    let Some(lock) = enabled("limits_refuse_clearly_and_users_cannot_touch_each_others_vms").await else {
        return Ok(());
    };
    bounded(600, async {
        let mut setup = Setup::new(2, 1);
        setup.manager = Box::new(|c| {
            let alice = c.users.get_mut("alice").expect("alice");
            alice.allowed_sites = Some(["site1".to_string()].into());
            alice.max_vms = 1;
        });
        let s = Stack::start(lock, setup).await?;
        s.register("alice", "deb", &[])?;

        // A site alice may not use: refused, nothing started anywhere.
        let e = s.vpe_err("alice", &["run", "--site", "site2", "--image", "deb", "--name", "far"])?;
        ensure!(e.contains("user alice may not run VMs at site site2 (allowed: site1)"), "{e}");
        s.assert_pops_empty()?;

        let vm = s.run("alice", &["--site", "site1", "--image", "deb", "--net", "lab", "--name", "web"])?;
        ensure!(vm.phase == VmPhase::Running);

        // Over her VM count: refused, nothing started.
        let e = s.vpe_err("alice", &["run", "--site", "site1", "--image", "deb", "--name", "more"])?;
        ensure!(e.contains("user alice already runs 1 VMs, the limit is 1"), "{e}");
        s.assert_gone("more.alice")?;
        let mine: Vec<VmInfo> = serde_json::from_str(&s.vpe_ok("alice", &["ls"])?)?;
        ensure!(mine.len() == 1, "{mine:?}");

        // Bob sees none of it and can do nothing to it, by either of its names.
        let his: Vec<VmInfo> = serde_json::from_str(&s.vpe_ok("bob", &["ls"])?)?;
        ensure!(his.is_empty(), "bob sees {his:?}");
        for name in ["web", "web.alice"] {
            for cmd in [&["show", name][..], &["stop", name], &["save", name, "--as", "stolen"], &["console", name]] {
                let e = s.vpe_err("bob", cmd)?;
                ensure!(e.contains(&format!("you have no VM named {name}")), "bob {cmd:?}: {e}");
            }
        }
        let still: VmInfo = serde_json::from_str(&s.vpe_ok("alice", &["show", "web"])?)?;
        ensure!(still.phase == VmPhase::Running, "{still:?}");
        ensure!(s.console("alice", "web")?.booted);

        // Alice's private image: bob cannot see, run, tag or remove it.
        let images: Vec<ImageInfo> = serde_json::from_str(&s.vpe_ok("bob", &["image", "ls"])?)?;
        ensure!(images.is_empty(), "bob sees {images:?}");
        let e = s.vpe_err("bob", &["run", "--site", "site1", "--image", "deb"])?;
        ensure!(e.contains("no image named deb"), "{e}");
        ensure!(s.vpe_err("bob", &["image", "rm", "deb"])?.contains("no image named deb"));
        // Shared, bob sees it but still cannot change it.
        s.vpe_ok("alice", &["image", "tag", "deb", "--shared"])?;
        let images: Vec<ImageInfo> = serde_json::from_str(&s.vpe_ok("bob", &["image", "ls"])?)?;
        ensure!(images.len() == 1 && images[0].owner == "alice", "{images:?}");
        let e = s.vpe_err("bob", &["image", "tag", "deb", "mine"])?;
        ensure!(e.contains("belongs to alice"), "{e}");

        // Templates: private ones are alice's alone; shared ones bob may use, not remove.
        s.vpe_ok("alice", &["template", "create", "secret", "--site", "site1", "--image", "deb"])?;
        s.vpe_ok("alice", &["template", "create", "common", "--site", "site1", "--image", "deb", "--shared"])?;
        let seen: Vec<Template> = serde_json::from_str(&s.vpe_ok("bob", &["template", "ls"])?)?;
        ensure!(seen.len() == 1 && seen[0].name == "common", "{seen:?}");
        ensure!(s.vpe_err("bob", &["run", "--template", "secret"])?.contains("no template named secret"));
        ensure!(s.vpe_err("bob", &["template", "rm", "common"])?.contains("belongs to alice"));

        s.vpe_ok("alice", &["stop", "web"])?;
        s.assert_pops_empty()
    })
    .await
}
