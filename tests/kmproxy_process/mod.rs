//! A `kmproxy` of the test's own, run as the real binary
//! (`CARGO_BIN_EXE_kmproxy`) with a config file in a temp dir of its own:
//! its stderr is collected line by line, its two listeners (bound to port 0
//! by the config) are read from its `listening` log lines, and it is
//! killed and reaped on drop, even when the test panics half-way through
//! starting it, so no test leaves a process behind.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `kmproxy` process and everything it wrote to stderr.
pub struct KmproxyProcess {
    child: KillOnDrop,
    lines: Arc<Mutex<Vec<String>>>,
    /// The data port.
    pub proxy: SocketAddr,
    /// The admin port.
    pub admin: SocketAddr,
    /// Its config file (a test may rewrite it and send SIGHUP).
    pub config: PathBuf,
    /// Holds the config and any secret files beside it.
    dir: tempfile::TempDir,
}

/// The child, killed and reaped when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl KmproxyProcess {
    /// Runs `kmproxy --config DIR/kmproxy.toml ARGS` with `env` set
    /// (`RUST_LOG` is `info` unless `env` says otherwise). `write` gets the
    /// fresh temp dir, may write secret files into it, and returns the
    /// config text. Waits (10 s at most) until both listeners are logged.
    pub async fn start(write: impl FnOnce(&Path) -> String, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kmproxy.toml");
        std::fs::write(&config, write(dir.path())).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kmproxy"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("KMPROXY_CONFIG")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let child = KillOnDrop(child);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let find = |what: &str| listening_addr(&lines.lock().unwrap(), what);
        let deadline = Instant::now() + Duration::from_secs(10);
        while find("kmproxy listening").is_none() || find("admin listening").is_none() {
            assert!(
                Instant::now() < deadline,
                "kmproxy did not start within 10 s:\n{}",
                lines.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (proxy, admin) = (find("kmproxy listening").unwrap(), find("admin listening").unwrap());
        KmproxyProcess {
            child,
            lines,
            proxy,
            admin,
            config,
            dir,
        }
    }

    /// The temp dir its config lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Sends `sig` (`-HUP`, `-TERM`, `-STOP` …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig}");
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Its exit code once it has exited, `None` if still running after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// The `127.0.0.1:PORT` on the first line holding `what`.
fn listening_addr(lines: &[String], what: &str) -> Option<SocketAddr> {
    let line = lines.iter().find(|l| l.contains(what))?;
    let at = line.find("127.0.0.1:")?;
    let addr: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.parse().ok()
}
