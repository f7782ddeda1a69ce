//! Acceptance 5: two PoPs at one site. Consecutive runs alternate between
//! them, and a run after a stop goes to the less loaded PoP (where round
//! robin alone would have chosen the other).

use anyhow::{ensure, Result};

use crate::bounded;
use crate::harness::{enabled, Setup, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_alternate_and_then_go_to_the_least_loaded_pop() -> Result<()> {
    let Some(lock) = enabled("runs_alternate_and_then_go_to_the_least_loaded_pop").await else { return Ok(()) };
    bounded(900, async {
        let s = Stack::start(lock, Setup::new(1, 2)).await?;
        ensure!(s.pops() == ["pop1-1", "pop1-2"], "{:?}", s.pops());
        s.register("alice", "deb", &[])?;
        let mut placed = Vec::new();
        for name in ["a", "b", "c", "d"] {
            let vm = s.run("alice", &["--site", "site1", "--image", "deb", "--name", name])?;
            ensure!(s.console("alice", name)?.booted);
            placed.push(vm.pop);
        }
        ensure!(placed == ["pop1-1", "pop1-2", "pop1-1", "pop1-2"], "placements: {placed:?}");
        let loads: Vec<(String, u32)> = s.pop_infos()?.into_iter().map(|p| (p.name, p.vms)).collect();
        ensure!(loads == [("pop1-1".into(), 2), ("pop1-2".into(), 2)], "{loads:?}");

        // pop1-2 now holds one VM, pop1-1 two; the last choice was pop1-2, so
        // round robin would pick pop1-1: least loaded picks pop1-2.
        s.vpe_ok("alice", &["stop", "b"])?;
        s.assert_gone("b.alice")?;
        let e = s.run("alice", &["--site", "site1", "--image", "deb", "--name", "e"])?;
        ensure!(e.pop == "pop1-2", "after a stop on pop1-2 the next run went to {}", e.pop);
        ensure!(e.timings.is_some_and(|t| t.fetched_bytes == 0), "pop1-2 had the image cached already");

        for name in ["a", "c", "d", "e"] {
            s.vpe_ok("alice", &["stop", name])?;
        }
        s.assert_pops_empty()
    })
    .await
}
