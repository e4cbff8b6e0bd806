//! Test harness: a Knowledge Advanced simulator and a real kmproxy, both on
//! ephemeral loopback ports, and a small HTTP client to call the proxy.
//!
//! `Env::start()` gives the standard setup; `Env::builder()` lets a test
//! change the TOML, the parsed config or the simulator first, so each test
//! reads as its scenario.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kmproxy::app::App;
use kmproxy::config::sample::{table, ConfigToml};
use kmproxy::config::Config;
use kmproxy::run::Listeners;
use kmproxy::server::Stop;
use kmproxy::sim::{SimConfig, SimHandle, Simulator};
use tokio::net::TcpListener;

pub const HELPDESK_KEY: &str = "helpdesk-key";
pub const PORTAL_KEY: &str = "portal-key";
pub const KIOSK_KEY: &str = "kiosk-key";

/// The standard config: `public` (anonymous, default), `agent` (console
/// user okcsuser), `web` (web user webuser), `portal` (bearer); callers
/// helpdesk → agent (may act as web), portal-app → portal, kiosk → public.
pub fn standard_toml() -> String {
    ConfigToml::new("SIM_URL")
        .server("listen", "127.0.0.1:0")
        .server("admin_listen", "127.0.0.1:0")
        .server("max_body", "1MiB")
        .server("default_principal", "public")
        .upstream("locale", "en_US")
        .upstream("timeout", "10s")
        .upstream("connect_timeout", "2s")
        .upstream(
            "kmauthtoken_extra",
            table(&[("interfaceId", "7"), ("appId", "kmproxy-tests")]),
        )
        .tokens("lifetime", "24h")
        .tokens("refresh_before", "10m")
        .principal("public", "anonymous")
        .user_principal("agent", "account", "okcsuser", "Password1")
        .user_principal("web", "contact", "webuser", "Password1")
        .principal("portal", "bearer")
        .caller("helpdesk", HELPDESK_KEY, "agent", &["web"])
        .caller("portal-app", PORTAL_KEY, "portal", &[])
        .caller("kiosk", KIOSK_KEY, "public", &[])
        .to_string()
}

type ConfigTweak = Box<dyn FnOnce(&mut Config)>;
type SimSetup = Box<dyn FnOnce(&Simulator)>;

pub struct Builder {
    toml: String,
    sim: SimConfig,
    tweaks: Vec<ConfigTweak>,
    setups: Vec<SimSetup>,
}

impl Builder {
    /// Edits the TOML text (before `SIM_URL` is filled in).
    pub fn toml(mut self, f: impl FnOnce(String) -> String) -> Self {
        self.toml = f(self.toml);
        self
    }

    /// Edits the parsed config.
    pub fn config(mut self, f: impl FnOnce(&mut Config) + 'static) -> Self {
        self.tweaks.push(Box::new(f));
        self
    }

    /// Edits the simulator's config.
    pub fn sim(mut self, f: impl FnOnce(&mut SimConfig)) -> Self {
        f(&mut self.sim);
        self
    }

    /// Acts on the running simulator before kmproxy starts (a fault its
    /// warm-up login should meet, say).
    pub fn before_start(mut self, f: impl FnOnce(&Simulator) + 'static) -> Self {
        self.setups.push(Box::new(f));
        self
    }

    pub async fn start(self) -> Env {
        self.start_with(|t, _| t).await
    }

    /// Like `start`, with a last edit of the TOML that knows the simulator's URL.
    pub async fn start_with(self, f: impl FnOnce(String, &str) -> String) -> Env {
        let sim = Simulator::spawn(self.sim).await.unwrap();
        let text = f(self.toml, &sim.base_url()).replace("SIM_URL", &sim.base_url());
        let mut config = Config::parse(&text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"));
        for t in self.tweaks {
            t(&mut config);
        }
        for setup in self.setups {
            setup(&sim.sim);
        }
        Env::serve(sim, config).await
    }
}

/// A running simulator + kmproxy pair.
pub struct Env {
    pub sim: SimHandle,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub app: Arc<App>,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: Stop,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// An answer from the proxy.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The code of an Oracle-shaped error answer: `error.errorCode`
    /// (content API, kmproxy) or `errors[0].code` (search API).
    pub fn error_code(&self) -> String {
        let json = self.json();
        json["error"]["errorCode"]
            .as_str()
            .or(json["errors"][0]["code"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}

impl Env {
    pub fn builder() -> Builder {
        Builder {
            toml: standard_toml(),
            sim: SimConfig::default(),
            tweaks: Vec::new(),
            setups: Vec::new(),
        }
    }

    pub async fn start() -> Env {
        Self::builder().start().await
    }

    /// Runs a kmproxy for `config` the way `kmproxy serve` does (the same
    /// entry point, warm-up included), on ephemeral loopback ports.
    async fn serve(sim: SimHandle, config: Config) -> Env {
        let data = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (proxy_addr, admin_addr) = (data.local_addr().unwrap(), admin.local_addr().unwrap());
        let app = App::new(Arc::new(config)).unwrap();
        let stop = Stop::new();
        let listeners = Listeners {
            data,
            admin: Some(admin),
        };
        let tasks = vec![tokio::spawn(kmproxy::run(Arc::clone(&app), listeners, stop.wait()))];
        let client = Client::builder(TokioExecutor::new()).build_http();
        let env = Env {
            sim,
            proxy: proxy_addr,
            admin: admin_addr,
            app,
            client,
            stop,
            tasks,
        };
        env.warmed_up().await;
        env
    }

    /// Waits until the warm-up login has come to an end (a token, a
    /// backoff or a park), so each test starts from a settled state.
    async fn warmed_up(&self) {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let status = self.admin_get("/status").await.json();
            if status["api_user"]["state"] != "empty" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the warm-up login did not end within 10 s");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    /// Sends a request to the proxy and reads the whole answer.
    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Answer {
        self.send_to(self.proxy, method, path, headers, body).await
    }

    pub async fn send_to(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, HeaderValue::from_str(v).unwrap());
        }
        let res = self
            .client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, path, headers, Bytes::new()).await
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Answer {
        self.send_to(self.admin, Method::GET, path, &[], Bytes::new()).await
    }

    pub fn simulator(&self) -> &Simulator {
        &self.sim.sim
    }

    pub async fn stop(self) {
        self.stop.signal();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Polls `f` until it holds or `within` passes; returns whether it held.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
