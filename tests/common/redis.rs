//! A real `redis-server` on a free loopback port, started and reaped by the test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
        // Dropping `Redis` kills and reaps the child, also if it never listens.
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

    /// Starts on a port no other test of this process has (another if the one picked is
    /// taken by some other process before the server binds it).
    pub(crate) fn start() -> Self {
        for _ in 0..10 {
            if let Some(redis) = Self::try_start_on(super::ports::free_port()) {
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
    }
}
