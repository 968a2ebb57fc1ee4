//! The deployment files: `Dockerfile`, `.dockerignore` and `deploy/` (compose, nginx, Caddy,
//! systemd). Every `SWITCHBOARD_*` variable they use must be a setting the server reads, with
//! a value of the right type (the server ignores an unknown section silently, so a misspelt
//! variable would otherwise go unnoticed); their numbers must agree with the server's
//! timeouts; and each file must pass its own tool's check where that tool is on this machine
//! (`systemd-analyze`, `nginx -t`, `caddy validate`, PyYAML for the compose file), with a
//! printed note where it is not. The Dockerfile's HEALTHCHECK runs against the real binary.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::free_port;
use switchboard::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn temp_dir(what: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("switchboard-deploy-{}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------
// SWITCHBOARD_* variables
// ---------------------------------------------------------------------------------------

/// Every `SWITCHBOARD_*` name in `text`, with the value given to it there (`NAME=value` as in
/// a Dockerfile or a unit, `NAME: value` as in compose), if any.
fn variables(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("SWITCHBOARD_") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let len = text[at..]
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(text.len() - at);
        let name = &text[at..at + len];
        if name.ends_with('_') {
            continue; // prose: `SWITCHBOARD_<SECTION>_<KEY>`
        }
        let after = &text[at + len..];
        let line_end = after.find('\n').unwrap_or(after.len());
        let value = match after.strip_prefix('=') {
            Some(v) => Some(v.split_whitespace().next().unwrap_or("").to_owned()),
            None => after[..line_end]
                .strip_prefix(": ")
                .map(|v| v.trim().to_owned()),
        };
        let value = value.map(|v| interpolate(v.trim_matches(|c| c == '"' || c == '\'')));
        out.push((name.to_owned(), value));
    }
    out
}

/// Compose's `${NAME:-default}` becomes the default; `${NAME}` and `${NAME:?error}`, a value
/// the operator must give, become a placeholder string.
fn interpolate(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e);
        let inner = &rest[start + 2..end];
        match inner.split_once(":-") {
            Some((_, default)) => out.push_str(default),
            None => out.push_str("placeholder"),
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Whether the server reads `name` (with `value`, or its setting's example value) as a
/// setting: the server's own key list decides, as it does at start-up.
fn check_variable(name: &str, value: Option<&str>) -> Result<(), String> {
    use switchboard::config::keys::{self, EnvVar};
    let value = match keys::env_var(name) {
        EnvVar::Ignored if name == "SWITCHBOARD_CONFIG" => return Ok(()),
        EnvVar::Ignored => return Err(format!("{name} is not a setting")),
        EnvVar::Unknown(_) => return Err(format!("{name} names no setting")),
        EnvVar::Sets(key) => match (value, &key.example) {
            (Some(v), _) => v.to_owned(),
            (None, toml::Value::String(s)) => s.clone(),
            (None, v) => v.to_string(),
        },
    };
    Config::load(None, [(name.to_owned(), value.clone())])
        .map(|_| ())
        .map_err(|e| format!("{name}={value:?}: {e}"))
}

/// Asserts that every `SWITCHBOARD_*` variable of the file is a real setting; returns them.
fn assert_variables_are_settings(path: &str) -> Vec<(String, Option<String>)> {
    let vars = variables(&read(path));
    let errors: Vec<String> = vars
        .iter()
        .filter_map(|(n, v)| check_variable(n, v.as_deref()).err())
        .collect();
    assert!(errors.is_empty(), "{path}:\n{}", errors.join("\n"));
    vars
}

/// The configuration that the file's variables, taken together, give.
fn load(vars: &[(String, Option<String>)]) -> Config {
    let env = vars
        .iter()
        .filter_map(|(n, v)| Some((n.clone(), v.clone()?)))
        .filter(|(n, _)| n != "SWITCHBOARD_CONFIG");
    Config::load(None, env).unwrap_or_else(|e| panic!("{vars:?}: {e}"))
}

#[test]
fn the_variable_check_catches_what_the_server_would_ignore_or_refuse() {
    assert_eq!(check_variable("SWITCHBOARD_HOST", Some("0.0.0.0")), Ok(()));
    assert_eq!(
        check_variable("SWITCHBOARD_DATA_DIR", Some("/data")),
        Ok(())
    );
    assert_eq!(check_variable("SWITCHBOARD_REDIS_URL", None), Ok(()));
    assert_eq!(
        check_variable("SWITCHBOARD_SERVER_SHUTDOWN_DELAY_MS", Some("5000")),
        Ok(())
    );
    // A misspelt section or key is fatal.
    assert!(check_variable("SWITCHBOARD_METRIC_ENABLED", Some("false")).is_err());
    assert!(check_variable("SWITCHBOARD_DATA_DIRECTORY", Some("/data")).is_err());
    assert!(check_variable("SWITCHBOARD_REDIS_URI", None).is_err());
    // The wrong type.
    assert!(check_variable("SWITCHBOARD_SERVER_SHUTDOWN_GRACE", Some("10s")).is_err());

    let vars = variables(
        "ENV SWITCHBOARD_HOST=0.0.0.0 \\\n    SWITCHBOARD_DATA_DIR=/data\n\
         # SWITCHBOARD_<SECTION>_<KEY>\n  SWITCHBOARD_APP_KEY: ${SWITCHBOARD_APP_KEY:?set it}\n\
         A: ${SWITCHBOARD_PORT:-6001}\n  SWITCHBOARD_APP_ID: ${X:-app-id}\n",
    );
    let got: Vec<(&str, Option<&str>)> = vars
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("SWITCHBOARD_HOST", Some("0.0.0.0")),
            ("SWITCHBOARD_DATA_DIR", Some("/data")),
            ("SWITCHBOARD_APP_KEY", Some("placeholder")),
            ("SWITCHBOARD_APP_KEY", None),
            ("SWITCHBOARD_PORT", None),
            ("SWITCHBOARD_APP_ID", Some("app-id")),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------------

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

fn instruction<'a>(lines: &'a [String], name: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(str::trim)
        .collect()
}

#[test]
fn dockerfile_builds_in_two_stages_and_runs_unprivileged_on_data() {
    let lines = dockerfile();
    let from = instruction(&lines, "FROM");
    assert_eq!(from.len(), 2, "{from:?}");
    assert!(from[0].starts_with("rust:1-bookworm AS "), "{from:?}");
    assert_eq!(from[1], "debian:bookworm-slim");
    let run = instruction(&lines, "RUN").join("\n");
    assert!(run.contains("cargo build --release --locked"), "{run}");

    let vars = assert_variables_are_settings("Dockerfile");
    let config = load(&vars);
    let defaults = Config::default();
    assert_eq!(config.server.host, "0.0.0.0");
    assert_eq!(config.data.dir, Path::new("/data"));
    assert_eq!(instruction(&lines, "VOLUME"), [r#"["/data"]"#]);
    let exposed: Vec<u16> = instruction(&lines, "EXPOSE")
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(exposed, [defaults.server.port, defaults.metrics.port]);

    let user = instruction(&lines, "USER");
    assert_eq!(user.len(), 1, "{user:?}");
    let who = user[0].split(':').next().unwrap();
    assert!(who != "root" && who != "0", "runs as {who}");
    assert_eq!(instruction(&lines, "STOPSIGNAL"), ["SIGTERM"]);
    assert_eq!(
        instruction(&lines, "ENTRYPOINT"),
        [r#"["/usr/local/bin/switchboard"]"#]
    );
    assert_eq!(instruction(&lines, "CMD"), [r#"["serve"]"#]);
}

#[test]
fn dockerignore_keeps_what_the_build_needs() {
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect();
    assert!(ignored.iter().any(|l| l == "target"), "{ignored:?}");
    let manifest = read("Cargo.toml");
    let mut needed = vec![
        "Cargo.toml".to_owned(),
        "Cargo.lock".to_owned(),
        "src".to_owned(),
    ];
    needed.extend(
        manifest
            .lines()
            .filter_map(|l| l.trim().strip_prefix("path = "))
            .map(|p| p.trim_matches('"').to_owned()),
    );
    for path in &needed {
        for pattern in &ignored {
            let p = pattern.trim_start_matches("**/");
            assert!(
                !(path == p || path.starts_with(&format!("{p}/"))),
                ".dockerignore's {pattern:?} leaves {path} out of the build"
            );
        }
    }
}

/// `switchboard serve` on `port`, with the environment the image sets, plus `extra`.
fn spawn_server(port: u16, data: &Path, extra: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("SWITCHBOARD_HOST", "127.0.0.1")
        .env("SWITCHBOARD_PORT", port.to_string())
        .env("SWITCHBOARD_METRICS_ENABLED", "false")
        .env("SWITCHBOARD_DATA_DIR", data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Runs the HEALTHCHECK command as Docker would in the container (where SWITCHBOARD_PORT is
/// the container's environment); true when it reports healthy.
fn healthy(check: &[String], port: u16) -> bool {
    let mut child = Command::new(&check[0])
        .args(&check[1..])
        .env("SWITCHBOARD_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dockerfile_healthcheck_follows_up_against_the_real_binary() {
    let lines = dockerfile();
    let hc = instruction(&lines, "HEALTHCHECK");
    assert_eq!(hc.len(), 1, "{hc:?}");
    let (_, json) = hc[0]
        .split_once(" CMD ")
        .expect("HEALTHCHECK ... CMD [...]");
    let check: Vec<String> = serde_json::from_str(json).expect("CMD in exec form");
    assert!(check.join(" ").contains("/up"), "{check:?}");
    if which(&check[0]).is_none() {
        println!(
            "note: {} not found here; the HEALTHCHECK was not run",
            check[0]
        );
        return;
    }
    let port = free_port();
    let data = temp_dir("healthcheck");
    let mut server = spawn_server(
        port,
        &data,
        &[("SWITCHBOARD_SERVER_SHUTDOWN_DELAY_MS", "3000")],
    );
    wait_until("healthy while serving", || healthy(&check, port));
    // SIGTERM: the node drains, /up answers 503, the check must report unhealthy.
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    wait_until("unhealthy while draining", || !healthy(&check, port));
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = server.kill();
            panic!("the server did not exit within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!healthy(&check, port), "healthy with no server");
    let mut log = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let _ = std::fs::remove_dir_all(&data);
    assert!(!log.contains("ERROR"), "{log}");
}

// ---------------------------------------------------------------------------------------
// deploy/compose.yaml and deploy/nginx.conf
// ---------------------------------------------------------------------------------------

const NODES: [&str; 2] = ["switchboard-1", "switchboard-2"];

/// The compose file as JSON, through PyYAML (merge keys resolved), where python3 has it.
fn compose_json() -> Option<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(repo("deploy/compose.yaml"))
        .output()
        .ok()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && err.contains("No module named 'yaml'") {
        return None;
    }
    assert!(
        out.status.success(),
        "deploy/compose.yaml does not parse as YAML:\n{err}"
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// Seconds in compose's duration format (`30s`, `1m30s`).
fn compose_secs(d: &str) -> u64 {
    let mut total = 0;
    let mut n = String::new();
    for c in d.chars() {
        if c.is_ascii_digit() {
            n.push(c);
            continue;
        }
        let v: u64 = std::mem::take(&mut n).parse().unwrap();
        total += v * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => panic!("unexpected duration {d:?}"),
        };
    }
    assert!(n.is_empty(), "duration {d:?} without a unit");
    total
}

/// The `server host:port` lines of the nginx `upstream` block.
fn nginx_upstreams() -> Vec<String> {
    read("deploy/nginx.conf")
        .lines()
        .skip_while(|l| !l.trim().starts_with("upstream "))
        .take_while(|l| l.trim() != "}")
        .filter_map(|l| l.trim().strip_prefix("server "))
        .map(|s| {
            s.split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches(';')
                .to_owned()
        })
        .collect()
}

#[test]
fn compose_runs_two_nodes_with_their_own_data_behind_nginx() {
    let text = read("deploy/compose.yaml");
    let vars = assert_variables_are_settings("deploy/compose.yaml");
    for needed in [
        "SWITCHBOARD_REDIS_URL",
        "SWITCHBOARD_DATABASE_URL",
        "SWITCHBOARD_DATA_DIR",
    ] {
        assert!(vars.iter().any(|(n, _)| n == needed), "{needed} not set");
    }
    for s in NODES.iter().chain(&["nginx:", "redis:", "postgres:"]) {
        assert!(
            text.contains(&format!("\n  {}", s.trim_end_matches(':'))),
            "no service {s}"
        );
    }
    assert!(text.contains("image: redis:7\n"), "redis:7");
    assert!(text.contains("image: postgres:16\n"), "postgres:16");
    assert!(
        text.contains("./nginx.conf:/etc/nginx/nginx.conf"),
        "nginx.conf mount"
    );

    let Some(doc) = compose_json() else {
        println!("note: python3 has no PyYAML here; compose.yaml checked as text only");
        return;
    };
    let services = doc["services"].as_object().expect("services");
    let mut volumes = Vec::new();
    for node in NODES {
        let s = &services[node];
        assert_eq!(s["build"]["context"], "..", "{node} builds the repository");
        assert_eq!(s["build"]["dockerfile"], "Dockerfile");
        let env: Vec<(String, Option<String>)> = s["environment"]
            .as_object()
            .unwrap_or_else(|| panic!("{node}: environment as a map"))
            .iter()
            .filter(|(k, _)| k.starts_with("SWITCHBOARD_"))
            .map(|(k, v)| {
                (
                    k.clone(),
                    Some(interpolate(v.as_str().expect("string values"))),
                )
            })
            .collect();
        let config = load(&env);
        assert_eq!(config.redis.url.as_deref(), Some("redis://redis:6379"));
        let db = config.database.url.as_deref().unwrap_or("");
        assert!(
            db.starts_with("postgres://") && db.contains("@postgres:5432/"),
            "{db}"
        );
        // Each node its own volume at its data directory.
        let data_dir = config.data.dir.to_str().unwrap().to_owned();
        let mounts: Vec<&str> = s["volumes"]
            .as_array()
            .unwrap_or_else(|| panic!("{node}: volumes"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let at_data: Vec<&str> = mounts
            .iter()
            .filter_map(|m| m.strip_suffix(&format!(":{data_dir}")))
            .collect();
        assert_eq!(
            at_data.len(),
            1,
            "{node}: one volume at {data_dir}: {mounts:?}"
        );
        volumes.push(at_data[0].to_owned());
        // The drain finishes before compose sends SIGKILL.
        let stop = compose_secs(s["stop_grace_period"].as_str().expect("stop_grace_period"));
        let drain = config.server.shutdown_delay_ms / 1000 + config.server.shutdown_grace;
        assert!(
            stop > drain,
            "{node}: stop_grace_period {stop} s <= drain {drain} s"
        );
        for dep in ["redis", "postgres"] {
            assert_eq!(
                s["depends_on"][dep]["condition"], "service_healthy",
                "{node}"
            );
        }
        // nginx sends to this node's port.
        let upstream = format!("{node}:{}", config.server.port);
        assert!(
            nginx_upstreams().contains(&upstream),
            "nginx has no {upstream}"
        );
    }
    assert_ne!(volumes[0], volumes[1], "two nodes share a data volume");
    for v in &volumes {
        assert!(doc["volumes"].get(v).is_some(), "volume {v} not declared");
    }
    assert_eq!(
        nginx_upstreams().len(),
        NODES.len(),
        "{:?}",
        nginx_upstreams()
    );
    for svc in ["redis", "postgres"] {
        let test = &services[svc]["healthcheck"]["test"];
        assert!(test.is_array(), "{svc} has no healthcheck");
    }
    assert_eq!(services["redis"]["image"], "redis:7");
    assert_eq!(services["postgres"]["image"], "postgres:16");
    for node in NODES {
        assert_eq!(
            services["nginx"]["depends_on"][node]["condition"],
            "service_healthy"
        );
    }
}

/// Seconds of an nginx time value (`300s`, `5m`, `300`).
fn nginx_secs(v: &str) -> u64 {
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    n.parse::<u64>().unwrap()
        * match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => panic!("unexpected nginx time {v:?}"),
        }
}

fn nginx_directive(conf: &str, name: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().trim_end_matches(';').trim().to_owned())
        .collect()
}

#[test]
fn nginx_proxies_websockets_with_timeouts_above_the_servers() {
    let conf = read("deploy/nginx.conf");
    assert_eq!(nginx_directive(&conf, "proxy_http_version"), ["1.1"]);
    let headers = nginx_directive(&conf, "proxy_set_header");
    for h in [
        "Upgrade $http_upgrade",
        "Connection $connection_upgrade",
        "X-Forwarded-For $proxy_add_x_forwarded_for",
        "Host $host",
    ] {
        assert!(
            headers
                .iter()
                .any(|x| x.split_whitespace().eq(h.split_whitespace())),
            "{h}"
        );
    }
    assert_eq!(
        nginx_directive(&conf, "map"),
        ["$http_upgrade $connection_upgrade {"]
    );
    assert_eq!(nginx_directive(&conf, "proxy_buffering"), ["off"]);
    // An idle WebSocket is silent for activity_timeout, then has pong_timeout to answer.
    let s = Config::default().server;
    let idle = s.activity_timeout + s.pong_timeout;
    for d in ["proxy_read_timeout", "proxy_send_timeout"] {
        let v = nginx_directive(&conf, d);
        assert_eq!(v.len(), 1, "{d}: {v:?}");
        assert!(
            nginx_secs(&v[0]) > idle,
            "{d} {} is not above {idle} s",
            v[0]
        );
    }

    let Some(nginx) = tool("SWITCHBOARD_TEST_NGINX", "nginx") else {
        println!("note: nginx not found here; `nginx -t` was not run");
        return;
    };
    // nginx resolves upstream names at load: the compose service names become loopback, and
    // its temp folders go to a folder of this test. Everything else is the file as shipped.
    let dir = temp_dir("nginx");
    let mut local = String::new();
    for line in conf.lines() {
        let mut line = line.to_owned();
        for node in NODES {
            line = line.replace(&format!("server {node}:"), "server 127.0.0.1:");
        }
        local.push_str(&line);
        local.push('\n');
        if line.trim() == "http {" {
            for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                local.push_str(&format!("    {t}_temp_path {}/{t};\n", dir.display()));
            }
        }
    }
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, local).unwrap();
    let out = Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .arg("-g")
        .arg(format!("pid {}/nginx.pid;", dir.display()))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// deploy/switchboard.service
// ---------------------------------------------------------------------------------------

/// The path of a program: `$env_var`, else the first on PATH (or in /usr/sbin).
fn tool(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    which(name)
}

fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.exists());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit = read("deploy/switchboard.service");
    for (key, value) in [
        (
            "ExecStart",
            "/usr/local/bin/switchboard serve --config /etc/switchboard/switchboard.toml",
        ),
        ("EnvironmentFile", "-/etc/switchboard/env"),
        ("Environment", "SWITCHBOARD_DATA_DIR=/var/lib/switchboard"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "switchboard"),
        ("Restart", "on-failure"),
        ("LimitNOFILE", "1048576"),
        ("KillSignal", "SIGTERM"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
    ] {
        assert!(
            unit_values(&unit, key).iter().any(|v| v == value),
            "{key}={value} missing"
        );
    }
    let vars = assert_variables_are_settings("deploy/switchboard.service");
    let config = load(&vars);
    assert_eq!(
        Path::new("/var/lib").join(&unit_values(&unit, "StateDirectory")[0]),
        config.data.dir,
        "the data directory is the StateDirectory"
    );
    let stop = unit_values(&unit, "TimeoutStopSec");
    assert_eq!(stop.len(), 1);
    let stop = nginx_secs(&stop[0]);
    let drain = config.server.shutdown_delay_ms / 1000 + config.server.shutdown_grace;
    assert!(stop > drain, "TimeoutStopSec {stop} s <= drain {drain} s");

    // The binary takes ExecStart's arguments: it gets as far as reading the file.
    let exec = &unit_values(&unit, "ExecStart")[0];
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let out = Command::new(BIN)
        .args(&args[..2])
        .arg("/nonexistent/switchboard.toml")
        .env_clear()
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read config file"), "{err}");

    let Some(analyze) = which("systemd-analyze") else {
        println!("note: systemd-analyze not found here; the unit was not verified");
        return;
    };
    // verify wants ExecStart's binary to exist: this build's, in a copy of the unit.
    let dir = temp_dir("unit");
    let path = dir.join("switchboard.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/switchboard", BIN)).unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are warnings on stderr with exit code 0.
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify:\n{err}"
    );
    // The exposure score (0-10, shown as 0.0-10.0; the threshold is in tenths): at most 2.0.
    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze security:\n{}",
        report.lines().last().unwrap_or("")
    );
}

// ---------------------------------------------------------------------------------------
// deploy/Caddyfile and the README
// ---------------------------------------------------------------------------------------

#[test]
fn caddyfile_balances_the_nodes_on_up_and_validates() {
    let caddy = read("deploy/Caddyfile");
    let proxy = caddy
        .lines()
        .find_map(|l| l.trim().strip_prefix("reverse_proxy "))
        .expect("reverse_proxy");
    let upstreams: Vec<&str> = proxy.trim_end_matches('{').split_whitespace().collect();
    let port = Config::default().server.port;
    let want: Vec<String> = NODES.iter().map(|n| format!("{n}:{port}")).collect();
    assert_eq!(upstreams, want);
    assert!(caddy.lines().any(|l| l.trim() == "health_uri /up"));
    assert!(variables(&caddy).is_empty());

    let Some(bin) = tool("SWITCHBOARD_TEST_CADDY", "caddy") else {
        println!("note: caddy not found here; `caddy validate` was not run");
        return;
    };
    let home = temp_dir("caddy");
    let out = Command::new(bin)
        .args(["validate", "--adapter", "caddyfile", "--config"])
        .arg(repo("deploy/Caddyfile"))
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    assert!(
        out.status.success(),
        "caddy validate:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn readme_deploying_section_matches_the_files() {
    let readme = read("README.md");
    let start = readme
        .find("\n## Deploying\n")
        .expect("README has ## Deploying");
    let config = readme.find("\n## Configuration\n").unwrap();
    assert!(config < start, "Deploying comes after Configuration");
    let end = readme[start + 1..]
        .find("\n## ")
        .map_or(readme.len(), |e| start + 1 + e);
    let section = &readme[start..end];
    let timeout = nginx_directive(&read("deploy/nginx.conf"), "proxy_read_timeout")[0].clone();
    let secs = nginx_secs(&timeout).to_string();
    for needed in [
        "nginx.ingress.kubernetes.io/proxy-read-timeout",
        "nginx.ingress.kubernetes.io/proxy-send-timeout",
        "shutdown_delay_ms",
        "4200",
        "SWITCHBOARD_SERVER_TLS_CERT_FILE",
        "SWITCHBOARD_SERVER_TLS_KEY_FILE",
        "deploy/compose.yaml",
        "deploy/switchboard.service",
        "deploy/Caddyfile",
        &format!("\"{secs}\""),
    ] {
        assert!(
            section.contains(needed),
            "README's Deploying has no {needed}"
        );
    }
}
