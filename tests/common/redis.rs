//! A real `redis-server` on a free loopback port, started and reaped by the test.

use std::net::TcpListener;
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
        let redis = Self { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not listen on 127.0.0.1:{port}");
    }

    /// Starts on a free port.
    pub(crate) fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port)
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
