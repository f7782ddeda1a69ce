//! `renkei config check FILE` on every kind of configuration (client, meta
//! server, file server, VM manager, VM agent): a valid file passes, and a
//! value of the wrong type, an unknown field and a missing required field
//! each fail with the line and the field named. The kind is detected from
//! the file; `--kind` and each service's own `--check` agree. Every
//! configuration `renkei local up` writes passes, and so does every sample.

use std::path::Path;
use std::process::{Command, Output};
use tests::procs::bin_dir;

const TLS: &str = "[tls]\nca = \"ca.pem\"\ncert = \"host.pem\"\nkey = \"host.key\"\n";

/// One kind: a valid file whose third line is `key = 1000` (a number the
/// kind knows), its `--kind` name, and the service's own check command.
struct Kind {
    name: &'static str,
    head: &'static str,
    number: &'static str,
    own_check: &'static [&'static str],
}

const KINDS: &[Kind] = &[
    Kind {
        name: "client",
        head: "meta = { addr = \"127.0.0.1:7470\", name = \"meta\" }\nsite = \"site1\"\n",
        number: "parallel",
        own_check: &[],
    },
    Kind {
        name: "meta",
        head: "listen = \"127.0.0.1:7470\"\ndb = \"meta.db\"\n",
        number: "host_timeout_ms",
        own_check: &["renkei-meta", "--check", "--config"],
    },
    Kind {
        name: "server",
        head: "spool = \"spool\"\nmeta = { addr = \"127.0.0.1:7470\", name = \"meta\" }\n",
        number: "heartbeat_ms",
        own_check: &["renkei-server", "--check", "--config"],
    },
    Kind {
        name: "manager",
        head: "state_dir = \"vpe\"\nmeta = { addr = \"127.0.0.1:7470\", name = \"meta\" }\nsite = \"site1\"\n",
        number: "agent_timeout_ms",
        own_check: &["vpe", "serve", "--check", "--config"],
    },
    Kind {
        name: "agent",
        head: "manager = { addr = \"127.0.0.1:7480\", name = \"vpe\" }\nmeta = { addr = \"127.0.0.1:7470\", name = \"meta\" }\n",
        number: "max_vms",
        own_check: &["vpe", "agent", "--check", "--config"],
    },
];

impl Kind {
    /// The file with `number_line` as the line after the head, then `[tls]`.
    fn text(&self, number_line: &str, tls: &str) -> (String, usize, usize) {
        let number_at = self.head.lines().count() + 1;
        let text = format!("{}{number_line}\n{tls}", self.head);
        (text, number_at, number_at + 1)
    }
}

fn check(file: &Path, kind: Option<&str>) -> Output {
    let mut c = Command::new(bin_dir().join("renkei"));
    c.args(["config", "check"]);
    if let Some(k) = kind {
        c.args(["--kind", k]);
    }
    c.arg(file).output().expect("run renkei config check")
}

fn own_check(k: &Kind, file: &Path) -> Output {
    let (bin, args) = k.own_check.split_first().expect("a command");
    Command::new(bin_dir().join(bin)).args(args).arg(file).output().expect("run the service's check")
}

/// Assert `out` failed and its message names `line` and `field`.
fn assert_fault(what: &str, out: &Output, line: usize, field: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: accepted\n{err}");
    assert_eq!(out.status.code(), Some(1), "{what}: exit status {}\n{err}", out.status);
    assert!(err.contains(&format!("line {line}")), "{what}: the message does not name line {line}:\n{err}");
    assert!(err.contains(&format!("field `{field}`")), "{what}: the message does not name field `{field}`:\n{err}");
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: refused ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_kind_names_the_line_and_field_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    for k in KINDS {
        let file = dir.path().join(format!("{}.toml", k.name));
        let write = |text: &str| std::fs::write(&file, text).unwrap();

        let (valid, _, _) = k.text(&format!("{} = 1000", k.number), TLS);
        write(&valid);
        let out = check(&file, None);
        assert_ok(&format!("valid {} config", k.name), &out);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(k.name),
            "the detected kind is not {}: {}",
            k.name,
            String::from_utf8_lossy(&out.stdout)
        );
        assert_ok(&format!("valid {} config, --kind", k.name), &check(&file, Some(k.name)));
        if !k.own_check.is_empty() {
            assert_ok(&format!("valid {} config, {:?}", k.name, k.own_check), &own_check(k, &file));
        }

        // A string where a number belongs.
        let (text, line, _) = k.text(&format!("{} = \"soon\"", k.number), TLS);
        write(&text);
        assert_fault(&format!("{}: wrong type", k.name), &check(&file, None), line, k.number);
        if !k.own_check.is_empty() {
            assert_fault(&format!("{}: wrong type, own check", k.name), &own_check(k, &file), line, k.number);
        }

        // A misspelt field is refused, not ignored.
        let typo = format!("{}s", k.number);
        let (text, line, _) = k.text(&format!("{typo} = 1000"), TLS);
        write(&text);
        assert_fault(&format!("{}: unknown field", k.name), &check(&file, Some(k.name)), line, &typo);

        // A required field missing: the table it is missing from is named.
        let (text, _, tls_line) = k.text(&format!("{} = 1000", k.number), "[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\n");
        write(&text);
        assert_fault(&format!("{}: missing field", k.name), &check(&file, None), tls_line, "tls.key");

        // And nested tables are checked too.
        let (text, _, tls_line) = k.text(&format!("{} = 1000", k.number), &format!("{TLS}keyfile = \"k\"\n"));
        write(&text);
        assert_fault(&format!("{}: unknown field in [tls]", k.name), &check(&file, None), tls_line + 4, "tls.keyfile");
    }
}

#[test]
fn broken_toml_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.toml");
    std::fs::write(&file, "db = \"meta.db\"\nhost_timeout_ms = = 3\n").unwrap();
    let out = check(&file, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("line 2"), "{err}");

    let out = check(&dir.path().join("absent.toml"), None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("absent.toml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_written_by_local_up_pass() {
    let fed = tests::procs::ProcFederation::up(2).await;
    let mut checked = Vec::new();
    let vpe = fed.dir().join("vpe");
    for d in [fed.dir().to_path_buf(), vpe] {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".toml") || name.starts_with("accel") {
                continue;
            }
            let out = check(&p, None);
            assert_ok(&format!("{} written by local up", p.display()), &out);
            checked.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
    }
    let all = checked.join("\n");
    for kind in ["client", "meta", "server"] {
        assert!(all.contains(&format!("{kind} configuration")), "no {kind} configuration checked:\n{all}");
    }
}

#[test]
fn sample_configs_pass() {
    // The documented samples, which the Debian package installs as /etc/renkei/*.toml.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
    for (file, kind) in [
        ("fs-client/client.toml", "client"),
        ("fs-meta/meta.toml", "meta"),
        ("fs-server/server.toml", "server"),
        ("vpe/manager.toml", "manager"),
        ("vpe/agent.toml", "agent"),
    ] {
        let out = check(&root.join(file), None);
        assert_ok(file, &out);
        assert!(String::from_utf8_lossy(&out.stdout).contains(kind), "{file} not detected as {kind}");
    }
}

/// The meta server's `[store]`: sled and etcd pass, an unknown kind or
/// field fails naming it, and etcd without endpoints (or sled with them)
/// is refused by both checks.
#[test]
fn meta_store_tables_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let meta = &KINDS[1];
    let file = dir.path().join("meta.toml");
    let with = |store: &str| {
        let (text, _, _) = meta.text("host_timeout_ms = 1000", TLS);
        std::fs::write(&file, format!("{text}\n{store}")).unwrap();
        (check(&file, None), own_check(meta, &file))
    };
    for ok in [
        "[store]\nkind = \"sled\"\n",
        "[store]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"fed1/\"\nmax_txn_ops = 4096\n",
    ] {
        let (a, b) = with(ok);
        assert_ok(ok, &a);
        assert_ok(ok, &b);
    }
    for (bad, needle) in [
        ("[store]\nkind = \"redis\"\n", "kind"),
        ("[store]\nkind = \"etcd\"\nendpoint = [\"http://127.0.0.1:2379\"]\n", "endpoint"),
        ("[store]\nkind = \"etcd\"\n", "needs endpoints"),
        ("[store]\nendpoints = [\"http://127.0.0.1:2379\"]\n", "endpoints are for kind = \"etcd\""),
    ] {
        for out in [with(bad).0, with(bad).1] {
            let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            assert!(!out.status.success(), "{bad:?} passed");
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }
}
