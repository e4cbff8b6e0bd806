//! A `redis-server` of the test's own: a free loopback port, a config and
//! data dir in a temp dir, no persistence; killed (and reaped) on drop.
//! Never a system server: it is always started here, on a port the test
//! asked the kernel for.
//!
//! [`RedisServer::start`] returns `None`, saying why, when `redis-server`
//! is not installed and `KMPROXY_REQUIRE_REDIS` is unset (CI sets it, so
//! there a missing server fails the tests instead of skipping them).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or deliberately stopped) redis-server.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Listening with TLS only (then readiness is a TCP connect).
    tls: bool,
    dir: tempfile::TempDir,
    /// Another temp dir to keep as long as the server (its certificate).
    keep: Option<tempfile::TempDir>,
    conf: PathBuf,
}

/// The password of the `admin` user a server with ACL users also gets.
pub const ADMIN_PASSWORD: &str = "admin-pw-for-tests";

impl RedisServer {
    /// A server with the default user open (no auth).
    pub fn start() -> Option<Self> {
        Self::with_config(&[])
    }

    /// A server whose `default` user is off, with an `admin` user (all
    /// keys and channels, password [`ADMIN_PASSWORD`]) and `users`, each
    /// an ACL rule line such as `kmproxy on >pw ~kmproxy:* &kmproxy:* +@all`.
    pub fn with_users(users: &[&str]) -> Option<Self> {
        let admin = format!("user admin on >{ADMIN_PASSWORD} ~* &* +@all");
        let mut lines = vec!["user default off".to_owned(), admin];
        lines.extend(users.iter().map(|u| format!("user {u}")));
        Self::with_config(&lines.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// A server that speaks only TLS on its port, with a self-signed
    /// certificate for `localhost` (made by `openssl`; `None`, saying so,
    /// if that is not installed).
    pub fn with_tls() -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-addext", "subjectAltName=DNS:localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: openssl is not installed to make a test certificate");
            return None;
        }
        let lines = [
            "port 0".to_owned(),
            "tls-port $PORT".to_owned(),
            format!("tls-cert-file {}", cert.display()),
            format!("tls-key-file {}", key.display()),
            "tls-auth-clients no".to_owned(),
        ];
        let mut server = Self::with_config(&lines.iter().map(String::as_str).collect::<Vec<_>>())?;
        server.tls = true;
        server.keep = Some(dir);
        Some(server)
    }

    /// A server with extra config `lines` (`$PORT` stands for its port).
    pub fn with_config(lines: &[&str]) -> Option<Self> {
        if !installed() {
            let why = "redis-server is not installed (apt-get install redis-server)";
            assert!(
                std::env::var_os("KMPROXY_REQUIRE_REDIS").is_none(),
                "{why}, and KMPROXY_REQUIRE_REDIS is set"
            );
            eprintln!("skipped: {why}");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\ndaemonize no\nprotected-mode yes\n",
            dir.path().display()
        );
        for line in lines {
            conf.push_str(&line.replace("$PORT", &port.to_string()));
            conf.push('\n');
        }
        let path = dir.path().join("redis.conf");
        std::fs::write(&path, conf).expect("write redis.conf");
        let tls = lines.iter().any(|l| l.starts_with("tls-port"));
        let mut server = Self {
            child: None,
            port,
            tls,
            dir,
            keep: None,
            conf: path,
        };
        server.launch();
        Some(server)
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A URL with credentials, for the test's own raw client only.
    pub fn admin_url(&self) -> String {
        format!("redis://admin:{ADMIN_PASSWORD}@127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir (for secret files a test writes).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills the server at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, same port and config (the data is gone).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill(1)")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log file");
        let child = Command::new("redis-server")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        self.wait_until_answering();
    }

    /// Until the server answers a `PING` (with `PONG` or an auth error).
    fn wait_until_answering(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server exited ({status}):\n{log}");
            }
            let up = if self.tls {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                answers(self.port)
            };
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer within 10 s", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Whether something on `port` answers `PING` like Redis.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 64];
    s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0 && matches!(buf[0], b'+' | b'-'))
}
