//! `kmproxy demo`: the built-in simulator plus a proxy running the demo
//! configuration (`config/demo.toml`), and curl lines that work as printed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::Config;
use crate::run::{run, Listeners};
use crate::server::Stop;
use crate::sim::{SimConfig, Simulator};

/// The demo configuration, built in.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
/// The helpdesk app's caller key (its sha256 is in the demo config).
pub const HELPDESK_KEY: &str = "demo-helpdesk-key";
/// The portal app's caller key (a `bearer` principal).
pub const PORTAL_KEY: &str = "demo-portal-key";

/// Where the demo listens.
#[derive(Debug, Clone, Copy)]
pub struct DemoAddrs {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub sim: SocketAddr,
}

impl Default for DemoAddrs {
    fn default() -> Self {
        Self {
            proxy: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            sim: SocketAddr::from(([127, 0, 0, 1], 7002)),
        }
    }
}

/// A running demo.
pub struct Demo {
    /// The addresses actually bound (port 0 resolved).
    pub addrs: DemoAddrs,
    /// The simulator, for tests to inspect.
    pub sim: Simulator,
    stop: Stop,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Demo {
    /// Binds the three listeners and starts serving.
    pub async fn start(addrs: DemoAddrs) -> Result<Demo, String> {
        let bind = |a: SocketAddr| async move {
            TcpListener::bind(a)
                .await
                .map_err(|e| format!("cannot listen on {a}: {e}"))
        };
        let sim_l = bind(addrs.sim).await?;
        let proxy_l = bind(addrs.proxy).await?;
        let admin_l = bind(addrs.admin).await?;
        let local = |l: &TcpListener| l.local_addr().map_err(|e| e.to_string());
        let bound = DemoAddrs {
            proxy: local(&proxy_l)?,
            admin: local(&admin_l)?,
            sim: local(&sim_l)?,
        };
        let mut config =
            Config::parse(DEMO_CONFIG, Path::new("config/demo.toml (built in)")).map_err(|e| e.to_string())?;
        config.upstream.base_url = format!("http://{}", bound.sim);
        config.upstream.search_base_url = config.upstream.base_url.clone();
        config.server.listen = bound.proxy;
        config.server.admin_listen = Some(bound.admin);
        let app = App::new(Arc::new(config)).map_err(|e| e.to_string())?;

        let stop = Stop::new();
        let sim = Simulator::new(SimConfig::default());
        let listeners = Listeners {
            data: proxy_l,
            admin: Some(admin_l),
        };
        let tasks = vec![
            tokio::spawn(sim.clone().serve(sim_l, stop.wait())),
            tokio::spawn(run(app, listeners, stop.wait())),
        ];
        Ok(Demo {
            addrs: bound,
            sim,
            stop,
            tasks,
        })
    }

    /// The curl lines printed by `kmproxy demo`, as (comment, command).
    pub fn curl_lines(&self) -> Vec<(&'static str, String)> {
        let p = self.addrs.proxy;
        let s = self.addrs.sim;
        let a = self.addrs.admin;
        vec![
            (
                "anonymous content, newest first (no caller key: default principal \"public\")",
                format!("curl -s 'http://{p}/km/api/latest/content?orderBy=publishDate:desc&limit=2'"),
            ),
            (
                "as console user okcsuser, through the helpdesk app's caller key: staff-only articles too",
                format!(
                    "curl -s -H 'x-kmproxy-key: {HELPDESK_KEY}' 'http://{p}/km/api/latest/content?orderBy=publishDate:desc&limit=2'"
                ),
            ),
            (
                "the helpdesk app acting as web user webuser for one call",
                format!(
                    "curl -s -H 'x-kmproxy-key: {HELPDESK_KEY}' -H 'x-kmproxy-act-as: web' 'http://{p}/km/api/latest/content'"
                ),
            ),
            (
                "a search call (the search API, /srt/api/)",
                format!("curl -s 'http://{p}/srt/api/latest/search/question?question=reset%20password'"),
            ),
            (
                "OAuth: the portal app forwards its user's bearer token",
                format!(
                    "curl -s -H 'x-kmproxy-key: {PORTAL_KEY}' -H 'Authorization: Bearer demo-jwt' 'http://{p}/km/api/latest/content'"
                ),
            ),
            (
                "expire every token upstream, then call again: kmproxy logs in and replays",
                format!("curl -s -X POST 'http://{s}/__sim/expire'"),
            ),
            (
                "the call after expiry still succeeds",
                format!("curl -s -H 'x-kmproxy-key: {HELPDESK_KEY}' 'http://{p}/km/api/latest/content'"),
            ),
            ("what the simulator saw (logins, requests)", format!("curl -s 'http://{s}/__sim/stats'")),
            ("kmproxy's view of each principal", format!("curl -s 'http://{a}/status'")),
            ("an unknown caller key is refused with 401", format!("curl -s -H 'x-kmproxy-key: wrong' 'http://{p}/km/api/latest/content'")),
        ]
    }

    /// The text `kmproxy demo` prints.
    pub fn banner(&self) -> String {
        let mut s = format!(
            "kmproxy demo is running (Ctrl-C to stop)\n\n  \
             proxy      http://{}   apps call this instead of Oracle\n  \
             admin      http://{}   /healthz /readyz /metrics /status\n  \
             simulator  http://{}   plays Knowledge Advanced (site ORACLE_KNOWLEDGE)\n\n\
             Caller keys: helpdesk app = {HELPDESK_KEY} (principal \"agent\", a console user; may act as \"web\"),\n             \
             portal app = {PORTAL_KEY} (principal \"portal\", OAuth bearer). No key = principal \"public\".\n\nTry:\n",
            self.addrs.proxy, self.addrs.admin, self.addrs.sim
        );
        for (comment, line) in self.curl_lines() {
            s.push_str(&format!("\n  # {comment}\n  {line}\n"));
        }
        s
    }

    /// Stops serving and waits for the tasks to end.
    pub async fn stop(self) {
        self.stop.signal();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
