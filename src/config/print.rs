//! `switchboard config print`: the effective configuration as TOML, each value with where
//! it came from, and every secret masked (app secrets, signing keys, passwords in URLs).

use super::load::{Origin, Origins};
use super::Config;

/// Keys whose value is a secret wherever they appear.
const SECRET_KEYS: &[&str] = &[
    "secret",
    "previous_secret",
    "webhook_secret",
    "vapid_private_key",
    "token",
];
const MASK: &str = "********";

impl Config {
    /// The effective configuration, secrets masked, each setting followed by its origin.
    pub fn describe(&self, origins: &Origins) -> String {
        let mut tree = toml::Table::try_from(self).expect("the configuration serializes");
        mask(&mut tree);
        let text = toml::to_string(&tree).expect("a table serializes");
        let mut out = String::new();
        let mut table = String::new();
        let mut in_array = false;
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("[[") {
                // Arrays of tables come from the file as a whole.
                let path = h.trim_end_matches("]]");
                out.push_str(&format!("{line}  # {}\n", origin(&origins.of(path))));
                in_array = true;
                continue;
            }
            if let Some(h) = line.strip_prefix('[') {
                table = h.trim_end_matches(']').to_owned();
                in_array = false;
                out.push_str(line);
                out.push('\n');
                continue;
            }
            match line.split_once(" = ") {
                Some((key, _)) if !in_array => {
                    let path = if table.is_empty() {
                        key.to_owned()
                    } else {
                        format!("{table}.{key}")
                    };
                    out.push_str(&format!("{line}  # {}\n", origin(&origins.of(&path))));
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

fn origin(o: &Origin) -> String {
    match o {
        Origin::Default => "default".into(),
        Origin::File => "file".into(),
        Origin::Env(name) => format!("env {name}"),
    }
}

fn mask(t: &mut toml::Table) {
    for (key, value) in t.iter_mut() {
        match value {
            toml::Value::String(s) if SECRET_KEYS.contains(&key.as_str()) => *s = MASK.into(),
            toml::Value::String(s) => {
                if let Some(masked) = mask_url_password(s) {
                    *s = masked;
                }
            }
            toml::Value::Table(inner) => mask(inner),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        mask(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `redis://user:pass@host` → `redis://user:********@host`.
fn mask_url_password(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let (userinfo, host) = rest.split_once('@')?;
    let (user, _) = userinfo.split_once(':')?;
    Some(format!("{scheme}://{user}:{MASK}@{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_origins_shown() {
        let env = [
            ("SWITCHBOARD_APP_SECRET", "hunter2-very-secret"),
            (
                "SWITCHBOARD_REDIS_URL",
                "redis://default:p4ssw0rd@127.0.0.1:6379",
            ),
            ("SWITCHBOARD_PORT", "7100"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let (config, origins) = Config::load_traced(None, env).unwrap();
        let text = config.describe(&origins);
        assert!(
            !text.contains("hunter2") && !text.contains("p4ssw0rd"),
            "{text}"
        );
        assert!(
            text.contains("secret = \"********\"  # env SWITCHBOARD_APP_SECRET"),
            "{text}"
        );
        assert!(
            text.contains(
                "url = \"redis://default:********@127.0.0.1:6379\"  # env SWITCHBOARD_REDIS_URL"
            ),
            "{text}"
        );
        assert!(
            text.contains("port = 7100  # env SWITCHBOARD_PORT"),
            "{text}"
        );
        assert!(text.contains("activity_timeout = 120  # default"), "{text}");
        // What it prints is a configuration that loads again, to the same values.
        let again: Config = toml::from_str(&text.replace("\"********\"", "\"x\"")).unwrap();
        assert_eq!(again.server.port, 7100);
    }
}
