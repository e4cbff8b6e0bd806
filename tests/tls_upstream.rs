//! kmproxy in front of an HTTPS upstream, as every real deployment runs
//! (Oracle is HTTPS): the simulator behind a TLS front made here, with a
//! certificate made at run time that only `upstream.ca_file` trusts. The
//! front counts handshakes by kind (full or resumed) and can close every
//! connection at once, as an upstream does with idle keep-alives.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{eventually, Env};
use futures_util::future::join_all;
use http::StatusCode;
use rustls::HandshakeKind;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A TLS front for the simulator.
struct Front {
    backend: Arc<OnceLock<SocketAddr>>,
    addr: SocketAddr,
    full: Arc<AtomicUsize>,
    resumed: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<AbortHandle>>>,
    /// The certificate (PEM) kmproxy is to trust.
    ca: tempfile::NamedTempFile,
}

impl Front {
    /// A front for the simulator at `backend`, once it is set (kmproxy's
    /// test simulator starts with kmproxy).
    async fn start() -> Front {
        let backend = Arc::new(OnceLock::<SocketAddr>::new());
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let mut ca = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut ca, cert.cert.pem().as_bytes()).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        config.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (full, resumed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (f, r, o) = (Arc::clone(&full), Arc::clone(&resumed), Arc::clone(&open));
        let to = Arc::clone(&backend);
        tokio::spawn(async move {
            let backend = to;
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, f, r, backend) =
                    (acceptor.clone(), Arc::clone(&f), Arc::clone(&r), Arc::clone(&backend));
                let task = tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    match tls.get_ref().1.handshake_kind() {
                        Some(HandshakeKind::Resumed) => r.fetch_add(1, Ordering::SeqCst),
                        _ => f.fetch_add(1, Ordering::SeqCst),
                    };
                    let Some(to) = backend.get().copied() else { return };
                    let Ok(mut up) = TcpStream::connect(to).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
                o.lock().unwrap().push(task.abort_handle());
            }
        });
        Front {
            backend,
            addr,
            full,
            resumed,
            open,
            ca,
        }
    }

    fn handshakes(&self) -> (usize, usize) {
        (self.full.load(Ordering::SeqCst), self.resumed.load(Ordering::SeqCst))
    }

    /// Closes every connection (an upstream dropping its idle keep-alives).
    fn close_all(&self) {
        for c in self.open.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// A kmproxy whose upstream is `front`, trusting its certificate unless `trust` is false.
async fn proxy_for(front: &Front, trust: bool) -> Env {
    let url = format!("https://127.0.0.1:{}", front.addr.port());
    let ca = front.ca.path().display().to_string();
    let backend = Arc::clone(&front.backend);
    Env::builder()
        .start_with(move |toml, sim| {
            let _ = backend.set(sim.trim_start_matches("http://").parse().unwrap());
            let toml = toml.replace("SIM_URL", &url).replace(sim, &url);
            match trust {
                true => toml.replacen("[upstream]\n", &format!("[upstream]\nca_file = {ca:?}\n"), 1),
                false => toml,
            }
        })
        .await
}

async fn burst(env: &Env, n: usize) -> Vec<StatusCode> {
    // Slow answers, so that every call needs a connection of its own.
    let calls = (0..n).map(|_| env.get("/km/api/latest/content/slow?ms=300", &[]));
    join_all(calls).await.into_iter().map(|a| a.status).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_trusted_by_ca_file_serves_and_a_burst_after_its_connections_closed_resumes_whole() {
    let front = Front::start().await;
    let env = proxy_for(&front, true).await;
    let a = env.get("/km/api/latest/content", &[]).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert!(
        env.simulator().request_for(&a.headers).is_some(),
        "served upstream, over TLS"
    );

    // A first burst opens a connection per call: most of them full
    // handshakes (a ticket is used once, and the warm-up left two).
    let n = 24;
    assert!(burst(&env, n).await.iter().all(|s| *s == StatusCode::OK));
    let (full1, resumed1) = front.handshakes();
    assert!(
        full1 + resumed1 >= n,
        "a connection per concurrent call: {full1} + {resumed1}"
    );

    // The upstream closes them all; the next burst finds tickets for
    // every connection (rustls's own store would have kept 8).
    front.close_all();
    let live = env.app.live();
    assert!(
        eventually(Duration::from_secs(5), || live.upstream().idle_connections() == 0).await,
        "the pool sees its connections closed"
    );
    assert!(burst(&env, n).await.iter().all(|s| *s == StatusCode::OK));
    let (full2, resumed2) = front.handshakes();
    let (full, resumed) = (full2 - full1, resumed2 - resumed1);
    assert!(full + resumed >= n, "{full} + {resumed}");
    assert!(
        resumed >= n - 1,
        "a burst like the last resumes whole: {resumed} resumed, {full} full"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_nothing_trusts_gets_no_request_the_reason_is_shown_and_the_proxy_stays_up() {
    let front = Front::start().await;
    let env = proxy_for(&front, false).await;
    let a = env.get("/km/api/latest/content", &[]).await;
    assert!(a.status.is_server_error(), "{}", a.status);
    assert!(a.error_code().starts_with("KMPROXY-"), "Oracle-shaped: {:?}", a.body);
    let status = env.admin_get("/status").await;
    let text = String::from_utf8_lossy(&status.body);
    assert!(text.contains("certificate"), "the reason is shown: {text}");
    let health = env.admin_get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK, "still up");
    assert_eq!(front.handshakes().1, 0);
    // Nothing, not even the API user's login and its password, went past TLS.
    assert_eq!(env.simulator().total_logins(), 0);
    assert_eq!(env.simulator().request_count(), 0);
    env.stop().await;
}
