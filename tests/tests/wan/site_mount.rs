//! A FUSE mount served by this test process whose QUIC socket lives in an
//! emulated site (so its requests cross the emulated WAN), with its
//! per-kind request counters.

use bench::wan::Wan;
use bench::wanfed::WanFederation;
use fs_client::mount::{self, MountOptions};
use fs_proto::endpoint::{client_endpoint_on, TlsIdentity};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A mount served by this process whose socket lives in a site.
pub struct SiteMount {
    /// The mount point.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    /// Requests sent by this mount, per kind.
    pub counters: Arc<fs_client::counters::Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SiteMount {
    /// Mount `remote` as `user` at `site` with `-o opts`.
    pub async fn new(fed: &WanFederation, wan: &Wan, site: &str, user: &str, remote: &str, opts: &str) -> SiteMount {
        let (cfg, _) = fed.client_config(site, user).expect("client config");
        let tls = TlsIdentity::load(&cfg.tls).expect("tls");
        let s = wan.site(site).expect("site");
        let ip = s.addr();
        let socket = s.run_in(move || std::net::UdpSocket::bind((ip, 0))).expect("socket in the site");
        let ep = client_endpoint_on(socket, &tls, &cfg.transport).expect("endpoint");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mount point");
        let mut o = MountOptions::new(remote.to_string(), path.clone());
        o.apply(opts).expect("mount options");
        o.spill_dir = dir.path().to_path_buf();
        let mounted = mount::mount_on(cfg, o, ep).await.expect("mount");
        let counters = mounted.counters();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            if let Err(e) = mounted
                .serve(async {
                    let _ = rx.await;
                })
                .await
            {
                eprintln!("mount ended: {e}");
            }
        });
        SiteMount { path, _dir: dir, counters, stop: Some(tx), task: Some(task) }
    }

    /// Unmount and wait for the session to end.
    pub async fn unmount(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let ended = tokio::time::timeout(Duration::from_secs(30), t).await;
            if ended.is_err() {
                let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.path).output();
            }
            assert!(ended.is_ok(), "the mount did not end within 30 s of unmounting");
        }
    }
}

impl Drop for SiteMount {
    fn drop(&mut self) {
        if self.task.is_some() {
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.path).output();
        }
    }
}

/// Whether FUSE tests run here (`RENKEI_TEST_FUSE=1`, /dev/fuse).
pub fn fuse_enabled() -> bool {
    let strict = tests::strict();
    let why = if std::env::var("RENKEI_TEST_FUSE").as_deref() != Ok("1") {
        Some("RENKEI_TEST_FUSE is not set")
    } else if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if strict => panic!("FUSE tests cannot run: {why} (RENKEI_TEST_STRICT=1)"),
        Some(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
}
