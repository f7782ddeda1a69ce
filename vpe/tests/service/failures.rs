//! Acceptance 6: a corrupted image replica is never booted; a PoP whose
//! libvirtd is missing, and a domain libvirt cannot start, give clear
//! errors; nothing is left behind in any case.

use std::io::{Seek, SeekFrom, Write};

use anyhow::{ensure, Context, Result};
use fs_client::{Client, ClientConfig};
use fs_proto::identity::{CaDir, Role};
use fs_proto::vpe::VmInfo;
use vpe::SegmentBacking;

use crate::bounded;
use crate::harness::{enabled, Setup, Stack};

/// Flips a byte inside every replica of `path` on the file servers' spools.
async fn corrupt_replicas(s: &Stack, path: &str) -> Result<()> {
    // A PoP's host certificate sees the whole namespace (images are root's).
    let mut cfg = ClientConfig::load(&s.client_config("alice"))?;
    let files = CaDir::new(s.fed().join("ca")).issued_paths(Role::Host, &s.pops()[0]);
    cfg.tls.cert = files.cert;
    cfg.tls.key = files.key;
    let (attr, replicas) = Client::connect(cfg).await?.where_is(path).await?;
    ensure!(!replicas.is_empty(), "{path} has no replica");
    for r in replicas {
        let replica = s
            .fed()
            .join("spool")
            .join(&r.server.host)
            .join("data")
            .join(format!("{:02x}", attr.ino & 0xff))
            .join(format!("{:016x}.{:016x}", attr.ino, r.gen));
        let mut f =
            std::fs::OpenOptions::new().write(true).open(&replica).with_context(|| replica.display().to_string())?;
        f.seek(SeekFrom::Start(5 << 20))?;
        f.write_all(b"\xffcorrupted\xff")?;
        f.sync_all()?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_clear_errors_and_leave_nothing_behind() -> Result<()> {
    let Some(lock) = enabled("failures_are_clear_errors_and_leave_nothing_behind").await else { return Ok(()) };
    bounded(600, async {
        let mut setup = Setup::new(2, 1);
        setup.manager = Box::new(|c| {
            let alice = c.users.get_mut("alice").expect("alice");
            alice.addresses.insert("broken".into(), vec!["10.79.0.11/24".into()]);
        });
        setup.agent = Box::new(|pop, c| match pop {
            // site1's PoP: libvirtd is not there.
            "pop1" => c.host.libvirt_uri = "qemu:///system?socket=/nonexistent/libvirt-sock".into(),
            // site2's PoP: segment "broken" is a bridge that does not exist.
            _ => {
                c.host.segments.insert("broken".into(), SegmentBacking::Bridge { bridge: "rk-missing0".into() });
            }
        });
        let s = Stack::start(lock, setup).await?;
        s.register("alice", "deb", &[])?;
        s.register("alice", "good", &[])?;

        // Missing libvirtd: the PoP says so, and a run there says so.
        let pops = s.pop_infos()?;
        let pop1 = pops.iter().find(|p| p.name == "pop1").context("pop1")?;
        ensure!(pop1.problems.iter().any(|p| p.contains("is libvirtd running?")), "{pop1:?}");
        let e = s.vpe_err("alice", &["run", "--site", "site1", "--image", "good", "--name", "nolibvirt"])?;
        eprintln!("missing libvirtd: {e}");
        ensure!(e.contains("cannot connect to libvirt") && e.contains("is libvirtd running?"), "{e}");

        // A corrupt replica of the disk: refused by its file server, never booted.
        corrupt_replicas(&s, "/vpe/images/deb/1/disk").await?;
        let e = s.vpe_err("alice", &["run", "--site", "site2", "--image", "deb", "--name", "corrupt"])?;
        eprintln!("corrupt replica: {e}");
        ensure!(e.contains("corrupt"), "{e}");
        s.assert_gone("corrupt.alice")?;
        ensure!(
            std::fs::read_dir(s.pop_state("pop2").join("cache"))?.count() == 0,
            "a corrupt image entered the cache"
        );

        // A domain libvirt cannot start (its NIC's bridge is missing): libvirt's reason, nothing left.
        let args =
            ["run", "--site", "site2", "--image", "good", "--net", "lab", "--net", "broken", "--name", "nobridge"];
        let e = s.vpe_err("alice", &args)?;
        eprintln!("broken domain: {e}");
        ensure!(e.contains("rk-missing0"), "the error does not name the missing bridge: {e}");
        s.assert_gone("nobridge.alice")?;

        // Absurd sizes never reach a PoP.
        let e = s.vpe_err("alice", &["run", "--site", "site2", "--image", "good", "--cpus", "100000"])?;
        ensure!(e.contains("a VM may have 1-8 CPUs"), "{e}");

        let vms: Vec<VmInfo> = serde_json::from_str(&s.vpe_ok("alice", &["ls"])?)?;
        ensure!(vms.is_empty(), "failed runs left registry entries: {vms:?}");
        s.assert_pops_empty()
    })
    .await
}
