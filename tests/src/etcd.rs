//! A real etcd cluster for the tests: three members on loopback ports, in a
//! temporary directory, started once per test process (Debian's
//! `etcd-server` provides `etcd`).
//!
//! `RENKEI_TEST_STORE=etcd` runs the meta servers of [`crate::cluster`] and
//! [`crate::procs`] on it, each federation under its own key prefix.
//! Without that variable only the tests that are about etcd use it.

use fs_meta::store::{StoreConfig, StoreKind};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Largest transaction the test cluster takes (its `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 16_384;
/// Largest request the test cluster takes (its `--max-request-bytes`).
pub const MAX_REQUEST_BYTES: usize = 32 << 20;
/// How long a member may take to report healthy.
const HEALTH_BOUND: Duration = Duration::from_secs(30);

/// One etcd member.
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
}

/// The test process's etcd cluster.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Mutex<Vec<Member>>,
}

/// Whether the meta servers of this run use etcd (`RENKEI_TEST_STORE=etcd`).
pub fn store_is_etcd() -> bool {
    match std::env::var("RENKEI_TEST_STORE").as_deref() {
        Ok("etcd") => true,
        Ok("sled") | Ok("") | Err(_) => false,
        Ok(other) => panic!("RENKEI_TEST_STORE={other}: expected sled or etcd"),
    }
}

/// The store a test meta server should use: etcd under a fresh prefix
/// with `RENKEI_TEST_STORE=etcd` (starting the cluster on first use),
/// else None (sled).
pub fn test_store() -> Option<StoreConfig> {
    store_is_etcd().then(|| cluster().store_config())
}

/// `etcd` from the PATH, if installed.
pub fn etcd_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

/// Whether an etcd test can run here: etcd is installed; without it the
/// test skips, unless `RENKEI_TEST_STRICT=1` where it fails.
pub fn available(test: &str) -> bool {
    if etcd_binary().is_some() {
        return true;
    }
    assert!(!crate::strict(), "{test}: etcd is not installed (Debian package etcd-server) and RENKEI_TEST_STRICT=1");
    eprintln!("{test}: skipped, etcd is not installed (Debian package etcd-server)");
    false
}

/// The test process's cluster, started on first use (panics if etcd is
/// missing or does not become healthy: the caller asked for it).
pub fn cluster() -> &'static EtcdCluster {
    CLUSTER.get_or_init(|| {
        let c = EtcdCluster::start().unwrap_or_else(|e| panic!("etcd test cluster: {e}"));
        // A static is never dropped: stop the members and remove their
        // data (each member preallocates 64 MB of log) when the test
        // process exits.
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(stop_shared_cluster) };
        c
    })
}

static CLUSTER: OnceLock<EtcdCluster> = OnceLock::new();

extern "C" fn stop_shared_cluster() {
    if let Some(c) = CLUSTER.get() {
        c.stop();
        let _ = std::fs::remove_dir_all(c.dir.path());
    }
}

fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

impl EtcdCluster {
    /// A cluster of its own (stopped and removed on drop), for tests that
    /// kill members; others share [`cluster`].
    pub fn start() -> Result<EtcdCluster, String> {
        let etcd = etcd_binary().ok_or("etcd is not installed (Debian package etcd-server)")?;
        let dir = tempfile::Builder::new().prefix("renkei-etcd-").tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let mut members = Vec::new();
        for i in 1..=3 {
            let (client, peer) = (free_port(), free_port());
            let (client, peer) = (client.map_err(|e| e.to_string())?, peer.map_err(|e| e.to_string())?);
            members.push(Member { name: format!("m{i}"), client, peer, child: None });
        }
        let cluster = EtcdCluster { dir, members: Mutex::new(members) };
        {
            let mut members = cluster.members.lock().unwrap_or_else(|p| p.into_inner());
            let initial: Vec<String> = members.iter().map(|m| format!("{}=http://{}", m.name, m.peer)).collect();
            let initial = initial.join(",");
            for m in members.iter_mut() {
                m.child = Some(spawn(&etcd, cluster.dir.path(), m, &initial, "new")?);
            }
            for m in members.iter() {
                wait_healthy(m.client, HEALTH_BOUND)?;
            }
        }
        Ok(cluster)
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        members.iter().map(|m| format!("http://{}", m.client)).collect()
    }

    /// A store configuration under a prefix no other test uses.
    pub fn store_config(&self) -> StoreConfig {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        StoreConfig {
            kind: StoreKind::Etcd,
            endpoints: self.endpoints(),
            prefix: format!("renkei-test/{}-{n}/", std::process::id()),
            max_txn_ops: MAX_TXN_OPS,
            max_txn_bytes: MAX_REQUEST_BYTES - (1 << 20),
            ..Default::default()
        }
    }

    /// The same, as the `[store]` table of a TOML configuration.
    pub fn store_toml(&self) -> String {
        let c = self.store_config();
        format!(
            "\n[store]\nkind = \"etcd\"\nendpoints = {:?}\nprefix = {:?}\nmax_txn_ops = {}\nmax_txn_bytes = {}\n",
            c.endpoints, c.prefix, c.max_txn_ops, c.max_txn_bytes
        )
    }

    /// Kill member `i` (0..3) with SIGKILL.
    pub fn kill(&self, i: usize) {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut c) = members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again on its data and wait until it is healthy.
    pub fn restart(&self, i: usize) {
        let etcd = etcd_binary().expect("etcd");
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let initial: Vec<String> = members.iter().map(|m| format!("{}=http://{}", m.name, m.peer)).collect();
        let initial = initial.join(",");
        let m = &mut members[i];
        assert!(m.child.is_none(), "member {i} is running");
        m.child = Some(spawn(&etcd, self.dir.path(), m, &initial, "existing").expect("restart etcd member"));
        wait_healthy(m.client, HEALTH_BOUND).expect("restarted etcd member healthy");
    }
}

impl EtcdCluster {
    /// Kill every member.
    fn stop(&self) {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        for m in members.iter_mut() {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(etcd: &Path, dir: &Path, m: &Member, initial: &str, state: &str) -> Result<Child, String> {
    let log = std::fs::File::create(dir.join(format!("{}.log", m.name))).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(etcd);
    cmd.arg("--name")
        .arg(&m.name)
        .arg("--data-dir")
        .arg(dir.join(&m.name))
        .arg("--listen-client-urls")
        .arg(format!("http://{}", m.client))
        .arg("--advertise-client-urls")
        .arg(format!("http://{}", m.client))
        .arg("--listen-peer-urls")
        .arg(format!("http://{}", m.peer))
        .arg("--initial-advertise-peer-urls")
        .arg(format!("http://{}", m.peer))
        .arg("--initial-cluster")
        .arg(initial)
        .arg("--initial-cluster-state")
        .arg(state)
        .arg("--initial-cluster-token")
        .arg(dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        .arg("--max-txn-ops")
        .arg(MAX_TXN_OPS.to_string())
        .arg("--max-request-bytes")
        .arg(MAX_REQUEST_BYTES.to_string())
        .arg("--auto-compaction-mode")
        .arg("revision")
        .arg("--auto-compaction-retention")
        .arg("10000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // The members die with the test process: they are started by a thread
    // that lives as long as it (PR_SET_PDEATHSIG fires when the thread that
    // forked a child ends).
    let (tx, rx) = std::sync::mpsc::channel();
    let spawner = spawner();
    spawner.lock().unwrap_or_else(|p| p.into_inner()).send((cmd, tx)).map_err(|_| "etcd spawner gone".to_string())?;
    rx.recv().map_err(|_| "etcd spawner gone".to_string())?.map_err(|e| format!("spawn {}: {e}", etcd.display()))
}

type SpawnRequest = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// The thread that forks the members (see [`spawn`]).
fn spawner() -> &'static Mutex<std::sync::mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                use std::os::unix::process::CommandExt;
                // SAFETY: prctl is async-signal-safe; nothing else runs
                // between fork and exec.
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                let _ = reply.send(cmd.spawn());
            }
            // The sender lives in a static: this thread never gets here
            // and lives as long as the test process.
        });
        Mutex::new(tx)
    })
}

/// Wait until the member answering at `client` reports healthy, at most
/// `bound` (its health endpoint is polled: etcd has no event to wait on).
pub fn wait_healthy(client: SocketAddr, bound: Duration) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    let mut last = String::new();
    while Instant::now() < deadline {
        match health(client) {
            Ok(true) => return Ok(()),
            Ok(false) => last = "unhealthy".into(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("etcd at {client} not healthy within {bound:?}: {last}"))
}

fn health(client: SocketAddr) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&client, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET /health HTTP/1.0\r\nHost: {client}\r\n\r\n").as_bytes())?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body.contains("\"health\":\"true\""))
}
