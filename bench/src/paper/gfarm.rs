//! Gfarm itself behind the WAN emulator, the anchor of Figure 6: Debian's Gfarm 2 (gfmd with a
//! PostgreSQL backend, one gfsd per site, the gfpcopy/gfrep clients) deployed for one run in the
//! emulated sites, so the paper's `gfrep` runs on the same emulated paths as renkei.
//!
//! This module owns that deployment: the system user it runs as ([`GFARM_USER`], created if
//! missing, because PostgreSQL refuses to run as root), its private directory (configuration,
//! PostgreSQL data, spools, the shared-secret key; removed at the end), the daemons (PostgreSQL and
//! gfmd in the meta site, a gfsd per site, each in its own process group under [`Gfarm`], killed
//! when it is dropped, also on error) and the client commands the benchmark times.
//!
//! Set-up follows Gfarm's own tools in their private mode (`-S`: no root, no system paths, a
//! user map): `config-gfarm` creates the PostgreSQL cluster, schema and gfmd.conf, `gfkey -c`
//! the shared key, `config-gfsd` each spool and its `gfhost -c` registration. Daemons are then
//! started here in the foreground (`-d`), never through init scripts or systemd. Three deviations,
//! all forced, none touching what is measured:
//! - Gfarm hosts are named by their sites' addresses (every namespace shares one `/etc/hosts`);
//! - Debian's config-gfarm 2.7.20 writes `password_encryption = true`, which PostgreSQL 14+
//!   rejects, so a private copy of its scripts is run with `md5` there;
//! - libgfarm 2.7.20's `gfarm_get_ip_addresses` (called by `gfarm_initialize`, so by every Gfarm
//!   program) reads `ifa_addr->sa_family` of every `getifaddrs` entry without a NULL check, and a
//!   site's TUN device has no link address, so every Gfarm program segfaults in a site. Gfarm's
//!   processes therefore run with [`GETIFADDRS_SHIM`] preloaded: a `getifaddrs` that gives such
//!   entries an `AF_UNSPEC` address (which Gfarm then skips), compiled with `cc` per run.

use crate::wan::{Site, Wan};
use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The system user Gfarm's daemons and clients run as.
pub const GFARM_USER: &str = "renkei-gfarm";
/// PostgreSQL's port in the meta site.
pub const PG_PORT: u16 = 10602;
/// gfmd's port in the meta site (config-gfarm's private-mode default).
pub const GFMD_PORT: u16 = 10601;
/// Every gfsd's port in its site (config-gfsd's private-mode default).
pub const GFSD_PORT: u16 = 10600;
/// Gfarm's programs this module runs, with their Debian packages.
pub const TOOLS: [(&str, &str); 11] = [
    ("config-gfarm", "gfmd"),
    ("gfmd", "gfmd"),
    ("config-gfsd", "gfsd"),
    ("gfsd", "gfsd"),
    ("gfkey", "gfarm-client"),
    ("gfhost", "gfarm-client"),
    ("gfmkdir", "gfarm-client"),
    ("gfpcopy", "gfarm-client"),
    ("gfrep", "gfarm-client"),
    ("gfwhere", "gfarm-client"),
    ("gfrm", "gfarm-client"),
];
/// `LD_PRELOAD` source for Gfarm's processes: entries of `getifaddrs` without an address (a TUN
/// device's link entry) get an `AF_UNSPEC` one, so libgfarm 2.7.20 does not dereference NULL.
pub const GETIFADDRS_SHIM: &str = r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <stddef.h>
#include <sys/socket.h>

static struct sockaddr unspec = { .sa_family = AF_UNSPEC };

int getifaddrs(struct ifaddrs **head) {
	int (*real)(struct ifaddrs **) = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
	if (real == NULL)
		return -1;
	int r = real(head);
	if (r == 0)
		for (struct ifaddrs *i = *head; i != NULL; i = i->ifa_next)
			if (i->ifa_addr == NULL)
				i->ifa_addr = &unspec;
	return r;
}
"#;
/// Where Debian's config-gfarm keeps its templates.
const CONFIG_DIR: &str = "/usr/share/gfarm/config";
/// How long a daemon gets to start listening, and to stop.
const DAEMON_BOUND: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);

/// `program`'s path on PATH or in /usr/sbin, /sbin.
fn find_tool(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0));
    found
}

/// PostgreSQL's newest installed server: its major version and bin directory (Debian keeps it in
/// /usr/lib/postgresql/VERSION/bin, off PATH).
fn postgres_bin() -> anyhow::Result<(String, PathBuf)> {
    let mut best: Option<(u32, PathBuf)> = None;
    for e in std::fs::read_dir("/usr/lib/postgresql").context("no /usr/lib/postgresql (package postgresql)")? {
        let e = e?;
        let Ok(v) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let bin = e.path().join("bin");
        if bin.join("postgres").exists() && bin.join("initdb").exists() && best.as_ref().is_none_or(|b| v > b.0) {
            best = Some((v, bin));
        }
    }
    best.map(|(v, b)| (v.to_string(), b))
        .context("no PostgreSQL server in /usr/lib/postgresql/*/bin (package postgresql)")
}

/// Whether Gfarm can run here: every tool of [`TOOLS`], PostgreSQL and `setpriv`. The error names
/// what is missing and the packages to install.
pub fn check_installed() -> anyhow::Result<()> {
    let mut missing: Vec<String> =
        TOOLS.iter().filter(|(t, _)| find_tool(t).is_none()).map(|(t, p)| format!("{t} (package {p})")).collect();
    if find_tool("setpriv").is_none() {
        missing.push("setpriv (package util-linux)".into());
    }
    if find_tool("cc").is_none() {
        missing.push("cc (package gcc), to build the getifaddrs shim".into());
    }
    if let Err(e) = postgres_bin() {
        missing.push(format!("{e:#}"));
    }
    if !Path::new(CONFIG_DIR).join("config-gfarm.postgresql").exists() {
        missing.push(format!("{CONFIG_DIR}/config-gfarm.postgresql (package gfmd)"));
    }
    anyhow::ensure!(
        missing.is_empty(),
        "Gfarm is not installed: missing {} (apt-get install gfmd gfsd gfarm-client gfarm2fs postgresql)",
        missing.join(", ")
    );
    Ok(())
}

/// The uid and gid of [`GFARM_USER`], created as a system user without a home if missing.
fn gfarm_user() -> anyhow::Result<(u32, u32)> {
    if User::from_name(GFARM_USER)?.is_none() {
        info!(user = GFARM_USER, "creating the system user Gfarm runs as");
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"])
            .arg(GFARM_USER)
            .output()
            .context("running useradd")?;
        anyhow::ensure!(
            out.status.success() || User::from_name(GFARM_USER)?.is_some(),
            "useradd {GFARM_USER}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let u = User::from_name(GFARM_USER)?.with_context(|| format!("user {GFARM_USER} missing after useradd"))?;
    Ok((u.uid.as_raw(), u.gid.as_raw()))
}

/// One supervised daemon: its own process group, killed when the deployment is dropped.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    stop: Signal,
}

impl Daemon {
    /// Stop it: `stop` to the process, then SIGKILL to its whole group after the grace.
    fn stop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, self.stop);
        let t = Instant::now();
        while t.elapsed() < STOP_GRACE {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The group also holds what it forked (gfsd's per-connection children, PostgreSQL's
        // backends).
        let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// A running Gfarm: gfmd (and PostgreSQL) in one site, a gfsd in each of the others. Dropping it
/// stops every daemon and removes its directory.
pub struct Gfarm {
    root: PathBuf,
    shim: PathBuf,
    uid: u32,
    gid: u32,
    meta_site: Site,
    /// (site, its gfsd's Gfarm host name)
    hosts: Vec<(Site, String)>,
    daemons: Vec<Daemon>,
}

impl Drop for Gfarm {
    fn drop(&mut self) {
        // gfsds first, then gfmd, then PostgreSQL.
        while let Some(mut d) = self.daemons.pop() {
            d.stop();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            warn!(dir = %self.root.display(), error = %e, "removing Gfarm's directory");
        }
        info!("Gfarm stopped and removed");
    }
}

fn chown_r(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    let st = Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(path).status()?;
    anyhow::ensure!(st.success(), "chown -R {}: {st}", path.display());
    Ok(())
}

fn output_text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).to_string();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn can_connect(site: &Site, addr: Ipv4Addr, port: u16) -> bool {
    let a = SocketAddr::from((addr, port));
    site.run_in(move || TcpStream::connect_timeout(&a, Duration::from_millis(500))).is_ok()
}

impl Gfarm {
    /// Deploy Gfarm: PostgreSQL and gfmd at `meta_site`, a gfsd at each of `gfsd_sites` (which may
    /// include `meta_site`). Returns once every gfsd is up in gfmd's view.
    pub fn start(wan: &Wan, meta_site: &str, gfsd_sites: &[String]) -> anyhow::Result<Gfarm> {
        check_installed()?;
        let (pg_version, pg_bin) = postgres_bin()?;
        let (uid, gid) = gfarm_user()?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        // Not under the caller's scratch: that may be a 0700 temporary directory the Gfarm user
        // cannot enter.
        let root = std::env::temp_dir().join(format!("renkei-gfarm-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
        let shim = root.join("tools/getifaddrs-shim.so");
        let mut g =
            Gfarm { root, shim, uid, gid, meta_site: wan.site(meta_site)?, hosts: Vec::new(), daemons: Vec::new() };
        for d in ["home", "meta", "data"] {
            std::fs::create_dir_all(g.root.join(d))?;
        }
        chown_r(&g.root.join("home"), uid, gid)?;
        chown_r(&g.root.join("meta"), uid, gid)?;
        let config_gfarm = g.private_config_gfarm()?;
        g.build_shim()?;

        let meta = g.meta_site.clone();
        let meta_host = meta.addr().to_string();
        info!(site = %meta.name(), host = %meta_host, postgres = %pg_version, "config-gfarm (PostgreSQL backend, private mode)");
        let prefix = g.root.join("meta");
        let mut c = g.command(&meta, &config_gfarm, None);
        c.args(["-S", "-N", "--prefix"]).arg(&prefix).args(["-h", &meta_host, "-A", GFARM_USER]);
        c.args(["-p", &PG_PORT.to_string(), "-m", &GFMD_PORT.to_string(), "-P"]);
        c.arg(pg_bin.parent().context("PostgreSQL prefix")?).args(["-V", &pg_version]);
        run_ok(c, "config-gfarm")?;
        let etc = prefix.join("etc");
        // gfkey and gfmd look for the key in the user's home by default; keep it in ours.
        let key = format!("shared_key_file {}\n", g.root.join("home/.gfarm_shared_key").display());
        for f in ["gfarm2.conf", "gfmd.conf", "gfsd.conf"] {
            append(&etc.join(f), &key)?;
        }

        let pgdata = prefix.join("var/gfarm-pgsql");
        let mut c = g.command(&meta, pg_bin.join("postgres"), None);
        c.arg("-D").arg(&pgdata).arg("-k").arg(&pgdata);
        g.spawn("postgres", c, Signal::SIGINT)?;
        g.wait_listening("postgres", &meta, meta.addr(), PG_PORT)?;

        let mut c = g.command(&meta, "gfmd", None);
        c.args(["-d", "-L", "info", "-f"]).arg(etc.join("gfmd.conf")).arg("-P").arg(prefix.join("var/run/gfmd.pid"));
        g.spawn("gfmd", c, Signal::SIGTERM)?;
        g.wait_listening("gfmd", &meta, meta.addr(), GFMD_PORT)?;

        let mut c = g.command(&meta, "gfkey", Some(&etc.join("gfarm2.conf")));
        c.args(["-c", "-p", "864000"]);
        run_ok(c, "gfkey -c")?;

        for s in gfsd_sites {
            let site = wan.site(s)?;
            let host = site.addr().to_string();
            let dir = g.root.join(format!("gfsd-{s}"));
            std::fs::create_dir_all(dir.join("etc"))?;
            for f in ["gfsd.conf", "gfarm2.conf", "usermap"] {
                std::fs::copy(etc.join(f), dir.join("etc").join(f)).with_context(|| format!("copying {f}"))?;
            }
            chown_r(&dir, uid, gid)?;
            info!(site = %s, host = %host, "config-gfsd (gfhost -c registers it at gfmd)");
            let mut c = g.command(&site, "config-gfsd", None);
            c.args(["-S", "-N", "--prefix"]).arg(&dir).args(["-h", &host, "-l", &host]);
            c.args(["-p", &GFSD_PORT.to_string()]);
            let out = run_ok(c, &format!("config-gfsd at {s}"))?;
            // config-gfsd reports a failed `gfhost -c` but still succeeds.
            anyhow::ensure!(
                String::from_utf8_lossy(&out.stdout).contains(&format!("gfhost {host}: succeeded")),
                "config-gfsd at {s} did not register {host} (gfhost -c):\n{}",
                output_text(&out)
            );
            let mut c = g.command(&site, "gfsd", None);
            c.args(["-d", "-L", "info", "-f"]).arg(dir.join("etc/gfsd.conf")).args(["-h", &host, "-l", &host]);
            c.arg("-r").arg(dir.join(format!("var/gfarm-spool-{host}")));
            c.arg("-P").arg(dir.join("var/run/gfsd.pid"));
            g.spawn(&format!("gfsd-{s}"), c, Signal::SIGTERM)?;
            g.wait_listening(&format!("gfsd at {s}"), &site, site.addr(), GFSD_PORT)?;
            g.hosts.push((site, host));
        }
        g.wait_hosts_up()?;
        info!(gfsds = g.hosts.len(), "Gfarm up");
        Ok(g)
    }

    /// A copy of config-gfarm and its templates whose PostgreSQL step writes
    /// `password_encryption = md5` instead of `true` (rejected since PostgreSQL 14).
    fn private_config_gfarm(&self) -> anyhow::Result<PathBuf> {
        let tools = self.root.join("tools");
        let config = tools.join("config");
        std::fs::create_dir_all(&tools)?;
        run_ok(
            {
                let mut c = Command::new("cp");
                c.arg("-r").arg(CONFIG_DIR).arg(&config);
                c
            },
            &format!("copying {CONFIG_DIR}"),
        )?;
        let pg = config.join("config-gfarm.postgresql");
        let text = std::fs::read_to_string(&pg)?;
        std::fs::write(&pg, text.replace("password_encryption = true", "password_encryption = md5"))?;
        let script_path = find_tool("config-gfarm").context("config-gfarm")?;
        let script = std::fs::read_to_string(&script_path)?;
        let mut replaced = 0;
        let patched: Vec<String> = script
            .lines()
            .map(|l| {
                if l.starts_with("config_dir=") {
                    replaced += 1;
                    format!("config_dir=\"{}\"", config.display())
                } else {
                    l.to_string()
                }
            })
            .collect();
        anyhow::ensure!(replaced == 1, "{}: expected one `config_dir=` line, found {replaced}", script_path.display());
        let out = tools.join("config-gfarm");
        std::fs::write(&out, patched.join("\n") + "\n")?;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755))?;
        Ok(out)
    }

    /// Compile [`GETIFADDRS_SHIM`] to `self.shim`.
    fn build_shim(&self) -> anyhow::Result<()> {
        let src = self.shim.with_extension("c");
        std::fs::write(&src, GETIFADDRS_SHIM)?;
        let mut c = Command::new("cc");
        c.args(["-shared", "-fPIC", "-O2", "-o"]).arg(&self.shim).arg(&src).arg("-ldl");
        run_ok(c, "cc of the getifaddrs shim").map(|_| ())
    }

    /// `program` at `site` as the Gfarm user (setpriv drops root after entering the namespace),
    /// with `conf` as GFARM_CONFIG_FILE.
    fn command(&self, site: &Site, program: impl AsRef<std::ffi::OsStr>, conf: Option<&Path>) -> Command {
        let mut c = site.command("setpriv");
        c.args(["--reuid", &self.uid.to_string(), "--regid", &self.gid.to_string(), "--clear-groups"]).arg(program);
        c.env("HOME", self.root.join("home")).env("USER", GFARM_USER).env("LOGNAME", GFARM_USER);
        c.env("LD_PRELOAD", &self.shim);
        for v in ["PGHOST", "PGPORT", "PGDATA", "PGUSER", "PGDATABASE"] {
            c.env_remove(v);
        }
        if let Some(conf) = conf {
            c.env("GFARM_CONFIG_FILE", conf);
        }
        c.current_dir(&self.root);
        c
    }

    /// A Gfarm client command at `site`, reading that site's gfarm2.conf.
    fn client(&self, site: &Site, program: &str) -> Command {
        let own = self.root.join(format!("gfsd-{}/etc/gfarm2.conf", site.name()));
        let conf = if own.exists() { own } else { self.root.join("meta/etc/gfarm2.conf") };
        self.command(site, program, Some(&conf))
    }

    fn spawn(&mut self, name: &str, mut c: Command, stop: Signal) -> anyhow::Result<()> {
        let log = self.root.join(format!("{name}.log"));
        let f = std::fs::File::create(&log)?;
        c.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f).process_group(0);
        let child = c.spawn().with_context(|| format!("starting {name}"))?;
        self.daemons.push(Daemon { name: name.to_string(), child, log, stop });
        Ok(())
    }

    /// Bounded poll (no event exists) until `port` at `addr` accepts, failing early if the last
    /// daemon started exits.
    fn wait_listening(&mut self, what: &str, site: &Site, addr: Ipv4Addr, port: u16) -> anyhow::Result<()> {
        let t = Instant::now();
        while !can_connect(site, addr, port) {
            if let Some(d) = self.daemons.last_mut() {
                if let Some(st) = d.exited() {
                    bail!("{what} ({}) exited ({st}) before listening on {addr}:{port}:\n{}", d.name, d.log_tail());
                }
            }
            anyhow::ensure!(
                t.elapsed() < DAEMON_BOUND,
                "{what} not listening on {addr}:{port} within {DAEMON_BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Bounded poll until gfmd lists every gfsd with a load average (i.e. connected to it).
    fn wait_hosts_up(&self) -> anyhow::Result<()> {
        let t = Instant::now();
        loop {
            let out = self.client(&self.meta_site, "gfhost").arg("-l").output().context("gfhost -l")?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let up = self
                .hosts
                .iter()
                .filter(|(_, h)| {
                    text.lines().any(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        // LOADAVG AUTH ARCH NCPU HOST PORT ...; a host gfmd has no gfsd for
                        // shows `-.--` or `x.xx` loads.
                        f.len() > 4 && f[4] == h.as_str() && !f[0].starts_with('-') && !f[0].starts_with('x')
                    })
                })
                .count();
            if out.status.success() && up == self.hosts.len() {
                return Ok(());
            }
            anyhow::ensure!(
                t.elapsed() < DAEMON_BOUND,
                "{up} of {} gfsds up in gfmd's view after {DAEMON_BOUND:?}; gfhost -l:\n{text}{}",
                self.hosts.len(),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The Gfarm host name of `site`'s gfsd.
    pub fn host_of(&self, site: &str) -> anyhow::Result<&str> {
        self.hosts
            .iter()
            .find(|(s, _)| s.name() == site)
            .map(|(_, h)| h.as_str())
            .with_context(|| format!("no gfsd at {site}"))
    }

    /// Stage `local` (a directory tree) where the Gfarm user can read it: hard links where the
    /// file system allows, else a copy. Returns the staged path, named like `local`.
    pub fn stage(&self, local: &Path) -> anyhow::Result<PathBuf> {
        let name = local.file_name().context("staged directory has no name")?;
        let dst = self.root.join("data").join(name);
        if !dst.exists() {
            let linked = Command::new("cp").arg("-al").arg(local).arg(&dst).stderr(Stdio::null()).status()?;
            if !linked.success() {
                let _ = std::fs::remove_dir_all(&dst);
                let st = Command::new("cp").arg("-a").arg(local).arg(&dst).status()?;
                anyhow::ensure!(st.success(), "copying {} for Gfarm: {st}", local.display());
            }
            let st = Command::new("chmod").arg("-R").arg("a+rX").arg(&dst).status()?;
            anyhow::ensure!(st.success(), "chmod -R a+rX {}: {st}", dst.display());
        }
        Ok(dst)
    }

    /// Upload (untimed) the staged tree `staged` into Gfarm directory `dir` (as `dir/NAME`) by a
    /// client at `site`, stored only on `site`'s gfsd (`gfpcopy -D`; `-B` because this shared
    /// machine's load would make Gfarm call every host busy). Checks every file landed there.
    pub fn upload(&self, site: &str, staged: &Path, dir: &str, files: usize) -> anyhow::Result<()> {
        let s = self.site(site)?;
        let host = self.host_of(site)?.to_string();
        run_ok(
            {
                let mut c = self.client(&s, "gfmkdir");
                c.args(["-p", dir]);
                c
            },
            &format!("gfmkdir {dir}"),
        )?;
        let mut c = self.client(&s, "gfpcopy");
        c.args(["-q", "-B", "-D", &host]).arg(staged).arg(format!("gfarm://{dir}"));
        run_ok(c, &format!("gfpcopy to {dir} at {site}"))?;
        let name = staged.file_name().context("staged name")?.to_string_lossy().to_string();
        let replicas = self.replicas(&format!("{dir}/{name}"))?;
        let only_here = replicas.iter().filter(|(_, h)| h.len() == 1 && h[0] == host).count();
        anyhow::ensure!(
            replicas.len() == files && only_here == files,
            "gfpcopy to {dir}: {} files, {only_here} held only at {site}'s gfsd, {files} expected",
            replicas.len()
        );
        Ok(())
    }

    fn site(&self, name: &str) -> anyhow::Result<Site> {
        if self.meta_site.name() == name {
            return Ok(self.meta_site.clone());
        }
        self.hosts
            .iter()
            .find(|(s, _)| s.name() == name)
            .map(|(s, _)| s.clone())
            .with_context(|| format!("no site {name}"))
    }

    /// Every file under Gfarm directory `dir` with the hosts holding its replicas (`gfwhere -r`).
    pub fn replicas(&self, dir: &str) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let out = run_ok(
            {
                let mut c = self.client(&self.meta_site, "gfwhere");
                c.args(["-r", dir]);
                c
            },
            &format!("gfwhere -r {dir}"),
        )?;
        Ok(parse_gfwhere(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Timed: `gfrep -D <to's host> dir` by a client at `client_site` (the paper's gfrep, default
    /// threads: with one source and one destination host, one file at a time). Seconds; checks
    /// that every one of `files` files then has a replica at `to`.
    pub fn gfrep_tree(&self, client_site: &str, dir: &str, to: &str, files: usize) -> anyhow::Result<f64> {
        let s = self.site(client_site)?;
        let host = self.host_of(to)?.to_string();
        let mut c = self.client(&s, "gfrep");
        c.args(["-q", "-D", &host, dir]);
        let t = Instant::now();
        run_ok(c, &format!("gfrep -D {to} {dir}"))?;
        let secs = t.elapsed().as_secs_f64();
        self.check_replicated(dir, &host, files)?;
        Ok(secs)
    }

    /// Timed: one `gfrep -D <to's host> FILE` process per file, one after another (what a user's
    /// loop over the files does), by a client at `client_site`. Seconds; checks every file then has
    /// a replica at `to`.
    pub fn gfrep_per_file(&self, client_site: &str, dir: &str, rel: &[PathBuf], to: &str) -> anyhow::Result<f64> {
        let s = self.site(client_site)?;
        let host = self.host_of(to)?.to_string();
        let t = Instant::now();
        for f in rel {
            let path = format!("{dir}/{}", f.display());
            let mut c = self.client(&s, "gfrep");
            c.args(["-q", "-D", &host, &path]);
            run_ok(c, &format!("gfrep -D {to} {path}"))?;
        }
        let secs = t.elapsed().as_secs_f64();
        self.check_replicated(dir, &host, rel.len())?;
        Ok(secs)
    }

    fn check_replicated(&self, dir: &str, host: &str, files: usize) -> anyhow::Result<()> {
        let r = self.replicas(dir)?;
        let there = r.iter().filter(|(_, h)| h.iter().any(|x| x == host)).count();
        anyhow::ensure!(
            r.len() == files && there == files,
            "after gfrep of {dir}: {} files, {there} with a replica at {host}; {files} expected",
            r.len()
        );
        Ok(())
    }

    /// Remove Gfarm directory `dir` and everything under it.
    pub fn remove(&self, dir: &str) -> anyhow::Result<()> {
        let mut c = self.client(&self.meta_site, "gfrm");
        c.args(["-rf", dir]);
        run_ok(c, &format!("gfrm -rf {dir}")).map(|_| ())
    }
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f =
        std::fs::OpenOptions::new().append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn run_ok(mut c: Command, what: &str) -> anyhow::Result<Output> {
    let out = c.stdin(Stdio::null()).output().with_context(|| format!("running {what}"))?;
    anyhow::ensure!(out.status.success(), "{what} failed ({}):\n{}", out.status, output_text(&out));
    Ok(out)
}

/// `gfwhere -r` output: a `PATH:` line, then a line of hosts, per file (directories print a
/// `PATH:` line with nothing after it, or an empty one).
fn parse_gfwhere(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let Some(path) = l.strip_suffix(':') else { continue };
        match lines.peek() {
            Some(next) if !next.trim().is_empty() && !next.ends_with(':') => {
                let hosts = next.split_whitespace().map(str::to_string).collect();
                out.push((path.to_string(), hosts));
                lines.next();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gfwhere_output_parses_files_and_skips_directories() {
        let text = "/up/data:\n\n/up/data/sub/f1:\n10.99.0.3 10.99.0.2\n\n/up/data/sub/f2:\n10.99.0.2\n";
        let r = parse_gfwhere(text);
        assert_eq!(
            r,
            vec![
                ("/up/data/sub/f1".to_string(), vec!["10.99.0.3".to_string(), "10.99.0.2".to_string()]),
                ("/up/data/sub/f2".to_string(), vec!["10.99.0.2".to_string()]),
            ]
        );
    }
}
