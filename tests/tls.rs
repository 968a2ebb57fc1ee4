//! TLS on the listener: `wss://` and `https://` with a test CA made here, the certificate
//! reloaded while connections stay open, and the fatal errors of a bad pair.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use support::*;
use switchboard::config::Config;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A CA and the PEM of leaves it signs for `localhost` and 127.0.0.1.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "switchboard test CA");
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM, certificate DER) of a new leaf named `cn`.
    fn leaf(&self, cn: &str) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn client(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

fn write_pair(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    // Written beside and renamed, as certbot and Kubernetes do: a reload never sees half a file.
    std::fs::write(dir.join("cert.tmp"), cert).unwrap();
    std::fs::write(dir.join("key.tmp"), key).unwrap();
    std::fs::rename(dir.join("key.tmp"), &k).unwrap();
    std::fs::rename(dir.join("cert.tmp"), &c).unwrap();
    (c, k)
}

async fn tls_connect(ca: &TestCa, server: &TestServer) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    ca.client().connect(name, tcp).await.unwrap()
}

/// The leaf certificate a new handshake is given.
async fn served_cert(ca: &TestCa, server: &TestServer) -> Vec<u8> {
    let tls = tls_connect(ca, server).await;
    let (_, session) = tls.get_ref();
    session.peer_certificates().unwrap()[0].to_vec()
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

async fn wss(ca: &TestCa, server: &TestServer) -> Wss {
    let tls = tls_connect(ca, server).await;
    let url = format!(
        "wss://localhost:{}/app/{KEY}?protocol=7",
        server.addr.port()
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(
        next(&mut ws).await["event"],
        "pusher:connection_established"
    );
    ws
}

async fn next(ws: &mut Wss) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn subscribe(ws: &mut Wss, channel: &str) {
    let sub = json!({"event": "pusher:subscribe", "data": {"channel": channel}});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    let ok = next(ws).await;
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
}

/// The signed API over https, trusting only the test CA.
fn https_api(ca: &TestCa, server: &TestServer) -> Api {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve("localhost", server.addr)
        .build()
        .unwrap();
    Api {
        base: format!("https://localhost:{}", server.addr.port()),
        app_id: APP_ID.into(),
        key: KEY.into(),
        secret: SECRET.into(),
        http,
    }
}

async fn wait_for_cert(ca: &TestCa, server: &TestServer, want: &[u8]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served_cert(ca, server).await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn wss_and_https_are_served_and_the_certificate_reloads_under_open_connections() {
    let ca = TestCa::new();
    let dir = temp_dir("tls");
    let (cert_a, key_a, der_a) = ca.leaf("first");
    let (cert_file, key_file) = write_pair(&dir, &cert_a, &key_a);
    let server = TestServer::start_with(|c| {
        c.server.tls.cert_file = Some(cert_file.clone());
        c.server.tls.key_file = Some(key_file.clone());
    })
    .await;

    assert_eq!(served_cert(&ca, &server).await, der_a);
    let mut ws = wss(&ca, &server).await;
    subscribe(&mut ws, "prices").await;
    let api = https_api(&ca, &server);
    let (status, body) = api
        .trigger(json!({"name": "tick", "channel": "prices", "data": "1"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(next(&mut ws).await["data"], "1");
    // Plain HTTP on the TLS port is no way in.
    let plain = reqwest::get(format!("http://{}/up", server.addr)).await;
    assert!(plain.map_or(true, |r| !r.status().is_success()));

    // A new pair: the next handshake gets it; the open connection keeps going.
    let (cert_b, key_b, der_b) = ca.leaf("second");
    write_pair(&dir, &cert_b, &key_b);
    wait_for_cert(&ca, &server, &der_b).await;
    let (status, body) = api
        .trigger(json!({"name": "tick", "channel": "prices", "data": "2"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(next(&mut ws).await["data"], "2");
    let mut late = wss(&ca, &server).await;
    subscribe(&mut late, "prices").await;

    // A broken file is not taken: the pair in use stays.
    std::fs::write(&cert_file, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(served_cert(&ca, &server).await, der_b);
    server.stop().await;
}

#[tokio::test]
async fn a_bad_pair_is_fatal_and_named() {
    let ca = TestCa::new();
    let dir = temp_dir("tls-bad");
    let (cert_a, _, _) = ca.leaf("a");
    let (_, key_b, _) = ca.leaf("b");
    let (cert_file, key_file) = write_pair(&dir, &cert_a, &key_b);
    let run = |cert: PathBuf, key: PathBuf| async move {
        let mut config = Config::default();
        config.data.dir = temp_dir("data");
        config.server.tls.cert_file = Some(cert);
        config.server.tls.key_file = Some(key);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let never = std::future::pending::<()>();
        tokio::time::timeout(
            WAIT,
            switchboard::server::run(listener, None, config, never),
        )
        .await
        .expect("a bad pair stops the start at once")
        .unwrap_err()
        .to_string()
    };
    let err = run(cert_file.clone(), key_file.clone()).await;
    assert!(err.contains("does not fit"), "{err}");
    assert!(err.contains(&key_file.display().to_string()), "{err}");
    let missing = dir.join("missing.pem");
    let err = run(cert_file.clone(), missing.clone()).await;
    assert!(err.contains(&missing.display().to_string()), "{err}");
    std::fs::write(&key_file, "not a key").unwrap();
    let err = run(cert_file, key_file.clone()).await;
    assert!(err.contains("no PEM private key"), "{err}");
    // Only one of the two files is a configuration error.
    let half = Config::load(
        None,
        [(
            "SWITCHBOARD_SERVER_TLS_CERT_FILE".to_owned(),
            "/c.pem".to_owned(),
        )],
    );
    assert!(half
        .unwrap_err()
        .to_string()
        .contains("both cert_file and key_file"));
}
