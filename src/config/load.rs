//! Loading: the file, then `SWITCHBOARD_*` variables over it, each checked against the keys
//! there are ([`keys`]) before anything is deserialized, so a typo is an error that names
//! the key (and the one probably meant), never a setting silently left at its default.

use std::collections::BTreeMap;
use std::path::Path;

use super::keys::{self, EnvVar};
use super::{Config, ConfigError};

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The configuration file.
    File,
    /// This environment variable.
    Env(String),
}

/// The origin of every setting that is not a default, by dotted path (`server.port`;
/// an array of tables such as `apps` as a whole).
#[derive(Clone, Debug, Default)]
pub struct Origins(BTreeMap<String, Origin>);

impl Origins {
    /// Where `path` came from.
    pub fn of(&self, path: &str) -> Origin {
        self.0.get(path).cloned().unwrap_or(Origin::Default)
    }
}

impl Config {
    /// Loads the file (if any), applies `SWITCHBOARD_*` overrides from `env`, validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::load_traced(file, env).map(|(c, _)| c)
    }

    /// As [`Config::load`], and says where each value came from.
    pub fn load_traced(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Origins), ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            file: file.map(Path::to_owned),
            message,
        };
        let mut origins = Origins::default();
        let mut root: toml::Table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let root: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                    parse_error(e.message().to_owned() + &at_line(&text, e.span()))
                })?;
                check_keys("", &root, &mut origins).map_err(parse_error)?;
                root
            }
            None => toml::Table::new(),
        };
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        // The same result whatever order the environment lists its variables in.
        env.sort();
        for (name, value) in env {
            let key = match keys::env_var(&name) {
                EnvVar::Ignored => continue,
                EnvVar::Sets(key) => key,
                EnvVar::Unknown(meant) => {
                    let hint = meant.map_or_else(String::new, |m| format!("; did you mean {m}?"));
                    return Err(ConfigError::Invalid(format!(
                        "environment variable {name} names no setting{hint}"
                    )));
                }
            };
            let typed = keys::typed(key, &value).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "{name}={value:?} has the wrong type for {}",
                    key.path
                ))
            })?;
            set(&mut root, &key.path, typed);
            origins.0.insert(key.path.clone(), Origin::Env(name));
        }
        // Deserialized from text, so that a value of the wrong type or range is reported
        // with its key (found from the error's position).
        let text = toml::to_string(&root).map_err(|e| parse_error(e.to_string()))?;
        let config: Config = toml::from_str(&text).map_err(|e: toml::de::Error| {
            let key = e.span().and_then(|s| key_at(&text, s.start));
            parse_error(match key {
                Some(key) => format!("{key}: {}", e.message()),
                None => e.message().to_owned(),
            })
        })?;
        config.validate()?;
        Ok((config, origins))
    }
}

/// Every key of the file's tables must be a setting; records what the file sets.
fn check_keys(table: &str, t: &toml::Table, origins: &mut Origins) -> Result<(), String> {
    for (name, value) in t {
        let path = if table.is_empty() {
            name.clone()
        } else {
            format!("{table}.{name}")
        };
        match value {
            toml::Value::Table(inner) if keys::is_table(&path) => {
                check_keys(&path, inner, origins)?;
            }
            _ if keys::all().contains_key(&path) => {
                origins.0.insert(path, Origin::File);
            }
            // Arrays of tables ([[apps]], [[history.rules]]): their fields are checked when
            // they are deserialized.
            toml::Value::Array(_)
                if matches!(path.as_str(), "apps" | "app.webhooks" | "history.rules") =>
            {
                origins.0.insert(path, Origin::File);
            }
            _ => {
                let hint = keys::closest_key(table, name).map_or_else(String::new, |k| {
                    format!("; did you mean {}?", join(table, &k))
                });
                return Err(format!("unknown key {path}{hint}"));
            }
        }
    }
    Ok(())
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

/// Sets a dotted path in the tree, creating the tables on the way.
fn set(root: &mut toml::Table, path: &str, value: toml::Value) {
    let mut t = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            t.insert(part.to_owned(), value);
            return;
        }
        let entry = t
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        t = entry.as_table_mut().expect("made a table above");
    }
}

/// The dotted key of the setting on the line at `offset` of a serialized configuration.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let line = text[before.rfind('\n').map_or(0, |i| i + 1)..]
        .lines()
        .next()?;
    let (key, _) = line.split_once(" = ")?;
    let table = before.lines().rev().find_map(|l| {
        l.strip_prefix('[')
            .map(|h| h.trim_matches(|c| c == '[' || c == ']'))
    });
    Some(match table {
        Some(t) => format!("{t}.{}", key.trim()),
        None => key.trim().to_owned(),
    })
}

/// " (line N)" for a parse error's position.
fn at_line(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map_or_else(String::new, |s| {
        let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
        format!(" (line {line})")
    })
}
