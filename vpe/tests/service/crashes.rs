//! Issue 13 (faults mid-operation): the VM manager and a PoP's agent
//! killed in the middle of `vpe run`, each at an exact moment (a crash
//! point, `RENKEI_CRASH_AT`), then started again. Afterwards the registry
//! and the PoP agree (the VM is listed as running exactly when its domain
//! runs), `vpe stop` removes it, and nothing is left on the PoP.

use anyhow::{ensure, Context, Result};
use fs_proto::vpe::{VmInfo, VmPhase};
use std::time::Duration;

use crate::bounded;
use crate::harness::{enabled, Setup, Stack};

/// `vpe ls` as alice until `vm` is in `phase`, at most `bound`: asked
/// again whenever a process of the federation logs (the manager logs each
/// change a PoP's report makes to a VM's state), never on a timer.
fn wait_phase(s: &Stack, vm: &str, phase: VmPhase, bound: Duration) -> Result<VmInfo> {
    let mut last = Ok(None);
    let reached = tests::wait_inotify(&s.fed().join("logs"), libc::IN_MODIFY, bound, || {
        last = s.vpe_ok("alice", &["ls"]).and_then(|out| {
            let vms: Vec<VmInfo> = serde_json::from_str(&out)?;
            Ok(vms.into_iter().find(|v| v.name == vm))
        });
        // Done when there, or when `vpe ls` fails (returned below).
        last.is_err() || matches!(&last, Ok(Some(v)) if v.phase == phase)
    });
    let found = last?;
    ensure!(reached, "{vm} is {found:?} after {bound:?}, expected {phase}");
    found.context("listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_killed_mid_run_comes_back_agreeing_with_its_pop() -> Result<()> {
    let Some(lock) = enabled("a_manager_killed_mid_run_comes_back_agreeing_with_its_pop").await else { return Ok(()) };
    bounded(600, async {
        let s = Stack::start(lock, Setup::new(1, 1)).await?;
        s.register("alice", "good", &[])?;
        // The agent booted the VM and answered; the manager dies before it
        // records the answer: its registry says "starting".
        s.arm_crash("vpe", "vpe.manager.run.answered").await?;
        let e = s.vpe_err("alice", &["run", "--site", "site1", "--image", "good", "--name", "m1"])?;
        eprintln!("run with the manager dying: {e}");
        s.restart_after_crash("vpe").await?;
        // Not stuck "starting": lost until the PoP reports it, then running.
        let vm = wait_phase(&s, "m1", VmPhase::Running, Duration::from_secs(60))?;
        eprintln!("after the manager's restart: {vm:?}");
        let again = s.vpe_err("alice", &["run", "--site", "site1", "--image", "good", "--name", "m1"])?;
        ensure!(again.contains("m1"), "a second m1 must be refused: {again}");
        s.vpe_ok("alice", &["stop", "m1"])?;
        s.assert_gone("m1.alice")?;
        s.assert_pops_empty()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_run_leaves_a_vm_that_stop_removes() -> Result<()> {
    let Some(lock) = enabled("an_agent_killed_mid_run_leaves_a_vm_that_stop_removes").await else { return Ok(()) };
    bounded(600, async {
        let s = Stack::start(lock, Setup::new(1, 1)).await?;
        s.register("alice", "good", &[])?;
        let agent = format!("vpe-{}", s.pops().first().context("a PoP")?);
        // The agent started the domain and dies before answering.
        s.arm_crash(&agent, "vpe.agent.run.started").await?;
        let e = s.vpe_err("alice", &["run", "--site", "site1", "--image", "good", "--name", "a1"])?;
        eprintln!("run with the agent dying: {e}");
        ensure!(e.contains("vpe stop a1"), "the error says how to remove what may be left: {e}");
        s.restart_after_crash(&agent).await?;
        // The new agent finds the VM its predecessor started and reports it.
        let vm = wait_phase(&s, "a1", VmPhase::Running, Duration::from_secs(60))?;
        eprintln!("after the agent's restart: {vm:?}");
        s.vpe_ok("alice", &["stop", "a1"])?;
        s.assert_gone("a1.alice")?;
        let vms: Vec<VmInfo> = serde_json::from_str(&s.vpe_ok("alice", &["ls"])?)?;
        ensure!(vms.is_empty(), "stopped VMs left registry entries: {vms:?}");
        s.assert_pops_empty()
    })
    .await
}
