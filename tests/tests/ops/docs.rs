//! `BINARY completions SHELL` and `BINARY man DIR` for every binary: the
//! output is not empty and names the binary's main subcommands and options.

use std::path::Path;
use std::process::Command;
use tests::procs::bin_dir;

/// Every binary and words its completions and main man page must mention.
const BINARIES: &[(&str, &[&str])] = &[
    ("renkei", &["put", "get", "mount", "umount", "config", "local", "rep"]),
    ("renkei-meta", &["--config", "--check"]),
    ("renkei-server", &["--config", "--check", "--forget-spool"]),
    ("vpe", &["run", "serve", "agent", "image"]),
    ("renkei-bench", &["wan", "putget", "mount"]),
];

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin_dir().join(bin)).args(args).output().unwrap_or_else(|e| panic!("run {bin}: {e}"));
    assert!(out.status.success(), "{bin} {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn completions_for_every_binary_and_shell() {
    for (bin, words) in BINARIES {
        for shell in ["bash", "zsh", "fish"] {
            let script = run(bin, &["completions", shell]);
            assert!(script.len() > 200, "{bin} completions {shell}: only {} bytes", script.len());
            assert!(script.contains(bin), "{bin} completions {shell} do not name the program");
            for w in *words {
                // fish lists long options without their dashes (`-l check`).
                let w = if shell == "fish" { w.trim_start_matches('-') } else { w };
                assert!(script.contains(w), "{bin} completions {shell} do not mention {w:?}");
            }
        }
    }
}

/// A man page's text with roff's escaped hyphens made plain.
fn page(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.replace("\\-", "-")
}

#[test]
fn man_pages_for_every_binary() {
    for (bin, words) in BINARIES {
        let dir = tempfile::tempdir().unwrap();
        let listed = run(bin, &["man", dir.path().to_str().unwrap()]);
        let main = dir.path().join(format!("{bin}.1"));
        assert!(listed.contains(main.to_str().unwrap()), "{bin} man did not list {}: {listed}", main.display());
        let text = page(&main);
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{} is not a man page", main.display());
        assert!(text.contains(".SH NAME") || text.contains(".SH \"NAME\""), "{}: no NAME section", main.display());
        for w in *words {
            assert!(text.contains(w), "{} does not mention {w:?}", main.display());
        }
    }
    // The CLI's subcommands get pages of their own, and mount(8)'s helper one in section 8.
    let dir = tempfile::tempdir().unwrap();
    run("renkei", &["man", dir.path().to_str().unwrap()]);
    for name in ["renkei-put.1", "renkei-mount.1", "renkei-config-check.1", "renkei-local-up.1", "mount.renkei.8"] {
        let p = dir.path().join(name);
        assert!(p.exists(), "{} missing", p.display());
        assert!(std::fs::metadata(&p).unwrap().len() > 100, "{} is nearly empty", p.display());
    }
    assert!(page(&dir.path().join("mount.renkei.8")).contains("_netdev"), "mount.renkei(8) does not explain _netdev");
    // The services' pages document their --check.
    let dir = tempfile::tempdir().unwrap();
    run("vpe", &["man", dir.path().to_str().unwrap()]);
    for name in ["vpe-serve.1", "vpe-agent.1"] {
        assert!(page(&dir.path().join(name)).contains("--check"), "{name} does not document --check");
    }
}
