//! Background work with an explicit shape: a [`Worker`] does a bounded
//! piece of work per [`Worker::work`] call, says whether more is waiting,
//! and otherwise sleeps in [`Worker::wait_for_work`] until something (a
//! nudge, a timer) says there may be. [`run`] drives one until the exit
//! signal, which interrupts work and waiting alike.

use std::future::Future;
use tokio::sync::watch;

/// What a worker reports after a piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// More work is waiting: call `work` again right away.
    Busy,
    /// Nothing known to do: wait for work.
    Idle,
}

/// A background task driven by [`run`].
pub trait Worker: Send {
    /// Name for logs.
    fn name(&self) -> &'static str;
    /// Do one bounded piece of work.
    fn work(&mut self) -> impl Future<Output = WorkerState> + Send;
    /// Return when there may be work again.
    fn wait_for_work(&mut self) -> impl Future<Output = ()> + Send;
}

/// Drive `worker` until `exit` turns true (or its sender goes away).
pub async fn run<W: Worker>(mut worker: W, mut exit: watch::Receiver<bool>) {
    let name = worker.name();
    tracing::debug!(worker = name, "worker started");
    loop {
        if *exit.borrow() {
            break;
        }
        let state = tokio::select! {
            s = worker.work() => s,
            _ = exit.changed() => continue,
        };
        if state == WorkerState::Idle {
            tokio::select! {
                _ = worker.wait_for_work() => {}
                r = exit.changed() => if r.is_err() { break },
            }
        }
    }
    tracing::debug!(worker = name, "worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    struct Counting {
        done: Arc<AtomicU32>,
        busy_left: u32,
    }

    impl Worker for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        async fn work(&mut self) -> WorkerState {
            self.done.fetch_add(1, Ordering::SeqCst);
            if self.busy_left > 0 {
                self.busy_left -= 1;
                WorkerState::Busy
            } else {
                WorkerState::Idle
            }
        }
        async fn wait_for_work(&mut self) {
            tokio::time::sleep(Duration::from_secs(3600)).await
        }
    }

    #[tokio::test]
    async fn busy_repeats_idle_waits_and_exit_stops() {
        let done = Arc::new(AtomicU32::new(0));
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(Counting { done: done.clone(), busy_left: 3 }, rx));
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(done.load(Ordering::SeqCst), 4, "three busy rounds then one idle round");
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task).await.expect("stops on exit").unwrap();
    }
}
