//! A real etcd cluster on loopback: three members on free ports, in a
//! temporary directory, tied to this process (each member gets SIGKILL when
//! it exits). Debian's `etcd-server` provides `etcd`. The tests' etcd
//! tier and `renkei-bench meta` start theirs here; a meta server is put on
//! it with [`EtcdCluster::store_toml`] (its `[store]` table).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Largest transaction the cluster takes (its `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 16_384;
/// Largest request the cluster takes (its `--max-request-bytes`).
pub const MAX_REQUEST_BYTES: usize = 32 << 20;
/// The meta server's `max_txn_bytes` on it: a request's limit less room
/// for the request's own framing.
pub const MAX_TXN_BYTES: usize = MAX_REQUEST_BYTES - (1 << 20);
/// How long a member may take to report healthy.
const HEALTH_BOUND: Duration = Duration::from_secs(30);

/// `etcd` from the PATH, if installed.
pub fn etcd_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

/// One etcd member.
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
}

/// A three-member etcd cluster started by this process.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Mutex<Vec<Member>>,
}

fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

impl EtcdCluster {
    /// Start three members and wait until each is healthy (stopped and
    /// removed on drop).
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

    /// The `[store]` table of a meta server's TOML configuration that
    /// keeps its namespace on this cluster under `prefix`.
    pub fn store_toml(&self, prefix: &str) -> String {
        format!(
            "\n[store]\nkind = \"etcd\"\nendpoints = {:?}\nprefix = {prefix:?}\nmax_txn_ops = {MAX_TXN_OPS}\nmax_txn_bytes = {MAX_TXN_BYTES}\n",
            self.endpoints()
        )
    }

    /// Where the members keep their data and logs (`<name>.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
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
    pub fn restart(&self, i: usize) -> Result<(), String> {
        let etcd = etcd_binary().ok_or("etcd is not installed (Debian package etcd-server)")?;
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let initial: Vec<String> = members.iter().map(|m| format!("{}=http://{}", m.name, m.peer)).collect();
        let initial = initial.join(",");
        let m = &mut members[i];
        if m.child.is_some() {
            return Err(format!("etcd member {i} is running"));
        }
        m.child = Some(spawn(&etcd, self.dir.path(), m, &initial, "existing")?);
        wait_healthy(m.client, HEALTH_BOUND)
    }
}

impl EtcdCluster {
    /// Kill every member (their data stays until the cluster is dropped).
    pub fn stop(&self) {
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
    // The members die with this process: they are started by a thread
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
            // and lives as long as the process.
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

/// Role of an etcd member among the processes of `renkei local up --ha`.
pub const ROLE: &str = "etcd";

/// `renkei local up --ha`: three etcd members as processes of the local
/// federation (`etcd1`..`etcd3`, data in `etcd/`, each started from a
/// configuration file like the other processes, so `up` restarts and
/// `down` stops them). Adds them to `procs` (before the meta servers, which
/// wait for them) and returns the meta servers' `[store]` table.
pub(super) fn create_members(dir: &Path, site: &str, procs: &mut Vec<super::LocalProc>) -> Result<String, String> {
    let edir = dir.join("etcd");
    std::fs::create_dir_all(&edir).map_err(|e| format!("{}: {e}", edir.display()))?;
    let mut ports = Vec::new();
    for _ in 0..3 {
        ports.push((free_port().map_err(|e| e.to_string())?, free_port().map_err(|e| e.to_string())?));
    }
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, p))| format!("etcd{}=http://{p}", i + 1)).collect();
    let initial = initial.join(",");
    let mut endpoints = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let name = format!("etcd{}", i + 1);
        let text = format!(
            "# etcd member written by `renkei local up --ha`\nname: {name}\ndata-dir: {data}\n\
             listen-client-urls: http://{client}\nadvertise-client-urls: http://{client}\n\
             listen-peer-urls: http://{peer}\ninitial-advertise-peer-urls: http://{peer}\n\
             initial-cluster: {initial}\ninitial-cluster-state: new\ninitial-cluster-token: renkei-local\n\
             max-txn-ops: {MAX_TXN_OPS}\nmax-request-bytes: {MAX_REQUEST_BYTES}\n\
             auto-compaction-mode: revision\nauto-compaction-retention: \"10000\"\n",
            data = edir.join(&name).display(),
        );
        let config = edir.join(format!("{name}.yaml"));
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        procs.push(super::LocalProc { name, site: site.to_string(), role: ROLE.into(), config, addr: *client });
        endpoints.push(format!("http://{client}"));
    }
    Ok(format!(
        "\n[store]\nkind = \"etcd\"\nendpoints = {endpoints:?}\nprefix = \"renkei/\"\nmax_txn_ops = {MAX_TXN_OPS}\nmax_txn_bytes = {MAX_TXN_BYTES}\n"
    ))
}
