//! The command line: `serve` (default), `check [--login]`, `demo`,
//! `simulate`, `hash-key`, `probe [--ready]`. Parses flags, sets up logging, and hands over to
//! library code; a bad config exits with status 2.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

use crate::app::App;
use crate::config::{Config, PrincipalKind};
use crate::run::{run, Listeners};

/// `print!`, `println!`, `eprint!` and `eprintln!` through [`crate::output`]:
/// a reader that has gone (`kmproxy check | head -1`) is no panic.
macro_rules! out {
    ($($t:tt)*) => { crate::output::out(format_args!($($t)*)) };
}
macro_rules! outln {
    ($($t:tt)*) => { crate::output::out(format_args!("{}\n", format_args!($($t)*))) };
}
macro_rules! err {
    ($($t:tt)*) => { crate::output::err(format_args!($($t)*)) };
}
macro_rules! errln {
    ($($t:tt)*) => { crate::output::err(format_args!("{}\n", format_args!($($t)*))) };
}

/// Local authenticating reverse proxy for the Oracle B2C Service Knowledge
/// Advanced REST API.
#[derive(Parser, Debug)]
#[command(name = "kmproxy", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: $KMPROXY_CONFIG, then ./kmproxy.toml]
    #[arg(long, global = true, env = "KMPROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy (the default command).
    Serve,
    /// Validate the config and print a redacted summary.
    Check {
        /// Also log every principal in against the upstream and report each.
        #[arg(long)]
        login: bool,
    },
    /// Run the built-in Knowledge Advanced simulator and a proxy in front of it, ready to curl.
    Demo {
        /// Proxy (data plane) address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
        /// Simulator address.
        #[arg(long, default_value = "127.0.0.1:7002")]
        sim_listen: SocketAddr,
    },
    /// Run the Knowledge Advanced simulator alone (tests, compose, local development).
    Simulate {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7002")]
        listen: SocketAddr,
    },
    /// Read a caller key on stdin and print the value for `key_sha256`.
    HashKey,
    /// Exit 0 if the admin port answers GET /healthz (or /readyz) with 200: a container health check.
    ///
    /// The image has no curl, so the binary probes itself: one HTTP/1.1 GET with `Host: 127.0.0.1` to
    /// the admin address, server.admin_listen of the config (--config, $KMPROXY_CONFIG, ./kmproxy.toml;
    /// 0.0.0.0 or [::] is probed on loopback) or --admin ADDR, within --timeout in all. A 200 exits 0
    /// and prints one line on stdout; anything else (connection refused, a timeout, another status,
    /// an unreadable config, admin_listen = "off") exits 1 with one line on stderr saying why: the
    /// status and the first line of the body, e.g. `GET /readyz on 127.0.0.1:9090 answered 503: not
    /// ready: API user login rejected: ...`. Never 2, which Docker's HEALTHCHECK reserves.
    Probe(crate::probe::ProbeArgs),
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match &cli.command {
        Some(Command::HashKey) => return hash_key(),
        Some(Command::Probe(args)) => return crate::probe::main(&config_path(&cli), args),
        _ => {}
    }
    let workers = worker_threads();
    let runtime = match workers {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            errln!("kmproxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::debug!(worker_threads = workers, "runtime started");
    runtime.block_on(dispatch(cli))
}

/// Threads to run calls on: `TOKIO_WORKER_THREADS` if set, else the CPUs
/// this process may use (its affinity and cgroup quota). With one, kmproxy
/// runs tokio's current-thread scheduler, which spares the work-stealing
/// machinery (atomics, a second queue) that one thread cannot use.
fn worker_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal);
    match format {
        LogFormat::Human if terminal => builder.init(),
        // The same lines, written for less (see `logfmt`).
        LogFormat::Human => builder.fmt_fields(crate::logfmt::plain_fields()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `--config`, else `$KMPROXY_CONFIG` (read by clap), else `./kmproxy.toml`.
fn config_path(cli: &Cli) -> PathBuf {
    cli.config.clone().unwrap_or_else(|| PathBuf::from("kmproxy.toml"))
}

async fn dispatch(cli: Cli) -> ExitCode {
    let config_path = config_path(&cli);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&config_path).await,
        Command::Check { login } => check(&config_path, login).await,
        Command::Demo {
            listen,
            admin_listen,
            sim_listen,
        } => demo(listen, admin_listen, sim_listen).await,
        Command::Simulate { listen } => simulate(listen).await,
        Command::HashKey => hash_key(),
        Command::Probe(args) => crate::probe::run(&config_path, &args).await,
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        err!("kmproxy: invalid configuration\n{e}");
        ExitCode::from(2)
    })
}

async fn serve(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => Arc::new(c),
        Err(code) => return code,
    };
    let app = match App::new(Arc::clone(&config)) {
        Ok(a) => a,
        Err(e) => {
            errln!("kmproxy: {e}");
            return ExitCode::from(2);
        }
    };
    let listeners = match Listeners::bind(&config.server).await {
        Ok(l) => l,
        Err(e) => {
            errln!("kmproxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(Arc::clone(&app), path.to_owned()));
    match run(app, listeners, crate::server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("kmproxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// On SIGHUP: re-read the config file and its secrets; swap in a valid one
/// (identities whose credentials changed lose their tokens, others keep
/// them), refuse an invalid one and keep running the old. Each reload runs
/// as a task of its own ([`contained`]), so one that fails in any way, a
/// panic included, leaves this loop waiting for the next SIGHUP.
#[cfg(unix)]
async fn reload_on_sighup(app: Arc<App>, path: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reloads are disabled");
        return;
    };
    while hup.recv().await.is_some() {
        match contained(reload(Arc::clone(&app), path.clone())).await {
            Ok(restarted) => tracing::info!(restarted = ?restarted, "config reloaded"),
            Err(e) => tracing::error!(reason = %e, "reload refused; the old config keeps running"),
        }
    }
}

/// Longest a reload may spend reading its files (a secret on a hung
/// network mount, say) before it is refused.
const RELOAD_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a reload was refused. In every case the old config keeps serving.
#[derive(Debug, thiserror::Error)]
enum ReloadRefused {
    #[error("the new config is invalid: {0}")]
    Invalid(String),
    #[error("reading the config took longer than {}s", RELOAD_READ_TIMEOUT.as_secs())]
    Stalled,
    #[error(transparent)]
    Build(#[from] crate::app::BuildError),
    /// The message went to stderr with the panic; it is not repeated.
    #[error("the reload panicked (a bug: please report it)")]
    Panicked,
}

/// Runs `reload` as a task of its own, so that a panic in it comes back as
/// a refusal instead of ending the caller.
async fn contained<T: Send + 'static>(
    reload: impl std::future::Future<Output = Result<T, ReloadRefused>> + Send + 'static,
) -> Result<T, ReloadRefused> {
    tokio::spawn(reload).await.unwrap_or(Err(ReloadRefused::Panicked))
}

/// One reload: read and check the file (off the runtime's threads, within
/// [`RELOAD_READ_TIMEOUT`]), then swap the state.
async fn reload(app: Arc<App>, path: PathBuf) -> Result<Vec<String>, ReloadRefused> {
    let read = tokio::task::spawn_blocking(move || Config::load(&path));
    let new = match tokio::time::timeout(RELOAD_READ_TIMEOUT, read).await {
        Err(_) => return Err(ReloadRefused::Stalled),
        Ok(Err(_)) => return Err(ReloadRefused::Panicked),
        Ok(Ok(Err(e))) => return Err(ReloadRefused::Invalid(e.to_string().trim_end().to_owned())),
        Ok(Ok(Ok(c))) => c,
    };
    for key in app.live().config.restart_needed(&new) {
        tracing::warn!(key, "changed; it takes effect at the next restart");
    }
    Ok(app.reload(new).await?)
}

async fn check(path: &Path, login: bool) -> ExitCode {
    let config = match load(path) {
        Ok(c) => Arc::new(c),
        Err(code) => return code,
    };
    outln!("{}: ok", path.display());
    out!("{}", summary(&config));
    if !login {
        return ExitCode::SUCCESS;
    }
    let app = match App::new(Arc::clone(&config)) {
        Ok(a) => a,
        Err(e) => {
            errln!("kmproxy: {e}");
            return ExitCode::from(2);
        }
    };
    let tokens = app.live().tokens.clone();
    if let Err(e) = fleet_reachable(&tokens).await {
        errln!("kmproxy: {e}; not logging in, so as not to retry a password the fleet holds as rejected");
        return ExitCode::FAILURE;
    }
    match serve_parked(&config).await {
        Ok(Some(parked)) => {
            let honoured = tokens.adopt_parked(&parked).await;
            outln!(
                "\nthe running serve holds {} credential(s) parked; {} of them configured here, not tried",
                parked.len(),
                honoured.len()
            );
        }
        Ok(None) => {}
        Err(e) => {
            errln!("kmproxy: {e}; not logging in, so as not to retry a password it holds as rejected");
            return ExitCode::FAILURE;
        }
    }
    if log_everyone_in(&config, &tokens).await {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// In fleet mode, waits for Redis (its connect timeout, plus a margin) so
/// that every login consults the fleet's verdicts first; an error naming
/// why if it cannot be reached. Nothing to wait for without `[cache]`.
async fn fleet_reachable(tokens: &crate::tokens::TokenStore) -> Result<(), String> {
    use crate::fleet::CacheState;
    let Some(fleet) = tokens.fleet() else { return Ok(()) };
    let within = tokens
        .config()
        .cache
        .as_ref()
        .map_or(Duration::ZERO, |c| c.connect_timeout)
        + Duration::from_secs(1);
    let mut state = fleet.watch_state();
    let _ = tokio::time::timeout(within, state.wait_for(|s| *s == CacheState::Ok)).await;
    match fleet.state() {
        CacheState::Ok => {
            outln!("\nfleet cache ok: logins consult the fleet's verdicts (a credential parked there is not tried)");
            Ok(())
        }
        CacheState::Degraded(reason) => Err(format!("the fleet cache cannot be used ({reason})")),
    }
}

/// Gets every principal's credentials, printing one line each; true if
/// all succeeded. One login per distinct credential: principals sharing a
/// user share its login, and a parked credential is not tried.
async fn log_everyone_in(config: &Config, tokens: &crate::tokens::TokenStore) -> bool {
    outln!("\nlogging in:");
    let mut all = true;
    for (i, p) in config.principals.iter().enumerate() {
        match tokens.credentials(i).await {
            Ok(_) => outln!("  {:<20} ok", p.name),
            Err(e) => {
                all = false;
                outln!("  {:<20} FAILED: {e}", p.name);
            }
        }
    }
    all
}

/// The credentials a `serve` running with this config holds as parked,
/// read from its admin `/status`: `None` when none answers there (nothing
/// listens, or the admin port is off), an error when one answers but its
/// verdicts cannot be read.
async fn serve_parked(config: &Config) -> Result<Option<Vec<crate::tokens::ParkedCredential>>, String> {
    let Some(mut addr) = config.server.admin_listen else {
        outln!("\n(admin_listen is off: a running serve's lockout state cannot be consulted)");
        return Ok(None);
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let what = format!("the running serve's /status on {addr}");
    let answer = match tokio::time::timeout(std::time::Duration::from_secs(5), get_status(config, addr)).await {
        Err(_) => return Err(format!("{what} did not answer within 5s")),
        Ok(Err(StatusError::NotListening)) => {
            outln!("\n(no serve answers on {addr}: no lockout state to honour)");
            return Ok(None);
        }
        Ok(Err(StatusError::Broken(e))) => return Err(format!("cannot read {what}: {e}")),
        Ok(Ok(answer)) => answer,
    };
    let status: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| format!("{what} is not JSON: {e}"))?;
    let parked = status
        .get("parked_credentials")
        .ok_or_else(|| format!("{what} has no parked_credentials (a kmproxy too old to say)"))?;
    serde_json::from_value(parked.clone())
        .map(Some)
        .map_err(|e| format!("{what} has unreadable parked_credentials: {e}"))
}

/// Why a running serve's `/status` could not be read.
enum StatusError {
    /// Nothing listens there: no serve is running with this config.
    NotListening,
    Broken(String),
}

/// `GET /status` on `addr`, its body (at most 1 MiB).
async fn get_status(config: &Config, addr: SocketAddr) -> Result<bytes::Bytes, StatusError> {
    use http_body_util::BodyExt as _;
    let broken = |e: &dyn std::fmt::Display| StatusError::Broken(e.to_string());
    let client = crate::upstream::client(&config.upstream).map_err(|e| broken(&e))?;
    let origin = client.origin(&format!("http://{addr}")).map_err(|e| broken(&e))?;
    let req = http::Request::get("/status")
        .body(http_body_util::Full::default())
        .map_err(|e| broken(&e))?;
    let res = match client.request(&origin, req).await {
        Err(crate::upstream::Error::Refused { .. }) => return Err(StatusError::NotListening),
        other => other.map_err(|e| broken(&e))?,
    };
    if !res.status().is_success() {
        return Err(broken(&format!("answered HTTP {}", res.status().as_u16())));
    }
    let body = http_body_util::Limited::new(res.into_body(), 1 << 20).collect().await;
    body.map(|b| b.to_bytes()).map_err(|e| broken(&e))
}

/// The `[cache]` lines of the summary: where Redis is (the URL never holds
/// credentials), the prefix, and where each secret comes from.
fn cache_summary(c: &Config) -> String {
    let Some(cache) = &c.cache else {
        return "  cache            off (this replica alone)\n".to_owned();
    };
    let user = cache.username.as_deref().unwrap_or("default");
    let password = cache.password.as_ref().map_or("none".to_owned(), |p| p.to_string());
    format!(
        "  cache            {} prefix {} user {user} password {password}\n                   encryption key {}, connect {}, command {}\n",
        cache.redis_url,
        cache.key_prefix,
        cache.encryption_key.source(),
        humantime::format_duration(cache.connect_timeout),
        humantime::format_duration(cache.command_timeout),
    )
}

/// The redacted summary `check` prints.
pub fn summary(c: &Config) -> String {
    let mut s = String::new();
    let admin = c.server.admin_listen.map_or("off".to_owned(), |a| a.to_string());
    s += &format!("  listen           {} (admin {admin})\n", c.server.listen);
    let token = c
        .server
        .admin_token
        .as_ref()
        .map_or("none".to_owned(), |t| t.to_string());
    let hosts = match c.server.allowed_hosts.as_slice() {
        [] => "loopback names and IP literals".to_owned(),
        more => format!("loopback names, IP literals, {}", more.join(", ")),
    };
    s += &format!("  admin token      {token}\n  hosts allowed    {hosts}\n");
    s += &format!(
        "  upstream         {} (search {})\n",
        c.upstream.base_url, c.upstream.search_base_url
    );
    s += &format!("  site / locale    {} / {}\n", c.upstream.site_name, c.upstream.locale);
    s += &format!(
        "  api user         {} password {}\n",
        c.api_user.login, c.api_user.password
    );
    s += &format!(
        "  tokens           lifetime {}, renewed {} before\n",
        humantime::format_duration(c.tokens.lifetime),
        humantime::format_duration(c.tokens.refresh_before)
    );
    let default = c
        .server
        .default_principal
        .map_or("none (401)".to_owned(), |p| c.principals[p].name.clone());
    s += &format!("  default          {default}\n  principals:\n");
    for p in &c.principals {
        match &p.kind {
            PrincipalKind::Anonymous => s += &format!("    {:<18} anonymous\n", p.name),
            PrincipalKind::Bearer => s += &format!("    {:<18} bearer\n", p.name),
            PrincipalKind::User {
                external_type,
                user,
                password,
            } => {
                s += &format!(
                    "    {:<18} {} user {user} password {password}\n",
                    p.name,
                    external_type.kind_name()
                )
            }
        }
    }
    s += &cache_summary(c);
    s += "  callers:\n";
    for caller in &c.callers {
        let act_as: Vec<&str> = caller.act_as.iter().map(|&p| c.principals[p].name.as_str()).collect();
        s += &format!(
            "    {:<18} -> {}{}\n",
            caller.name,
            c.principals[caller.principal].name,
            if act_as.is_empty() {
                String::new()
            } else {
                format!(" (may act as {})", act_as.join(", "))
            }
        );
    }
    s
}

async fn demo(listen: SocketAddr, admin: SocketAddr, sim: SocketAddr) -> ExitCode {
    let addrs = crate::demo::DemoAddrs {
        proxy: listen,
        admin,
        sim,
    };
    let demo = match crate::demo::Demo::start(addrs).await {
        Ok(d) => d,
        Err(e) => {
            errln!("kmproxy demo: {e}\n(use --listen, --admin-listen and --sim-listen to pick other ports)");
            return ExitCode::FAILURE;
        }
    };
    outln!("{}", demo.banner());
    crate::server::shutdown_signal().await;
    demo.stop().await;
    ExitCode::SUCCESS
}

async fn simulate(listen: SocketAddr) -> ExitCode {
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            errln!("kmproxy simulate: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sim = crate::sim::Simulator::new(crate::sim::SimConfig::default());
    outln!(
        "Knowledge Advanced simulator on http://{listen} (site ORACLE_KNOWLEDGE; API user apiuser/apipass1, \
         console user okcsuser/Password1, web user webuser/Password1, bearer demo-jwt)"
    );
    match sim.serve(listener, crate::server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("kmproxy simulate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hash_key() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        errln!("kmproxy hash-key: cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    match key_to_hash(&input) {
        Ok((key, trimmed)) => {
            if trimmed {
                errln!(
                    "kmproxy hash-key: removed the spaces or tabs around the key: HTTP drops them from a header \
                     value, so the key kmproxy receives never has them"
                );
            }
            outln!("{}", crate::callers::hash_key(key.as_bytes()));
            ExitCode::SUCCESS
        }
        Err(why) => {
            errln!("kmproxy hash-key: {why}");
            ExitCode::from(2)
        }
    }
}

/// The caller key in `hash-key`'s input, as kmproxy will receive it in a
/// header, and whether spaces or tabs had to be removed for that.
///
/// A header value loses its leading and trailing spaces and tabs on the way
/// in (RFC 9110 §5.5: they are not part of the value), so a key hashed with
/// them could never match. Trimming them here, and saying so, makes the
/// printed digest the one of the key callers actually present; refusing
/// would only send the operator back to do the same by hand. A line break
/// or another control character cannot be in a header value at all: such
/// input is refused.
fn key_to_hash(input: &str) -> Result<(&str, bool), &'static str> {
    let line = input.trim_end_matches(['\n', '\r']);
    let key = line.trim_matches([' ', '\t', '\r', '\n']);
    if key.is_empty() {
        return Err("the key on stdin is empty");
    }
    if key.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err("the key contains a line break or a control character, which a header cannot carry");
    }
    Ok((key, key.len() != line.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_key_hashes_the_key_as_a_header_carries_it() {
        assert_eq!(key_to_hash("abc\n"), Ok(("abc", false)));
        assert_eq!(key_to_hash("abc\r\n"), Ok(("abc", false)));
        assert_eq!(key_to_hash("abc"), Ok(("abc", false)));
        assert_eq!(key_to_hash("  abc\t \n"), Ok(("abc", true)));
        assert_eq!(
            key_to_hash("a b\tc\n"),
            Ok(("a b\tc", false)),
            "inner whitespace is kept"
        );
        assert!(key_to_hash(" \t\n").is_err());
        assert!(key_to_hash("").is_err());
        assert!(key_to_hash("abc\ndef\n").is_err());
        assert!(key_to_hash("ab\u{7f}c").is_err());
    }

    #[tokio::test]
    async fn a_panicking_reload_is_a_refusal_and_the_next_one_runs() {
        let panics = contained::<()>(async { panic!("a bug in a reload") }).await;
        assert!(matches!(panics, Err(ReloadRefused::Panicked)), "{panics:?}");
        let next = contained(async { Ok::<_, ReloadRefused>(7) }).await;
        assert_eq!(next.ok(), Some(7));
    }

    #[tokio::test]
    async fn a_reload_of_an_invalid_file_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kmproxy.toml");
        let config = crate::config::sample::ConfigToml::new("http://127.0.0.1:9");
        std::fs::write(&path, config.to_string()).expect("write");
        let app = App::new(Arc::new(Config::load(&path).expect("valid"))).expect("app");
        let bad = config
            .server("max_in_flight", 4_611_686_018_427_387_904_i64)
            .to_string();
        std::fs::write(&path, bad).expect("write");
        let refused = contained(reload(Arc::clone(&app), path.clone())).await;
        let Err(ReloadRefused::Invalid(why)) = refused else {
            panic!("refused as invalid: {refused:?}")
        };
        assert!(why.contains("server.max_in_flight: must be at most 1000000"), "{why}");
        assert_eq!(app.live().config.server.max_in_flight, 512, "the old config serves");
    }
}
