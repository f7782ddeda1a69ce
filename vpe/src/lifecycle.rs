//! The VM lifecycle as a sans-IO state machine.
//!
//! ```text
//! Defined --Run--> Staging --Staged--> Booting --Booted--> Running
//!                     |                   |                   |
//!                     +------ Stop -------+------- Stop ------+--> Stopping --Cleaned--> Stopped
//!                     +------ Fail -------+------- Fail ------+--> Failed (after cleanup actions)
//! ```
//!
//! [`Lifecycle::on`] takes an event and the current time and returns the
//! [`Action`]s the driver ([`crate::host::VmHost`]) must perform; it never
//! does I/O and never reads the clock, so every path, including every
//! failure path's cleanup, is unit-tested here. The recorded transition
//! times give the timings a boot reports.

use std::fmt;
use std::time::{Duration, Instant};

use crate::error::TransitionError;

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VmState {
    /// Accepted, nothing done yet.
    Defined,
    /// Image being fetched/verified; overlay, swap and seed being made.
    Staging,
    /// Domain started, waiting for the guest's boot marker.
    Booting,
    /// The guest reported it booted.
    Running,
    /// Being destroyed and cleaned up.
    Stopping,
    /// Gone, nothing left on the PoP.
    Stopped,
    /// Failed; the failure's cleanup actions were issued.
    Failed,
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What happened to a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The user asked to run it.
    Run,
    /// Image staged and local files prepared.
    Staged,
    /// The boot marker appeared on the console.
    Booted,
    /// The user asked to stop it.
    Stop,
    /// Stop's cleanup finished.
    Cleaned,
    /// Something failed (the reason is kept).
    Fail(String),
}

/// What the driver must do next, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Fetch/verify the image and create overlay, swap and seed.
    Stage,
    /// Ensure the segments' networks, define and start the domain.
    StartDomain,
    /// Wait (bounded) for the boot marker.
    WatchConsole,
    /// Destroy and undefine the domain.
    DestroyDomain,
    /// Remove every local file of the VM.
    RemoveFiles,
    /// Remove segment networks no other VM uses.
    ReleaseNetworks,
}

/// A VM's state, its history and its failure reason.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    state: VmState,
    history: Vec<(VmState, Instant)>,
    failure: Option<String>,
}

const TEARDOWN: [Action; 3] = [Action::DestroyDomain, Action::RemoveFiles, Action::ReleaseNetworks];

impl Lifecycle {
    /// A new VM in [`VmState::Defined`] at `now`.
    pub fn new(now: Instant) -> Self {
        Self { state: VmState::Defined, history: vec![(VmState::Defined, now)], failure: None }
    }

    /// The current state.
    pub fn state(&self) -> VmState {
        self.state
    }

    /// Why the VM failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Applies `event` at `now`, returning the actions to perform.
    pub fn on(&mut self, event: Event, now: Instant) -> Result<Vec<Action>, TransitionError> {
        use VmState::*;
        let (next, actions) = match (self.state, &event) {
            (Defined, Event::Run) => (Staging, vec![Action::Stage]),
            (Staging, Event::Staged) => (Booting, vec![Action::StartDomain, Action::WatchConsole]),
            (Booting, Event::Booted) => (Running, vec![]),
            (Defined, Event::Stop) => (Stopped, vec![]),
            // While staging no domain exists yet; networks are only touched when starting.
            (Staging, Event::Stop) => (Stopping, vec![Action::RemoveFiles]),
            (Booting | Running | Failed, Event::Stop) => (Stopping, TEARDOWN.to_vec()),
            (Stopping, Event::Cleaned) => (Stopped, vec![]),
            (Defined, Event::Fail(_)) => (Failed, vec![]),
            (Staging, Event::Fail(_)) => (Failed, vec![Action::RemoveFiles]),
            (Booting | Running, Event::Fail(_)) => (Failed, TEARDOWN.to_vec()),
            // Cleanup itself failed: stay failed; a later Stop retries the teardown.
            (Stopping, Event::Fail(_)) => (Failed, vec![]),
            (state, event) => {
                return Err(TransitionError { state: state.to_string(), event: format!("{event:?}") });
            }
        };
        if let Event::Fail(reason) = event {
            self.failure = Some(reason);
        }
        self.state = next;
        self.history.push((next, now));
        Ok(actions)
    }

    /// When the VM last entered `state`.
    pub fn entered(&self, state: VmState) -> Option<Instant> {
        self.history.iter().rev().find(|(s, _)| *s == state).map(|(_, t)| *t)
    }

    /// Time from the run request until the domain was started (Staging → Booting).
    pub fn prepare_time(&self) -> Option<Duration> {
        Some(self.entered(VmState::Booting)?.duration_since(self.entered(VmState::Staging)?))
    }

    /// Time from the domain's start to the guest's boot marker (Booting → Running).
    pub fn boot_time(&self) -> Option<Duration> {
        Some(self.entered(VmState::Running)?.duration_since(self.entered(VmState::Booting)?))
    }

    /// True if the VM's disk may be saved now.
    pub fn can_save(&self) -> bool {
        self.state == VmState::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn happy_path_and_timings() {
        let t = Instant::now();
        let mut vm = Lifecycle::new(t);
        assert_eq!(vm.on(Event::Run, at(t, 10)).unwrap(), vec![Action::Stage]);
        assert_eq!(vm.on(Event::Staged, at(t, 310)).unwrap(), vec![Action::StartDomain, Action::WatchConsole]);
        assert!(!vm.can_save());
        assert_eq!(vm.on(Event::Booted, at(t, 3310)).unwrap(), vec![]);
        assert!(vm.can_save());
        assert_eq!(vm.prepare_time(), Some(Duration::from_millis(300)));
        assert_eq!(vm.boot_time(), Some(Duration::from_secs(3)));
        assert_eq!(vm.on(Event::Stop, at(t, 4000)).unwrap(), TEARDOWN.to_vec());
        assert_eq!(vm.state(), VmState::Stopping);
        vm.on(Event::Cleaned, at(t, 4100)).unwrap();
        assert_eq!(vm.state(), VmState::Stopped);
    }

    #[test]
    fn every_failure_cleans_up_what_exists_at_that_point() {
        let t = Instant::now();
        let mut staging = Lifecycle::new(t);
        staging.on(Event::Run, t).unwrap();
        assert_eq!(staging.on(Event::Fail("hash".into()), t).unwrap(), vec![Action::RemoveFiles]);
        assert_eq!(staging.failure(), Some("hash"));

        let mut booting = Lifecycle::new(t);
        booting.on(Event::Run, t).unwrap();
        booting.on(Event::Staged, t).unwrap();
        assert_eq!(booting.on(Event::Fail("timeout".into()), t).unwrap(), TEARDOWN.to_vec());
        assert_eq!(booting.state(), VmState::Failed);
        assert_eq!(booting.boot_time(), None);
        // A failed VM can still be stopped (teardown is idempotent).
        assert_eq!(booting.on(Event::Stop, t).unwrap(), TEARDOWN.to_vec());
    }

    #[test]
    fn illegal_transitions_are_refused_without_changing_state() {
        let t = Instant::now();
        let mut vm = Lifecycle::new(t);
        assert!(vm.on(Event::Booted, t).is_err());
        assert!(vm.on(Event::Staged, t).is_err());
        assert_eq!(vm.state(), VmState::Defined);
        vm.on(Event::Stop, t).unwrap();
        assert_eq!(vm.state(), VmState::Stopped);
        assert!(vm.on(Event::Run, t).is_err(), "a stopped VM is not restarted");
        assert!(vm.on(Event::Stop, t).is_err());
    }
}
