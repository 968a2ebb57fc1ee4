//! `switchboard apps list|get|create|update|delete`: a thin client of the admin API
//! (`/admin/apps` on the metrics listener), so that operators manage apps without curl.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use switchboard::config::Config;

/// The port of a metrics listener whose configuration cannot be read: the built-in default
/// of `metrics.port`.
const DEFAULT_METRICS_PORT: u16 = 9601;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct AppsArgs {
    #[command(subcommand)]
    action: AppsAction,
    /// Base URL of the admin API (the metrics listener); default: http://127.0.0.1:<metrics.port
    /// of the configuration>.
    #[arg(long, env = "SWITCHBOARD_ADMIN_URL", global = true)]
    url: Option<String>,
    /// The admin token (`[admin] token` of the server).
    #[arg(
        long,
        env = "SWITCHBOARD_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// TOML configuration file, read only for the default URL's port.
    #[arg(long, env = "SWITCHBOARD_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AppsAction {
    /// Every app, sorted by id.
    List,
    /// One app.
    Get { id: String },
    /// A new app; its secret (generated unless given) is printed only this once.
    Create(Fields),
    /// Changes an app created through the API (config-file apps are read-only).
    Update {
        /// The app to change (or `--id`).
        #[arg(id = "app", value_name = "ID")]
        app: Option<String>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Deletes an app created through the API and closes its connections.
    Delete { id: String },
}

/// The body of `create` / `update`: `--json`, with the flags set on top of it.
#[derive(Args)]
struct Fields {
    /// The body as a JSON object (any keys of an `[[apps]]` entry).
    #[arg(long)]
    json: Option<String>,
    /// App id (generated when absent); on `update`, the app to change.
    #[arg(long)]
    id: Option<String>,
    /// App key, the public one clients connect with (generated when absent).
    #[arg(long)]
    key: Option<String>,
    /// App secret (generated when absent); on `update`, rotates it (the old one stays valid
    /// for `secret_grace_secs`, a body key: default 86400).
    #[arg(long)]
    secret: Option<String>,
    /// Disabled apps refuse connections (4003) and API calls.
    #[arg(long)]
    enabled: Option<bool>,
    /// Whether clients may send client-* events.
    #[arg(long)]
    client_events: Option<bool>,
}

impl Fields {
    fn body(self) -> Result<Value, String> {
        let mut body = match self.json {
            Some(text) => match serde_json::from_str(&text) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err("--json must be a JSON object".into()),
                Err(e) => return Err(format!("--json is not valid JSON: {e}")),
            },
            None => Map::new(),
        };
        let strings = [("id", self.id), ("key", self.key), ("secret", self.secret)];
        for (name, value) in strings {
            if let Some(v) = value {
                body.insert(name.into(), Value::String(v));
            }
        }
        let flags = [
            ("enabled", self.enabled),
            ("client_events", self.client_events),
        ];
        for (name, value) in flags {
            if let Some(v) = value {
                body.insert(name.into(), Value::Bool(v));
            }
        }
        Ok(Value::Object(body))
    }
}

pub fn run(args: AppsArgs) -> ExitCode {
    let base = args
        .url
        .unwrap_or_else(|| default_url(args.config.as_deref()));
    let base = base.trim_end_matches('/');
    let (method, path, body) = match args.action {
        AppsAction::List => (Method::GET, "/admin/apps".to_owned(), None),
        AppsAction::Get { id } => (Method::GET, app_path(&id), None),
        AppsAction::Delete { id } => (Method::DELETE, app_path(&id), None),
        AppsAction::Create(fields) => match fields.body() {
            Ok(b) => (Method::POST, "/admin/apps".to_owned(), Some(b)),
            Err(e) => return fail(&e),
        },
        AppsAction::Update { app, mut fields } => {
            // `update X` and `update --id X` both name the app; the id is not a change.
            let id = match (app, fields.id.take()) {
                (Some(a), Some(i)) if a != i => {
                    return fail("the app is named twice (ID and --id differ); ids cannot change")
                }
                (Some(id), _) | (None, Some(id)) => id,
                (None, None) => return fail("which app? give its id: apps update ID ..."),
            };
            match fields.body() {
                Ok(b) => (Method::PATCH, app_path(&id), Some(b)),
                Err(e) => return fail(&e),
            }
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let url = format!("{base}{path}");
    match runtime.block_on(call(method, &url, args.token.as_deref(), body)) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("switchboard: {message}");
    ExitCode::FAILURE
}

/// `/admin/apps/{id}`, the id percent-encoded so that an odd id cannot name another path.
fn app_path(id: &str) -> String {
    let id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    // byte_serialize writes a space as '+', which a path would keep literally.
    format!("/admin/apps/{}", id.replace('+', "%20"))
}

/// The metrics listener of the local configuration, loaded as `config check` loads it.
fn default_url(file: Option<&Path>) -> String {
    // The CLI's own variables are not settings of the config version this binary may be
    // talking to; left in, they would make the load fail and hide SWITCHBOARD_METRICS_PORT.
    let env = std::env::vars()
        .filter(|(k, _)| k != "SWITCHBOARD_ADMIN_URL" && k != "SWITCHBOARD_ADMIN_TOKEN");
    let port = Config::load(file, env).map_or(DEFAULT_METRICS_PORT, |c| c.metrics.port);
    format!("http://127.0.0.1:{port}")
}

/// The answer's body (pretty JSON when it is JSON), or the error message for a non-2xx.
async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut req = client.request(method.clone(), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req
        .send()
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = res.status();
    let text = res
        .text()
        .await
        .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
    let json: Option<Value> = serde_json::from_str(&text).ok();
    if status.is_success() {
        return Ok(match json {
            Some(v) => serde_json::to_string_pretty(&v).unwrap_or(text),
            // 204 after a delete: nothing to show but that it worked.
            None if status == StatusCode::NO_CONTENT => "{}".to_owned(),
            None => text,
        });
    }
    Err(error_message(status, json.as_ref(), &text))
}

/// "401 Unauthorized: bad token (field: x)" from `{"error","field"}`, or the raw body.
fn error_message(status: StatusCode, json: Option<&Value>, text: &str) -> String {
    let error = json.and_then(|v| v.get("error")).and_then(Value::as_str);
    let field = json.and_then(|v| v.get("field")).and_then(Value::as_str);
    let detail = match (error, field) {
        (Some(e), Some(f)) => format!("{e} (field: {f})"),
        (Some(e), None) => e.to_owned(),
        _ if text.trim().is_empty() => "no details".to_owned(),
        _ => text.trim().to_owned(),
    };
    format!("{status}: {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_json_body() {
        let fields = Fields {
            json: Some(r#"{"id":"a","max_connections":5}"#.into()),
            id: Some("b".into()),
            key: None,
            secret: None,
            enabled: Some(false),
            client_events: None,
        };
        assert_eq!(
            fields.body().unwrap(),
            serde_json::json!({"id":"b","max_connections":5,"enabled":false})
        );
    }

    #[test]
    fn a_json_body_must_be_an_object() {
        let fields = Fields {
            json: Some("[1]".into()),
            id: None,
            key: None,
            secret: None,
            enabled: None,
            client_events: None,
        };
        assert!(fields.body().is_err());
    }

    #[test]
    fn ids_are_encoded_in_the_path() {
        assert_eq!(app_path("a b/c"), "/admin/apps/a%20b%2Fc");
    }

    #[test]
    fn errors_name_the_status_and_the_message() {
        let v = serde_json::json!({"error":"bad","field":"key"});
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, Some(&v), ""),
            "400 Bad Request: bad (field: key)"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, None, " oops "),
            "502 Bad Gateway: oops"
        );
    }
}
