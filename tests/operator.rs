//! What an operator meets before the first client: the binary's configuration commands,
//! its start-up errors (named, before anything says "listening"), its start-up summary and
//! its log formats. Runs the real binary.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn switchboard(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear().env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `serve` until it exits (or 10 s); returns (exit code, stderr).
fn serve_to_exit(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = switchboard(&["serve"], env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after 10 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `serve` and returns it with the first log line that says "listening".
fn serve_until_listening(env: &[(&str, &str)]) -> (Child, String) {
    let mut child = switchboard(&["serve"], env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a listening line within 10 s");
    (child, line)
}

#[test]
fn config_commands_check_print_and_write_the_example() {
    let out = switchboard(&["config", "example"], &[]).output().unwrap();
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).unwrap();
    assert_eq!(example, switchboard::config::keys::EXAMPLE);
    // The example is a valid configuration file.
    let dir = temp_dir("operator");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("switchboard.toml");
    std::fs::write(&file, &example).unwrap();
    let check = |env: &[(&str, &str)]| {
        let out = switchboard(
            &["config", "check", "--config", file.to_str().unwrap()],
            env,
        )
        .output()
        .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(check(&[]).0, Some(0));
    let (code, err) = check(&[("SWITCHBOARD_METRIC_PORT", "9700")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("did you mean SWITCHBOARD_METRICS_PORT?"),
        "{err}"
    );
    // One line, one cause: not repeated by an error chain.
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(err.matches("SWITCHBOARD_METRIC_PORT").count(), 1, "{err}");

    let out = switchboard(
        &["config", "print", "--config", file.to_str().unwrap()],
        &[
            ("SWITCHBOARD_APP_SECRET", "s3cr3t-value"),
            ("SWITCHBOARD_PORT", "7777"),
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(!printed.contains("s3cr3t-value"), "{printed}");
    assert!(
        printed.contains("port = 7777  # env SWITCHBOARD_PORT"),
        "{printed}"
    );
    assert!(
        printed.contains("activity_timeout = 120  # file"),
        "{printed}"
    );
}

#[test]
fn start_up_errors_name_their_path_and_come_before_any_listening() {
    let port = free_port().to_string();
    let dir = temp_dir("operator-file");
    std::fs::create_dir_all(&dir).unwrap();
    let not_a_dir = dir.join("plain-file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let data = not_a_dir.join("data");
    let (code, err) = serve_to_exit(&[
        ("SWITCHBOARD_PORT", &port),
        ("SWITCHBOARD_METRICS_ENABLED", "false"),
        ("SWITCHBOARD_DATA_DIR", data.to_str().unwrap()),
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains(data.to_str().unwrap()), "{err}");
    assert!(!err.contains("listening"), "{err}");
    // No colour codes when the log is not a terminal.
    assert!(!err.contains('\u{1b}'), "{err:?}");

    let missing = dir.join("nowhere.pem");
    let (code, err) = serve_to_exit(&[
        ("SWITCHBOARD_PORT", &port),
        ("SWITCHBOARD_METRICS_ENABLED", "false"),
        ("SWITCHBOARD_DATA_DIR", dir.join("d").to_str().unwrap()),
        (
            "SWITCHBOARD_SERVER_TLS_CERT_FILE",
            missing.to_str().unwrap(),
        ),
        ("SWITCHBOARD_SERVER_TLS_KEY_FILE", missing.to_str().unwrap()),
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert!(!err.contains("listening"), "{err}");

    let (code, err) = serve_to_exit(&[("SWITCHBOARD_BOGUS_KEY", "1")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("SWITCHBOARD_BOGUS_KEY names no setting"),
        "{err}"
    );
}

#[test]
fn the_start_up_line_summarises_the_node_and_json_logs_are_json() {
    let dir = temp_dir("operator-ok");
    let port = free_port().to_string();
    let (mut child, line) = serve_until_listening(&[
        ("SWITCHBOARD_PORT", &port),
        ("SWITCHBOARD_METRICS_ENABLED", "false"),
        ("SWITCHBOARD_DATA_DIR", dir.to_str().unwrap()),
        ("SWITCHBOARD_LOG_FORMAT", "json"),
    ]);
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["message"], "switchboard listening", "{v}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
    assert_eq!(v["addr"], format!("127.0.0.1:{port}"), "{v}");
    assert_eq!(v["tls"], "off", "{v}");
    assert_eq!(v["metrics"], "off", "{v}");
    assert_eq!(v["apps"], "app-id", "{v}");
    assert_eq!(v["data_dir"], dir.to_str().unwrap(), "{v}");
    assert_eq!(v["redis"], "off", "{v}");
    assert_eq!(v["postgres"], "off", "{v}");
    assert_eq!(v["webhooks"], 0, "{v}");
}

/// A cluster node keeps nothing on disk: with Redis configured, an unusable data directory
/// does not matter, and two nodes on one host need no directory of their own.
#[test]
fn a_cluster_node_opens_no_data_directory() {
    let Ok(redis) = std::env::var("SWITCHBOARD_TEST_REDIS_URL") else {
        panic!("SWITCHBOARD_TEST_REDIS_URL is not set (scripts/test.sh starts a Redis)");
    };
    let dir = temp_dir("operator-cluster");
    std::fs::create_dir_all(&dir).unwrap();
    let not_a_dir = dir.join("plain-file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let prefix = format!("op{}", std::process::id());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let port = free_port().to_string();
        let (child, line) = serve_until_listening(&[
            ("SWITCHBOARD_PORT", &port),
            ("SWITCHBOARD_METRICS_ENABLED", "false"),
            ("SWITCHBOARD_DATA_DIR", not_a_dir.to_str().unwrap()),
            ("SWITCHBOARD_REDIS_URL", &redis),
            ("SWITCHBOARD_REDIS_PREFIX", &prefix),
        ]);
        assert!(line.contains("redis=on"), "{line}");
        assert!(line.contains("data_dir=unused (Redis)"), "{line}");
        nodes.push(child);
    }
    for mut n in nodes {
        let _ = n.kill();
        let _ = n.wait();
    }
}

/// The README's configuration excerpt names only keys there are, in their tables, and points
/// at the example file for the rest.
#[test]
fn the_readme_configuration_section_shows_real_keys() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Configuration\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    assert!(section.contains("switchboard.example.toml"));
    let keys = switchboard::config::keys::all();
    let toml_block = section
        .split("```toml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let mut table = String::new();
    let mut seen = 0;
    for line in toml_block.lines() {
        let line = line.split(" #").next().unwrap().trim();
        if let Some(h) = line.strip_prefix('[') {
            table = h.trim_matches(|c| c == '[' || c == ']').to_owned();
        } else if let Some((key, _)) = line.split_once(" = ") {
            let path = format!("{table}.{key}");
            assert!(
                keys.contains_key(&path),
                "README shows {path}, which is no setting"
            );
            seen += 1;
        }
    }
    assert!(seen > 5, "{toml_block}");
}
