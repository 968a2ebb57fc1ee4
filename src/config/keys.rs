//! The settings there are, read from the example file (`switchboard.example.toml`, which
//! documents every key with its default): the one list that environment variables, unknown
//! keys and `config print` are checked against.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The example configuration, every key documented. `switchboard config example` prints it.
pub const EXAMPLE: &str = include_str!("../../switchboard.example.toml");

/// Environment variables with a meaning of their own rather than `<SECTION>_<KEY>`.
const SHORTCUTS: &[(&str, &str)] = &[("HOST", "server.host"), ("PORT", "server.port")];

/// `SWITCHBOARD_*` variables that are not settings: the config file's own, the admin CLI's
/// server address, and the ones test harnesses use.
fn not_a_setting(rest: &str) -> bool {
    rest == "CONFIG" || rest == "BIN" || rest == "ADMIN_URL" || rest.starts_with("TEST_")
}

/// One setting: its dotted path and the example's value (which gives its type).
#[derive(Debug)]
pub struct Key {
    /// `server.tls.cert_file`.
    pub path: String,
    /// The value in the example (the default, or an example for an unset key).
    pub example: toml::Value,
}

/// Every setting of a table (not of an array of tables such as `[[apps]]`), by path.
pub fn all() -> &'static BTreeMap<String, Key> {
    static KEYS: OnceLock<BTreeMap<String, Key>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = BTreeMap::new();
        let mut table = Some(String::new());
        for line in EXAMPLE.lines() {
            let line = line.trim();
            let bare = line.strip_prefix("# ").unwrap_or(line);
            if bare.starts_with("[[") {
                table = None;
                continue;
            }
            if let Some(h) = bare.strip_prefix('[') {
                if !line.starts_with('#') {
                    table = Some(h.trim_end_matches(']').to_owned());
                }
                continue;
            }
            let Some((name, value)) = bare.split_once(" = ") else {
                continue;
            };
            let (Some(table), true) = (&table, is_key(name)) else {
                continue;
            };
            // Prose that happens to read `word = ...` is not a setting (a test checks that
            // every key found here is one the configuration accepts).
            let Ok(doc) = format!("v = {value}").parse::<toml::Table>() else {
                continue;
            };
            let path = if table.is_empty() {
                name.to_owned()
            } else {
                format!("{table}.{name}")
            };
            let example = doc["v"].clone();
            keys.insert(path.clone(), Key { path, example });
        }
        keys
    })
}

fn is_key(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
}

/// The variable that sets `path`: `server.tls.cert_file` → `SWITCHBOARD_SERVER_TLS_CERT_FILE`.
pub fn env_name(path: &str) -> String {
    format!(
        "SWITCHBOARD_{}",
        path.replace('.', "_").to_ascii_uppercase()
    )
}

/// What a `SWITCHBOARD_*` variable means.
pub enum EnvVar {
    /// Not ours (another program's variable, or a test harness's).
    Ignored,
    /// Sets this key.
    Sets(&'static Key),
    /// Names no key; with the closest variable that does, if one is close.
    Unknown(Option<String>),
}

/// Resolves a variable's name.
pub fn env_var(name: &str) -> EnvVar {
    let Some(rest) = name.strip_prefix("SWITCHBOARD_") else {
        return EnvVar::Ignored;
    };
    if not_a_setting(rest) {
        return EnvVar::Ignored;
    }
    let keys = all();
    if let Some((_, path)) = SHORTCUTS.iter().find(|(n, _)| *n == rest) {
        return EnvVar::Sets(&keys[*path]);
    }
    if let Some(key) = keys.values().find(|k| env_name(&k.path) == name) {
        return EnvVar::Sets(key);
    }
    let names = keys.values().map(|k| env_name(&k.path));
    let names = names.chain(SHORTCUTS.iter().map(|(n, _)| format!("SWITCHBOARD_{n}")));
    EnvVar::Unknown(closest(name, names))
}

/// The closest candidate within a few edits (typos, a missing or doubled letter, a missing
/// underscore), if any.
pub fn closest(given: &str, candidates: impl Iterator<Item = String>) -> Option<String> {
    let limit = (given.len() / 5).max(2);
    candidates
        .map(|c| (strsim::damerau_levenshtein(given, &c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The key of `table` (a dotted path, `""` for the top level) closest to `given`.
pub fn closest_key(table: &str, given: &str) -> Option<String> {
    let prefix = if table.is_empty() {
        String::new()
    } else {
        format!("{table}.")
    };
    let names = all()
        .keys()
        .filter_map(|p| p.strip_prefix(&prefix))
        .filter(|n| !n.contains('.'))
        .map(str::to_owned);
    closest(given, names)
}

/// Whether `path` names a table of settings (`server`, `server.tls`).
pub fn is_table(path: &str) -> bool {
    let prefix = format!("{path}.");
    all().keys().any(|k| k.starts_with(&prefix))
}

/// An environment value with the type of the key's example value. Lists are comma
/// separated.
pub fn typed(key: &Key, raw: &str) -> Option<toml::Value> {
    let t = raw.trim();
    Some(match &key.example {
        toml::Value::Integer(_) => toml::Value::Integer(t.parse().ok()?),
        toml::Value::Boolean(_) => toml::Value::Boolean(match t {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return None,
        }),
        toml::Value::Float(_) => toml::Value::Float(t.parse().ok()?),
        toml::Value::Array(_) => toml::Value::Array(
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_owned()),
    })
}
