//! The house plan, checked: the crate's top-level modules form a DAG (derived from the
//! `crate::` paths in their code, tests excepted), and no file in `src/` is over 500 lines
//! before its tests. ARCHITECTURE.md's module table is this graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 500;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The library's files: `src/` without the binaries (`main.rs`, `bin/`).
fn library() -> Vec<(String, PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("bin/") || rel == "main.rs" {
                return None;
            }
            Some((rel, p))
        })
        .collect()
}

/// The code before the file's tests, without line comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules named by `crate::a`, `crate::a::b` and `crate::{a, b::c}`;
/// macros (`crate::m!`) are exported at the root and name no module.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item = true,
                    c if item && (c.is_ascii_alphabetic() || c == '_') => {
                        out.insert(ident(&group[j..]).to_owned());
                        item = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() && !rest[name.len()..].starts_with('!') {
                out.insert(name.to_owned());
            }
        }
    }
    out.remove("self");
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, path) in library() {
        if rel == "lib.rs" {
            continue;
        }
        let top = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        let deps = crate_paths(&code(&path));
        let entry = edges.entry(top.clone()).or_default();
        entry.extend(deps.into_iter().filter(|d| *d != top));
    }
    edges
}

/// Some cycle of the graph, if it has one (depth-first search with colours).
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for d in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, edges, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut done, &mut Vec::new()))
}

#[test]
fn the_parser_reads_every_form_of_crate_path() {
    let found = crate_paths(
        "use crate::a::B;\nuse crate::{b, c::{D, E}, self};\nlet x = crate::d::f();\ncrate::m!(x);",
    );
    let want: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
    assert_eq!(found, want);
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycle(&g), Some(vec!["a".into(), "b".into(), "a".into()]));
    g.remove("b");
    assert_eq!(cycle(&g), None);
}

#[test]
fn top_level_modules_form_a_dag() {
    let edges = graph();
    assert!(
        edges.contains_key("hub") && edges.contains_key("session"),
        "{edges:?}"
    );
    if let Some(c) = cycle(&edges) {
        panic!("import cycle between top-level modules: {}", c.join(" -> "));
    }
    // The layering ARCHITECTURE.md promises.
    let hub = &edges["hub"];
    assert!(!hub.contains("protocol"), "hub imports protocol: {hub:?}");
    for low in ["ids", "event", "clock", "frame"] {
        let deps = edges.get(low).cloned().unwrap_or_default();
        for d in &deps {
            assert!(
                ["ids", "event", "clock", "frame", "filter"].contains(&d.as_str()),
                "{low} imports {d}"
            );
        }
    }
}

#[test]
fn no_source_file_is_over_500_lines_before_its_tests() {
    let long: Vec<String> = library()
        .into_iter()
        .filter_map(|(rel, path)| {
            let n = code(&path).lines().count();
            (n > MAX_LINES).then(|| format!("src/{rel}: {n} lines"))
        })
        .collect();
    assert!(long.is_empty(), "{long:#?}");
}
