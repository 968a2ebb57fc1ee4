//! `switchboard apps ...` against a mock of the admin API: what the binary sends (method,
//! path, bearer token, JSON body), what it prints, and its exit code.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const TOKEN: &str = "cli-test-token";

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    authorization: Option<String>,
    body: Option<Value>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn app_view(id: &str, key: &str) -> Value {
    json!({"id": id, "key": key, "enabled": true, "client_events": false,
           "user_authentication": false, "source": "store", "connections": 0})
}

/// The contract's answers for the calls the CLI makes; 401 for any other token.
async fn admin(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Option<Value> = serde_json::from_slice(&body).ok();
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        path: uri.path().to_owned(),
        authorization: authorization.clone(),
        body: body.clone(),
    });
    if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        let answer = json!({"error": "missing or wrong admin token"});
        return (StatusCode::UNAUTHORIZED, axum::Json(answer)).into_response();
    }
    match (method, uri.path()) {
        (Method::GET, "/admin/apps") => {
            let apps = json!({"apps": [app_view("app-1", "key-1"), app_view("app-2", "key-2")]});
            axum::Json(apps).into_response()
        }
        (Method::POST, "/admin/apps") => {
            let b = body.unwrap_or_default();
            let id = b["id"].as_str().unwrap_or("generated");
            let key = b["key"].as_str().unwrap_or("generated");
            let answer = json!({"app": app_view(id, key), "secret": "the-new-secret"});
            (StatusCode::CREATED, axum::Json(answer)).into_response()
        }
        (Method::DELETE, "/admin/apps/app-2") => StatusCode::NO_CONTENT.into_response(),
        (Method::PATCH, "/admin/apps/app-1") => {
            let answer = json!({"error": "app-1 comes from the config file", "field": "id"});
            (StatusCode::FORBIDDEN, axum::Json(answer)).into_response()
        }
        _ => {
            let answer = json!({"error": "no such app"});
            (StatusCode::NOT_FOUND, axum::Json(answer)).into_response()
        }
    }
}

async fn mock() -> (SocketAddr, Log) {
    let log = Log::default();
    let app = Router::new().fallback(admin).with_state(log.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, log)
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with only `env` in its environment (none of the developer's shell).
async fn switchboard(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear().kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("the CLI did not exit within 20 s")
        .expect("the CLI could not be run");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn list_prints_the_apps_as_json() {
    let (addr, log) = mock().await;
    let url = format!("http://{addr}");
    let run = switchboard(&["apps", "list", "--url", &url, "--token", TOKEN], &[]).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let printed: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    let ids: Vec<&str> = printed["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["app-1", "app-2"]);
    // Pretty-printed, for people.
    assert!(run.stdout.contains("\n  \"apps\""), "{}", run.stdout);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].path, "/admin/apps");
}

#[tokio::test]
async fn create_sends_the_flags_as_json_with_the_bearer_token() {
    let (addr, log) = mock().await;
    let url = format!("http://{addr}");
    let args = [
        "apps",
        "create",
        "--json",
        r#"{"max_connections": 50, "enabled": true}"#,
        "--id",
        "new-app",
        "--key",
        "new-key",
        "--enabled",
        "false",
        "--client-events",
        "true",
    ];
    // URL and token from the environment, as an operator's shell would set them.
    let env = [
        ("SWITCHBOARD_ADMIN_URL", url.as_str()),
        ("SWITCHBOARD_ADMIN_TOKEN", TOKEN),
    ];
    let run = switchboard(&args, &env).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let printed: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(printed["secret"], "the-new-secret");
    assert_eq!(printed["app"]["id"], "new-app");
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].path, "/admin/apps");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer cli-test-token")
    );
    assert_eq!(
        seen[0].body,
        Some(json!({"id": "new-app", "key": "new-key", "enabled": false,
                    "client_events": true, "max_connections": 50}))
    );
}

#[tokio::test]
async fn a_wrong_token_exits_1_with_the_servers_message() {
    let (addr, log) = mock().await;
    let url = format!("http://{addr}");
    let run = switchboard(&["apps", "list", "--url", &url, "--token", "wrong"], &[]).await;
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    assert!(
        run.stderr.contains("401") && run.stderr.contains("missing or wrong admin token"),
        "stderr: {}",
        run.stderr
    );
    assert_eq!(
        log.lock().unwrap()[0].authorization.as_deref(),
        Some("Bearer wrong")
    );
}

#[tokio::test]
async fn other_errors_name_the_field_and_delete_succeeds_on_204() {
    let (addr, log) = mock().await;
    let url = format!("http://{addr}");
    let flags = ["--url", url.as_str(), "--token", TOKEN];
    let update = [
        &["apps", "update", "app-1", "--enabled", "false"][..],
        &flags,
    ]
    .concat();
    let run = switchboard(&update, &[]).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("403") && run.stderr.contains("(field: id)"),
        "stderr: {}",
        run.stderr
    );
    // `--id` names the app as well, and is not sent as a change.
    let update = [
        &["apps", "update", "--id", "app-1", "--client-events", "true"][..],
        &flags,
    ]
    .concat();
    assert_eq!(switchboard(&update, &[]).await.code, Some(1));
    let delete = [&["apps", "delete", "app-2"][..], &flags].concat();
    let run = switchboard(&delete, &[]).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen[0].method, Method::PATCH);
    assert_eq!(seen[0].path, "/admin/apps/app-1");
    assert_eq!(seen[0].body, Some(json!({"enabled": false})));
    assert_eq!(seen[1].path, "/admin/apps/app-1");
    assert_eq!(seen[1].body, Some(json!({"client_events": true})));
    assert_eq!(seen[2].method, Method::DELETE);
    assert_eq!(seen[2].path, "/admin/apps/app-2");
}

#[tokio::test]
async fn without_a_url_the_metrics_port_of_the_configuration_is_used() {
    let (addr, log) = mock().await;
    let port = addr.port().to_string();
    let env = [
        ("SWITCHBOARD_METRICS_PORT", port.as_str()),
        ("SWITCHBOARD_ADMIN_TOKEN", TOKEN),
    ];
    let run = switchboard(&["apps", "get", "app-9"], &env).await;
    // The mock knows no app-9: reaching it at all is what this test is about.
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("no such app"), "stderr: {}", run.stderr);
    assert_eq!(log.lock().unwrap()[0].path, "/admin/apps/app-9");
}
