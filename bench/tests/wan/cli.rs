//! `renkei-bench wan up / exec / status / down` from a shell's point of view, including a daemon
//! that is SIGKILLed and a later `up` that must still work and leave nothing of the old run.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use bench::wan::state::RunState;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::{gate, run_ok};

fn bench(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_renkei-bench"));
    cmd.arg("wan").args(args.iter().take(1)).arg("--state-dir").arg(dir).args(args.iter().skip(1));
    cmd
}

/// `renkei-bench wan fed SUB --state-dir DIR ARGS...`.
fn fed(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_renkei-bench"));
    cmd.args(["wan", "fed"]).args(args.iter().take(1)).arg("--state-dir").arg(dir).args(args.iter().skip(1));
    cmd
}

fn netns_list() -> anyhow::Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "list"]);
    Ok(String::from_utf8_lossy(&run_ok(cmd)?.stdout).into_owned())
}

#[test]
fn cli_up_exec_status_down() -> anyhow::Result<()> {
    let Some(_serial) = gate("cli_up_exec_status_down") else { return Ok(()) };
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let up = run_ok(bench(dir, &["up", "--preset", "pair", "--rtt-ms", "4", "--rate-mbit", "100"]))?;
    let up_text = String::from_utf8_lossy(&up.stdout);
    assert!(up_text.contains("a -> b"), "up should describe the links:\n{up_text}");
    let first = RunState::load(dir)?.context("no state after up")?;
    assert!(first.alive());

    let ping = run_ok(bench(dir, &["exec", "a", "--", "ping", "-c", "3", "-i", "0.2", "10.77.0.2"]))?;
    let ping_text = String::from_utf8_lossy(&ping.stdout);
    assert!(ping_text.contains("3 received"), "{ping_text}");
    let status = run_ok(bench(dir, &["status"]))?;
    assert!(String::from_utf8_lossy(&status.stdout).contains("running"));
    let second_up = bench(dir, &["up", "--preset", "pair"]).output()?;
    assert!(!second_up.status.success(), "a second up over a live one must refuse");

    // A daemon killed without warning: the next up sweeps its namespaces and works.
    kill(Pid::from_raw(first.pid as i32), Signal::SIGKILL)?;
    // Its exit is the event (a pidfd), not a poll.
    let gone = fs_client::local::wait_pid_gone(first.pid as i32, std::time::Duration::from_secs(10))?;
    assert!(gone && !first.alive(), "the killed daemon {} still runs 10 s after SIGKILL", first.pid);
    assert!(netns_list()?.contains(&format!("rkw-{}-", first.run_id)), "the killed daemon left no namespaces?");
    run_ok(bench(dir, &["up", "--preset", "renkei2011"]))?;
    let second = RunState::load(dir)?.context("no state after second up")?;
    let list = netns_list()?;
    assert!(!list.contains(&format!("rkw-{}-", first.run_id)), "leftovers of the killed daemon:\n{list}");
    assert_eq!(second.sites.len(), bench::wan::preset::RENKEI2011_ALL_SITES.len(), "Table 4's six PoPs, nii2 and hkd");
    let nii = second.site("nii1")?.addr.to_string();
    let ping = run_ok(bench(dir, &["exec", "titech1", "--", "ping", "-c", "2", "-i", "0.2", &nii]))?;
    assert!(String::from_utf8_lossy(&ping.stdout).contains("2 received"));

    run_ok(bench(dir, &["down"]))?;
    assert!(!second.alive());
    let list = netns_list()?;
    assert!(!list.contains(&format!("rkw-{}-", second.run_id)), "down left namespaces:\n{list}");
    assert!(RunState::load(dir)?.is_none(), "down left its state file");
    Ok(())
}

/// `wan fed up` on a running WAN: a federation a person can use from a
/// shell in each site (`wan fed exec` sets RENKEI_CONFIG), stopped with the
/// WAN by `wan down`, leaving no process and no file.
#[test]
fn cli_fed_up_exec_down() -> anyhow::Result<()> {
    let Some(_serial) = gate("cli_fed_up_exec_down") else { return Ok(()) };
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    run_ok(bench(dir, &["up", "--preset", "pair", "--rtt-ms", "4", "--rate-mbit", "100"]))?;
    let up = run_ok(fed(dir, &["up", "--meta", "a"]))?;
    let up_text = String::from_utf8_lossy(&up.stdout);
    assert!(up_text.contains("pop-b"), "up names the file servers:\n{up_text}");
    let second = fed(dir, &["up"]).output()?;
    assert!(!second.status.success(), "a second fed up over a live one must refuse");
    let pids: Vec<i32> =
        up_text.lines().filter_map(|l| l.split("pid ").nth(1)).filter_map(|p| p.trim().parse().ok()).collect();
    assert_eq!(pids.len(), 3, "meta and two file servers:\n{up_text}");

    // A file put from one site is read at the other, through the CLI with
    // the configuration `exec` sets.
    let src = dir.join("hello.txt");
    std::fs::write(&src, b"across the emulated WAN")?;
    run_ok(fed(dir, &["exec", "b", "--", "renkei", "put", src.to_str().unwrap(), "/hello.txt"]))?;
    let got = dir.join("got.txt");
    run_ok(fed(dir, &["exec", "a", "--", "renkei", "get", "/hello.txt", got.to_str().unwrap()]))?;
    assert_eq!(std::fs::read(&got)?, b"across the emulated WAN");
    let hosts = run_ok(fed(dir, &["exec", "a", "--", "renkei", "hosts", "--json"]))?;
    let hosts: serde_json::Value = serde_json::from_slice(&hosts.stdout)?;
    let sites: Vec<&str> = hosts.as_array().unwrap().iter().filter_map(|h| h["site"].as_str()).collect();
    assert!(sites.contains(&"a") && sites.contains(&"b"), "a file server per site: {hosts}");
    let status = run_ok(fed(dir, &["status"]))?;
    assert_eq!(String::from_utf8_lossy(&status.stdout).matches(" running").count(), 3);

    run_ok(bench(dir, &["down"]))?;
    for pid in pids {
        assert!(!fs_client::local::running_pid_of(pid), "pid {pid} of the federation outlived wan down");
    }
    assert!(!dir.join("fed").exists(), "wan down left the federation's files");
    Ok(())
}
