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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while first.alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(netns_list()?.contains(&format!("rkw-{}-", first.run_id)), "the killed daemon left no namespaces?");
    run_ok(bench(dir, &["up", "--preset", "renkei2011"]))?;
    let second = RunState::load(dir)?.context("no state after second up")?;
    let list = netns_list()?;
    assert!(!list.contains(&format!("rkw-{}-", first.run_id)), "leftovers of the killed daemon:\n{list}");
    assert_eq!(second.sites.len(), 6);
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
