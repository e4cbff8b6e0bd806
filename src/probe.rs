//! `kmproxy probe [--ready]`: the container health check that needs no
//! curl (PRODUCT.md §6). The binary probes its own admin port: one plain
//! HTTP/1.1 `GET /healthz` (or `/readyz`) with `Host: 127.0.0.1` (the admin
//! port's Host rule lets IP literals pass), within one total timeout.
//!
//! A 200 exits 0; anything else exits 1 with one line on stderr saying why.
//! Every failure is 1, an unreadable config included, because Docker's
//! `HEALTHCHECK` reserves exit status 2.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;

use crate::config::Config;

/// `println!` and `eprintln!` through [`crate::output`]:
/// a reader that has gone (`kmproxy check | head -1`) is no panic.
macro_rules! outln {
    ($($t:tt)*) => { crate::output::out(format_args!("{}\n", format_args!($($t)*))) };
}
macro_rules! errln {
    ($($t:tt)*) => { crate::output::err(format_args!("{}\n", format_args!($($t)*))) };
}

/// The flags of `kmproxy probe`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Probe GET /readyz (200 once the integration token is held) instead of GET /healthz.
    #[arg(long)]
    pub ready: bool,
    /// Admin address to probe, as IP:PORT (e.g. 127.0.0.1:9090); overrides the config's
    /// server.admin_listen, and no config is read. 0.0.0.0 or [::] is probed on loopback.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Total time for connecting, asking and reading the answer.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// Bodies longer than this are not read further: only the first line is shown.
const MAX_BODY: usize = 4096;

/// Why a probe failed; each is the one line printed on stderr.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot read the admin address: {0}")]
    Config(String),
    #[error("server.admin_listen is \"off\" in {0}: there is no admin port to probe (--admin ADDR names one)")]
    AdminOff(PathBuf),
    #[error("nothing listens on {addr} (connection refused)")]
    Refused { addr: SocketAddr },
    #[error("no answer from {addr} within {}", humantime::format_duration(*.timeout))]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
    #[error("no HTTP answer from {addr}: {source}")]
    Http { addr: SocketAddr, source: hyper::Error },
    #[error("GET {path} on {addr} answered {status}: {first_line}")]
    Status {
        addr: SocketAddr,
        path: &'static str,
        status: u16,
        first_line: String,
    },
}

/// Runs the probe on a runtime of its own (one thread: it runs every few
/// seconds in every container).
pub fn main(config: &Path, args: &ProbeArgs) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run(config, args)),
        Err(e) => {
            errln!("kmproxy probe: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Probes and prints its one line: on stdout after a 200, else on stderr.
pub async fn run(config: &Path, args: &ProbeArgs) -> ExitCode {
    match probe(config, args).await {
        Ok(line) => {
            outln!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("kmproxy probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Probes the admin port named by `args.admin`, else by the config at
/// `config`; on a 200, the line to print.
pub async fn probe(config: &Path, args: &ProbeArgs) -> Result<String, ProbeError> {
    let addr = loopback_if_unspecified(match args.admin {
        Some(a) => a,
        None => admin_listen(config)?,
    });
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let timeout = args.timeout;
    let (status, first_line) = tokio::time::timeout(timeout, get(addr, path))
        .await
        .map_err(|_| ProbeError::Timeout { addr, timeout })??;
    if status == 200 {
        Ok(format!("GET {path} on {addr}: 200 {first_line}"))
    } else {
        Err(ProbeError::Status {
            addr,
            path,
            status,
            first_line,
        })
    }
}

/// `server.admin_listen` of the config at `path`, read as every command
/// reads its config.
fn admin_listen(path: &Path) -> Result<SocketAddr, ProbeError> {
    let config = Config::load(path).map_err(|e| {
        let first = e.problems.first().map_or(String::new(), |(k, p)| format!(": {k}: {p}"));
        let more = match e.problems.len() {
            0 | 1 => String::new(),
            n => format!(" (and {} more; `kmproxy check` lists them)", n - 1),
        };
        ProbeError::Config(format!("{}{first}{more}", e.path.display()))
    })?;
    config
        .server
        .admin_listen
        .ok_or_else(|| ProbeError::AdminOff(path.to_owned()))
}

/// An unspecified address (`0.0.0.0`, `::`) listens on loopback too: probe it there.
pub fn loopback_if_unspecified(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// One `GET path` on a fresh connection: the status and the body's first line.
async fn get(addr: SocketAddr, path: &'static str) -> Result<(u16, String), ProbeError> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::ConnectionRefused => ProbeError::Refused { addr },
            _ => ProbeError::Connect { addr, source },
        })?;
    let not_http = |source| ProbeError::Http { addr, source };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(not_http)?;
    let conn = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, "127.0.0.1")
        .header(
            http::header::USER_AGENT,
            concat!("kmproxy-probe/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    let res = sender.send_request(req).await.map_err(not_http)?;
    let status = res.status().as_u16();
    let body = match Limited::new(res.into_body(), MAX_BODY).collect().await {
        Ok(b) => first_line(&b.to_bytes()),
        Err(_) => "(body unreadable)".to_owned(),
    };
    conn.abort();
    Ok((status, body))
}

/// The first line of `body`, printable and at most 200 characters.
fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or("").trim();
    let line: String = line.chars().filter(|c| !c.is_control()).take(200).collect();
    if line.is_empty() {
        "(empty body)".to_owned()
    } else {
        line
    }
}

/// `--timeout`: a humantime duration above zero, at most a minute.
fn parse_timeout(v: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(v).map_err(|e| format!("{e} (e.g. 2s, 500ms)"))?;
    if d.is_zero() || d > Duration::from_secs(60) {
        return Err("must be above zero and at most 60s".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9090".parse().expect("addr");
        assert_eq!(loopback_if_unspecified(v4).to_string(), "127.0.0.1:9090");
        let v6: SocketAddr = "[::]:9090".parse().expect("addr");
        assert_eq!(loopback_if_unspecified(v6).to_string(), "[::1]:9090");
        let pod: SocketAddr = "10.1.2.3:9090".parse().expect("addr");
        assert_eq!(loopback_if_unspecified(pod), pod);
    }

    #[test]
    fn the_first_line_is_printable_and_short() {
        assert_eq!(
            first_line(b"not ready: no integration token yet\nmore"),
            "not ready: no integration token yet"
        );
        assert_eq!(first_line(b""), "(empty body)");
        assert_eq!(first_line(b"a\x1b[31mb"), "a[31mb");
        assert_eq!(first_line(&[b'x'; 500]).len(), 200);
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("2m").is_err());
        assert!(parse_timeout("soon").is_err());
    }
}
