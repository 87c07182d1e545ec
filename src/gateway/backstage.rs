//! The backstage thread: one OS thread per gateway, below the serving threads in CPU
//! priority, for the heavy work no call waits on: compiling a reloaded policy and freeing
//! the policies it replaced.
//!
//! Running that work on tokio's blocking pool kept it off the serving threads but not off
//! their cores: pinned to one core, a half-second compile of a large estate took half of
//! that core's time for as long as it ran, and the p99 of calls during reloads rose to
//! almost three times the steady one. At nice [`NICE`] the scheduler gives the compile
//! about a tenth of a busy core and all of an idle one, so a reload under full load takes
//! longer and calls barely notice it.
//!
//! A thread of its own rather than a niced blocking-pool thread, because an unprivileged
//! process cannot raise a thread's priority back: the pool would keep a slow thread for
//! unrelated work.

use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender};

/// The backstage thread's nice value (Linux: per thread; 0 is the serving threads'). At 10
/// the kernel weighs it 110 against their 1024.
pub(crate) const NICE: i32 = 10;

/// The thread's name, as `/proc/<pid>/task/<tid>/comm` shows it.
pub(crate) const THREAD_NAME: &str = "fg-backstage";

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A handle to the backstage thread, started by the first job. Dropping the handle ends
/// the thread once its queued jobs are done.
#[derive(Default)]
pub(crate) struct Backstage {
    jobs: OnceLock<Sender<Job>>,
}

impl std::fmt::Debug for Backstage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backstage").field("started", &self.jobs.get().is_some()).finish()
    }
}

impl Backstage {
    /// Queues `job`; jobs run one at a time, in order. If the thread cannot be started (the
    /// system is out of threads), the job runs here, on the caller's thread, rather than
    /// never.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) {
        let jobs = self.jobs.get_or_init(start);
        if let Err(mpsc::SendError(job)) = jobs.send(Box::new(job)) {
            job();
        }
    }
}

fn start() -> Sender<Job> {
    let (sender, receiver) = mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new().name(THREAD_NAME.to_owned()).spawn(move || {
        lower_own_priority();
        while let Ok(job) = receiver.recv() {
            // A job that panics (its callers see their answer channel close) must not take
            // every later reload with it.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                tracing::error!("a backstage job panicked; the thread carries on");
            }
        }
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "the backstage thread cannot start; its work runs on the caller's thread");
    }
    sender
}

/// Lowers the calling thread's priority: on Linux `setpriority(PRIO_PROCESS, tid)` acts on
/// one thread. Failing leaves the thread at the serving threads' priority, which costs
/// latency during reloads and nothing else.
fn lower_own_priority() {
    let current = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0);
    if let Err(error) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), current.max(NICE)) {
        tracing::warn!(%error, "cannot lower the backstage thread's priority; reloads will compete with calls");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    /// The nice value of the thread named `name` in this process, read from `/proc`.
    fn nice_of_thread(name: &str) -> Option<i32> {
        std::fs::read_dir("/proc/self/task").ok()?.flatten().find_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            if comm.trim_end() != name {
                return None;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the parenthesised name: state is field 3; nice is field 19.
            let after_name = &stat[stat.rfind(')')? + 2..];
            after_name.split(' ').nth(19 - 3)?.parse().ok()
        })
    }

    #[test]
    fn jobs_run_in_order_on_a_lowered_thread_and_survive_a_panic() {
        let backstage = Backstage::default();
        let (done, finished) = channel();
        backstage.run(|| panic!("a failing job"));
        for n in 0..5 {
            let done = done.clone();
            backstage.run(move || {
                let name = std::thread::current().name().map(str::to_owned);
                done.send((n, name, nice_of_thread(THREAD_NAME))).unwrap();
            });
        }
        let seen: Vec<_> = (0..5).map(|_| finished.recv().unwrap()).collect();
        for (expected, (n, name, nice)) in seen.into_iter().enumerate() {
            assert_eq!(n, expected, "jobs run in the order they were queued");
            assert_eq!(name.as_deref(), Some(THREAD_NAME));
            assert!(nice.is_some_and(|nice| nice >= NICE), "backstage nice value {nice:?}, wanted at least {NICE}");
        }
        assert_eq!(nice_of_thread("flowgate-nothing"), None);
    }
}
