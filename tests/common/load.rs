//! A steady, bounded load of calls on loopback, and the tally of what every caller saw:
//! sent, answered by status (with the whole body read), failed at the connection level.
#![allow(dead_code)] // the soak uses a subset

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Builds the request a worker sends next (`worker` is its index).
pub(crate) type MakeCall = Arc<dyn Fn(usize) -> reqwest::RequestBuilder + Send + Sync>;

/// What one caller saw.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// When the call was sent.
    pub sent: Instant,
    /// When the answer was complete (or the call failed).
    pub done: Instant,
    /// The status, when a complete answer arrived.
    pub status: Option<u16>,
    /// `x-request-id` of the answer.
    pub id: Option<String>,
    /// SHA-256 of the `x-api-key` the reporting upstream received, when it reported one.
    pub digest: Option<String>,
    /// Why the call failed at the connection level (no answer, or an answer cut short).
    pub error: Option<String>,
}

/// Sends one call and reads its whole answer.
pub(crate) async fn one(request: reqwest::RequestBuilder) -> Outcome {
    let sent = Instant::now();
    let (status, id, digest, error) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
            match response.bytes().await {
                Ok(body) => {
                    let digest = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|report| report["headers"]["x-api-key"][0].as_str().map(str::to_owned));
                    (Some(status), id, digest, None)
                }
                Err(e) => (None, id, None, Some(format!("answer cut short after {status}: {e}"))),
            }
        }
        Err(e) => (None, None, None, Some(format!("{e:?}"))),
    };
    Outcome { sent, done: Instant::now(), status, id, digest, error }
}

/// `workers` callers, each sending one call at a time with `pace` between calls, until
/// [`Load::finish`].
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    pub(crate) fn start(workers: usize, pace: Duration, make: &MakeCall) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|worker| {
                let (stop, make) = (stop.clone(), make.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        seen.push(one(make(worker)).await);
                        tokio::time::sleep(pace).await;
                    }
                    seen
                })
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops sending, waits for the calls in flight, and returns everything seen.
    pub(crate) async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut outcomes = Vec::new();
        for worker in self.workers {
            outcomes.extend(worker.await.expect("a load worker panicked"));
        }
        outcomes.sort_by_key(|o| o.sent);
        Tally { outcomes }
    }
}

/// Every call of a load, in the order sent.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub outcomes: Vec<Outcome>,
}

impl Tally {
    pub(crate) fn sent(&self) -> usize {
        self.outcomes.len()
    }

    /// Answers by status.
    pub(crate) fn by_status(&self) -> BTreeMap<u16, usize> {
        let mut counts = BTreeMap::new();
        for status in self.outcomes.iter().filter_map(|o| o.status) {
            *counts.entry(status).or_insert(0) += 1;
        }
        counts
    }

    /// Calls that got no complete answer.
    pub(crate) fn failed(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| o.error.is_some()).collect()
    }

    /// Answers that are not `status`.
    pub(crate) fn other_than(&self, status: u16) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| o.status.is_some_and(|s| s != status)).collect()
    }

    /// One line for the test log: `row: sent N, 200 x, 503 y, connection failures z`.
    pub(crate) fn summary(&self, row: &str) -> String {
        let statuses: Vec<String> = self.by_status().iter().map(|(s, n)| format!("{s} {n}")).collect();
        format!("{row}: sent {}, answered {{{}}}, failed at connection level {}", self.sent(), statuses.join(", "), {
            self.failed().len()
        })
    }

    /// Asserts a steady load really ran: at least `min` calls.
    pub(crate) fn assert_load(&self, row: &str, min: usize) {
        assert!(self.sent() >= min, "{row}: only {} calls were sent (expected at least {min})", self.sent());
    }

    /// Asserts a steady load of at least `min` calls ran and every call was answered 200:
    /// no connection failure, no other status.
    pub(crate) fn assert_all_ok(&self, row: &str, min: usize) {
        self.assert_load(row, min);
        assert!(self.failed().is_empty(), "{row}: connection failures: {:?}", self.failed());
        assert!(self.other_than(200).is_empty(), "{row}: calls not answered 200: {:?}", self.other_than(200));
    }
}

/// Asserts that every answered call has a run record with the same status ("nothing
/// lost"): the ring must hold them all (the test policies set `[audit] ring` high).
/// `/runs` answers at most 1,000 records, so ids not in the newest page are asked for
/// one by one (`/runs/{id}`).
pub(crate) async fn assert_recorded(admin_runs: &str, tally: &Tally) {
    let answered: Vec<(&str, u16)> =
        tally.outcomes.iter().filter_map(|o| Some((o.id.as_deref()?, o.status?))).collect();
    let with_status = tally.outcomes.iter().filter(|o| o.status.is_some()).count();
    assert_eq!(answered.len(), with_status, "an answer came without an x-request-id");
    let ids: HashSet<&str> = answered.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), answered.len(), "two answers share an x-request-id");
    let mut status_of: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..100 {
        let page: Vec<serde_json::Value> =
            reqwest::get(format!("{admin_runs}?limit=1000")).await.unwrap().json().await.unwrap();
        for record in &page {
            if let (Some(id), Some(status)) = (record["id"].as_str(), record["status"].as_u64()) {
                status_of.insert(id.to_owned(), status);
            }
        }
        let unseen: Vec<&str> = ids.iter().copied().filter(|id| !status_of.contains_key(*id)).collect();
        for id in unseen {
            let response = reqwest::get(format!("{admin_runs}/{id}")).await.unwrap();
            if response.status() == reqwest::StatusCode::OK {
                let record: serde_json::Value = response.json().await.unwrap();
                status_of.insert(id.to_owned(), record["status"].as_u64().expect("a run record without status"));
            }
        }
        if ids.iter().all(|id| status_of.contains_key(*id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing: Vec<&&str> = ids.iter().filter(|id| !status_of.contains_key(**id)).collect();
    assert!(missing.is_empty(), "{} answered calls have no run record, e.g. {:?}", missing.len(), missing.first());
    for (id, status) in answered {
        assert_eq!(status_of.get(id).copied(), Some(u64::from(status)), "run record of {id}");
    }
}
