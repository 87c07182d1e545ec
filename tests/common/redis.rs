//! A real `redis-server` on a free loopback port, started and reaped by the test.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Ports held by a `Redis` of this test process (also while stopped, awaiting a restart on
/// the same port), with how many hold each: a free port is never one of them, so one test's
/// restart cannot land on another test's fresh server.
static RESERVED: Mutex<Option<HashMap<u16, usize>>> = Mutex::new(None);

fn reserve(port: u16) {
    *RESERVED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .entry(port)
        .or_default() += 1;
}

fn release(port: u16) {
    let mut reserved = RESERVED.lock().unwrap_or_else(PoisonError::into_inner);
    let map = reserved.get_or_insert_with(HashMap::new);
    if let Some(count) = map.get_mut(&port) {
        *count -= 1;
        if *count == 0 {
            map.remove(&port);
        }
    }
}

fn is_reserved(port: u16) -> bool {
    RESERVED.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|m| m.contains_key(&port))
}

/// A running `redis-server`; dropping it kills and reaps the process.
pub(crate) struct Redis {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
}

impl Redis {
    /// Starts on `port` (also used to restart on the same port).
    pub(crate) fn start_on(port: u16) -> Self {
        Self::try_start_on(port).unwrap_or_else(|| panic!("redis-server could not listen on 127.0.0.1:{port}"))
    }

    /// Starts on `port`; `None` when the server exits (the port is taken) or never answers.
    /// Ready means *this* process answers: another test's server may hold a port that was
    /// free a moment ago, so the answer's `process_id` must be the child's.
    fn try_start_on(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); install redis-server: apt-get install -y redis-server \
                     (scripts/deps/redis.sh)"
                )
            });
        // Dropping `Redis` kills and reaps the child (and releases the port), also if it
        // never listens.
        reserve(port);
        let mut redis = Self { child, port };
        for _ in 0..200 {
            if redis.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            if redis.answers_as_itself() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    /// True when the server on `port` is this child (`INFO server` names its process id).
    fn answers_as_itself(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"INFO server\r\n").is_err() {
            return false;
        }
        let expected = format!("process_id:{}", self.child.id());
        let (mut text, mut buf) = (String::new(), [0u8; 4096]);
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(line) = text.lines().find(|l| l.starts_with("process_id:")) {
                return line.trim() == expected;
            }
        }
        false
    }

    /// Starts on a free port (another if the one picked is taken before the server binds it).
    pub(crate) fn start() -> Self {
        for _ in 0..10 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if is_reserved(port) {
                continue;
            }
            if let Some(redis) = Self::try_start_on(port) {
                return redis;
            }
        }
        panic!("redis-server could not listen on any of 10 free loopback ports");
    }

    /// Kills the server.
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        release(self.port);
    }
}
