//! The nodes' HTTP side: signed API calls (signed with the library's `auth` helpers, as any
//! Pusher SDK signs them), `/up`, `/metrics`, and bus tokens.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use switchboard::apps::Secret;
use switchboard::auth::{self, BusClaims};

use crate::ledger::now_ms;

/// How one attempt ended.
pub enum Sent {
    /// 2xx: acknowledged.
    Ok,
    /// Worth retrying with the same idempotency key. `ambiguous`: the attempt may have
    /// published (no answer, a reset, a 5xx other than 503, or 409: another attempt holds
    /// the key).
    Retry { ambiguous: bool },
    /// Any other answer: retrying would not help.
    Refused,
}

/// Signs and sends calls to the nodes.
pub struct Api {
    http: reqwest::Client,
    /// `host:port` of each node's API, node 1 first.
    pub nodes: Vec<String>,
    metrics: Vec<String>,
    app_id: String,
    key: String,
    secret: Secret,
    /// Per node: when an API call through it last succeeded (ms).
    pub last_ok: Vec<AtomicU64>,
}

impl Api {
    pub fn new(nodes: Vec<String>, metrics: Vec<String>, app: (&str, &str, &str)) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(8)
            .tcp_nodelay(true)
            .build()
            .expect("http client");
        Self {
            http,
            last_ok: nodes.iter().map(|_| AtomicU64::new(0)).collect(),
            nodes,
            metrics,
            app_id: app.0.into(),
            key: app.1.into(),
            secret: Secret::new(app.2),
        }
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// A signed `POST {path}` with a JSON `body` through `node`.
    pub async fn post(&self, node: usize, path: &str, body: String) -> Sent {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let params = vec![
            ("auth_key".to_owned(), self.key.clone()),
            ("auth_timestamp".to_owned(), ts.to_string()),
            ("auth_version".to_owned(), "1.0".to_owned()),
            (
                "body_md5".to_owned(),
                hex::encode(Md5::digest(body.as_bytes())),
            ),
        ];
        let signature = auth::sign(
            &self.secret,
            auth::api_string_to_sign("POST", path, &params).as_bytes(),
        );
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let url = format!(
            "http://{}{path}?{}&auth_signature={signature}",
            self.nodes[node],
            query.join("&")
        );
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                self.last_ok[node].fetch_max(now_ms(), Ordering::AcqRel);
                Sent::Ok
            }
            Ok(r) => match r.status().as_u16() {
                503 | 408 | 429 => Sent::Retry { ambiguous: false },
                409 | 500..=599 => Sent::Retry { ambiguous: true },
                _ => Sent::Refused,
            },
            // Refused before anything was sent: the node is down.
            Err(e) if e.is_connect() => Sent::Retry { ambiguous: false },
            Err(_) => Sent::Retry { ambiguous: true },
        }
    }

    /// Whether `node` answers `GET /up` with 200 within half a second.
    pub async fn up(&self, node: usize) -> bool {
        let url = format!("http://{}/up", self.nodes[node]);
        let r = self
            .http
            .get(url)
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        r.is_ok_and(|r| r.status().is_success())
    }

    /// The Prometheus text of `node`, if it answers.
    pub async fn metrics(&self, node: usize) -> Option<String> {
        let url = format!("http://{}/metrics", self.metrics[node]);
        let r = self
            .http
            .get(url)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        r.text().await.ok()
    }

    /// A bus token for `user`, allowed into every `chaos-*` room, valid for a day.
    pub fn bus_token(&self, user: &str) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 86_400;
        let claims = BusClaims {
            iss: self.key.clone(),
            sub: user.into(),
            exp,
            watchlist: Vec::new(),
            channels: vec!["chaos-*".into()],
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.secret.expose()),
        )
        .expect("HS256 signing")
    }
}

/// The sum of the samples of metric `name` (all label sets) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
