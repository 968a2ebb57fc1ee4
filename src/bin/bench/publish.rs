//! The publisher: Pusher-signed HTTP API calls on an open-loop schedule.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::conn::now_ns;
use crate::Common;

/// Signs and sends API calls.
#[derive(Clone)]
pub struct Publisher {
    http: reqwest::Client,
    base: String,
    app_id: String,
    key: String,
    secret: String,
}

impl Publisher {
    pub fn new(c: &Common) -> Self {
        Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(c.http_concurrency)
                .tcp_nodelay(true)
                .build()
                .expect("http client"),
            base: format!("http://{}:{}", c.host, c.publish_port.unwrap_or(c.port)),
            app_id: c.app_id.clone(),
            key: c.key.clone(),
            secret: c.secret.clone(),
        }
    }

    fn signed_url(&self, path: &str, body: &str) -> String {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let md5 = hex::encode(Md5::digest(body.as_bytes()));
        let query = format!(
            "auth_key={}&auth_timestamp={ts}&auth_version=1.0&body_md5={md5}",
            self.key
        );
        let mut m = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("any key");
        m.update(format!("POST\n{path}\n{query}").as_bytes());
        let sig = hex::encode(m.finalize().into_bytes());
        format!("{}{path}?{query}&auth_signature={sig}", self.base)
    }

    async fn post(&self, path: &str, body: String) -> bool {
        let url = self.signed_url(path, &body);
        match self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// `POST /apps/{id}/events` for one channel.
    pub async fn trigger(&self, channel: &str, data: &str) -> bool {
        let body = serde_json::json!({"name":"bench","channel":channel,"data":data}).to_string();
        self.post(&format!("/apps/{}/events", self.app_id), body)
            .await
    }

    /// `POST /apps/{id}/bus/notifications` to the users `to`.
    pub async fn notify(&self, to: &[String], message: &str) -> bool {
        let body = serde_json::json!({"to":to,"notification_type":"bench","message":message});
        self.post(
            &format!("/apps/{}/bus/notifications", self.app_id),
            body.to_string(),
        )
        .await
    }

    /// `POST /apps/{id}/batch_events`.
    pub async fn batch(&self, events: &[(String, String)]) -> bool {
        let batch: Vec<_> = events
            .iter()
            .map(|(c, d)| serde_json::json!({"name":"bench","channel":c,"data":d}))
            .collect();
        let body = serde_json::json!({ "batch": batch }).to_string();
        self.post(&format!("/apps/{}/batch_events", self.app_id), body)
            .await
    }
}

/// The payload of event `seq`, padded to `size` bytes, stamped with the send time.
pub fn payload(seq: u64, size: usize) -> String {
    let mut s = format!("LG|{seq}|{}|", now_ns());
    while s.len() < size {
        s.push('x');
    }
    s
}

/// What a publishing run did.
pub struct Published {
    /// Per request: whether it was accepted (HTTP 2xx).
    pub accepted: Vec<bool>,
    /// Seconds spent publishing.
    pub secs: f64,
    /// Worst lag behind the schedule, in ms (large when `http_concurrency` capped the rate).
    pub max_sched_lag_ms: f64,
    /// Each request's time from being sent to its answer, in µs: what a publisher waits for.
    pub request_us: Vec<u32>,
}

/// Sends `rate` requests per second for `secs` seconds (at most `limit` seconds in total),
/// at most `concurrency` in flight. `send(i)` performs request `i`.
pub async fn open_loop<F, Fut>(rate: u64, secs: u64, concurrency: usize, send: F) -> Published
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let total = rate * secs;
    let sem = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let hard_stop = start + Duration::from_secs(3 * secs + 10);
    let mut tasks = Vec::with_capacity(total as usize);
    let mut max_lag = Duration::ZERO;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut i = 0;
    while i < total && Instant::now() < hard_stop {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        while i < due && Instant::now() < hard_stop {
            let scheduled = start + Duration::from_secs_f64(i as f64 / rate as f64);
            let permit = sem.clone().acquire_owned().await.expect("semaphore open");
            max_lag = max_lag.max(Instant::now().saturating_duration_since(scheduled));
            let fut = send(i);
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let ok = fut.await;
                let took = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                drop(permit);
                (ok, took)
            }));
            i += 1;
        }
    }
    let mut accepted = Vec::with_capacity(tasks.len());
    let mut request_us = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (ok, took) = t.await.unwrap_or((false, 0));
        accepted.push(ok);
        request_us.push(took);
    }
    Published {
        accepted,
        request_us,
        secs: start.elapsed().as_secs_f64(),
        max_sched_lag_ms: max_lag.as_secs_f64() * 1000.0,
    }
}
