//! Nothing is left behind: not after a panicking test, not after a SIGKILLed one (the next start
//! sweeps it), and a later start works either way.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use bench::wan::{preset, Wan};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::{gate, run_ok};

const HELPER_ENV: &str = "RENKEI_WAN_HELPER";

/// Output of the real `ip netns list`, as a person would check it.
fn ip_netns_list() -> anyhow::Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "list"]);
    Ok(String::from_utf8_lossy(&run_ok(cmd)?.stdout).into_owned())
}

/// Whether `pid` still runs (a zombie has finished running).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// Not a test: the child process of `sigkilled_run_is_swept_by_the_next_start`. Brings a topology up,
/// starts a process in a site, reports, and waits (at most two minutes) to be killed.
#[test]
#[ignore = "helper process for sigkilled_run_is_swept_by_the_next_start"]
fn helper_hold_wan() -> anyhow::Result<()> {
    if std::env::var(HELPER_ENV).is_err() {
        return Ok(());
    }
    let wan = Wan::start(preset::pair(2.0, None, 0.0)?)?;
    let sleeper = wan.site("a")?.command("sleep").arg("300").spawn()?;
    println!("HELD {} {}", wan.run_id(), sleeper.id());
    // time is the subject: the helper holds the run until the test kills it (two minutes at most).
    std::thread::sleep(Duration::from_secs(120));
    Ok(())
}

#[test]
fn sigkilled_run_is_swept_by_the_next_start() -> anyhow::Result<()> {
    let Some(_serial) = gate("sigkilled_run_is_swept_by_the_next_start") else { return Ok(()) };
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", "cleanup::helper_hold_wan", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting helper")?;
    let stdout = child.stdout.take().context("helper stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The harness prints "test NAME ... " on the same line before the helper's output.
            if let Some(at) = line.find("HELD ") {
                let _ = tx.send(line[at..].to_string());
                return;
            }
        }
    });
    let held = rx.recv_timeout(Duration::from_secs(60));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
    child.wait()?;
    let held = held.context("helper never brought its WAN up")?;
    let mut fields = held.split_whitespace().skip(1);
    let run = fields.next().context("run id")?.to_string();
    let sleeper: i32 = fields.next().context("pid")?.parse()?;
    let prefix = format!("rkw-{run}-");

    let before = ip_netns_list()?;
    assert!(before.contains(&prefix), "the killed run should have left namespaces behind:\n{before}");
    assert!(running(sleeper), "the process started in the killed run's site should still run");

    let wan = Wan::start(preset::pair(2.0, None, 0.0)?)?;
    let after = ip_netns_list()?;
    assert!(!after.contains(&prefix), "namespaces of the killed run survived the next start:\n{after}");
    assert!(!running(sleeper), "process {sleeper} of the killed run survived the next start");
    let out = wan.site("a")?.command("ping").args(["-c", "1", "-w", "5", &wan.addr_of("b")?.to_string()]).output()?;
    assert!(out.status.success(), "the new run does not forward: {out:?}");
    let run2 = format!("rkw-{}-", wan.run_id());
    drop(wan);
    let end = ip_netns_list()?;
    assert!(!end.contains(&run2), "dropping the WAN left namespaces:\n{end}");
    Ok(())
}

#[test]
fn a_panicking_test_leaves_nothing_behind() -> anyhow::Result<()> {
    let Some(_serial) = gate("a_panicking_test_leaves_nothing_behind") else { return Ok(()) };
    let (tx, rx) = mpsc::channel();
    let outcome = std::panic::catch_unwind(move || {
        let wan = Wan::start(preset::pair(2.0, None, 0.0).expect("preset")).expect("start");
        // Reaped below with waitpid, after the WAN's teardown has killed it.
        #[allow(clippy::zombie_processes)]
        let sleeper = wan.site("b").expect("site").command("sleep").arg("300").spawn().expect("spawn");
        tx.send((wan.run_id().to_string(), sleeper.id() as i32)).expect("send");
        panic!("deliberate failure inside a test that uses a WAN");
    });
    assert!(outcome.is_err());
    let (run, sleeper) = rx.recv()?;
    let list = ip_netns_list()?;
    assert!(!list.contains(&format!("rkw-{run}-")), "namespaces left after a panic:\n{list}");
    // The sleeper is our child: reap it and see that it was killed.
    let status = nix::sys::wait::waitpid(Pid::from_raw(sleeper), None)?;
    assert!(
        matches!(status, nix::sys::wait::WaitStatus::Signaled(_, Signal::SIGTERM | Signal::SIGKILL, _)),
        "process in a site outlived the WAN: {status:?}"
    );
    assert!(!std::path::Path::new(&format!("/run/renkei-wan/runs/{run}.lock")).exists());
    Ok(())
}
