//! The code's shape: no import circles, between the top-level modules of `src/` or between the
//! files of one folder, so each part can be read (and replaced) without the ones that use it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// A file's code without its tests.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("#[cfg(test)]").next().unwrap().to_string()
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of every path that follows `prefix` (`prefix::a::b`, or each item of
/// `prefix::{a, b::{c, d}}`).
fn heads(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for rest in code.split(prefix).skip(1) {
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item, mut items) = (0, String::new(), Vec::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            found.extend(
                items
                    .iter()
                    .map(|i| ident(i.trim()).to_string())
                    .filter(|i| !i.is_empty()),
            );
        } else {
            let head = ident(rest);
            if !head.is_empty() {
                found.push(head.to_string());
            }
        }
    }
    found
}

/// The modules of a folder: its files and subfolders, by name, with their sources.
fn modules(dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        if path.is_dir() {
            modules.insert(name, rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && name != "mod" && name != "lib" {
            modules.insert(name, vec![path]);
        }
    }
    modules
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The names a module declares for its siblings (`pub`, `pub(super)`, `pub(crate)` items).
fn declared(files: &[PathBuf]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in files {
        for line in code(file).lines() {
            let line = line.trim_start();
            let Some(rest) = line.strip_prefix("pub") else {
                continue;
            };
            let rest = match rest.strip_prefix('(') {
                Some(r) => r.split_once(')').map_or("", |(_, r)| r),
                None => rest,
            };
            let rest = rest.trim_start().trim_start_matches("async ");
            for kind in [
                "fn ", "struct ", "enum ", "trait ", "type ", "const ", "static ",
            ] {
                if let Some(name) = rest.strip_prefix(kind) {
                    names.insert(ident(name).to_string());
                }
            }
        }
    }
    names
}

/// A circle in `edges`, if there is one.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

/// Which sibling each module of `dir` uses: through `super::` (a sibling, or an item a sibling
/// declares) or through `crate::<module path>::`.
fn sibling_edges(dir: &Path, module_path: &str) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(dir);
    let owner: Vec<(String, BTreeSet<String>)> = modules
        .iter()
        .map(|(name, files)| (name.clone(), declared(files)))
        .collect();
    let resolve = |head: &str| -> Option<String> {
        if modules.contains_key(head) {
            return Some(head.to_string());
        }
        owner
            .iter()
            .find(|(_, names)| names.contains(head))
            .map(|(name, _)| name.clone())
    };
    let mut edges = BTreeMap::new();
    for (name, files) in &modules {
        let mut uses = BTreeSet::new();
        for file in files {
            let code = code(file);
            // Only a folder's direct files reach their siblings through `super::`.
            let direct = file.parent() == Some(dir);
            let mut heads_found = if direct {
                heads(&code, "super::")
            } else {
                Vec::new()
            };
            if !module_path.is_empty() {
                heads_found.extend(heads(&code, &format!("crate::{module_path}::")));
            } else {
                heads_found.extend(heads(&code, "crate::"));
            }
            uses.extend(
                heads_found
                    .iter()
                    .filter_map(|h| resolve(h))
                    .filter(|h| h != name),
            );
        }
        edges.insert(name.clone(), uses);
    }
    edges
}

#[test]
fn the_top_level_modules_import_no_circle() {
    let edges = sibling_edges(&src(), "");
    assert!(edges.len() > 15, "{edges:?}");
    assert!(
        edges["app"].contains("jobs"),
        "the check sees imports: {edges:?}"
    );
    assert_eq!(circle(&edges), None);
}

#[test]
fn the_files_of_a_folder_import_no_circle() {
    let mut checked = 0;
    for dir in rust_files(&src())
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n == "mod.rs"))
        .filter_map(|f| f.parent())
    {
        // sea-orm declares a relation on both of its tables (`Related<session::Entity>` on
        // users, `Related<user::Entity>` on sessions): the schema, not code depending on code.
        if dir == src().join("entities") {
            continue;
        }
        let module_path = dir
            .strip_prefix(src())
            .unwrap()
            .to_str()
            .unwrap()
            .replace('/', "::");
        let edges = sibling_edges(dir, &module_path);
        assert_eq!(circle(&edges), None, "in {}", dir.display());
        checked += 1;
    }
    assert!(checked >= 5, "{checked} folders");
}

#[test]
fn a_circle_is_found() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
    .collect();
    assert_eq!(
        circle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let accounts = sibling_edges(&src().join("accounts"), "accounts");
    assert!(accounts["storage"].contains("error"), "{accounts:?}");
}

/// No file in `src/` or `bin/` is longer than 500 lines: past that a file holds more than one
/// thing a reader can keep in mind.
#[test]
fn no_source_file_is_over_500_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut long = Vec::new();
    for file in rust_files(&root.join("src"))
        .into_iter()
        .chain(rust_files(&root.join("bin")))
    {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        if lines > 500 {
            long.push(format!("{} ({lines})", file.display()));
        }
    }
    assert!(long.is_empty(), "{long:#?}");
}

/// The library's errors are typed: `anyhow` is for the binaries' `main`s only.
#[test]
fn anyhow_stays_in_the_binaries() {
    let users: Vec<String> = rust_files(&src())
        .into_iter()
        .filter(|f| code(f).contains("anyhow"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(users.is_empty(), "{users:#?}");
    let bins = rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("bin"));
    assert!(bins.iter().any(|f| code(f).contains("anyhow")));
}

/// Rows stay in their domains: only `accounts/` and `jobs/` (and the entities themselves) name
/// `entities`; everything else, the binaries included, gets the domains' views. The library
/// keeps the module private and denies `unnameable_types`, so a row returned by a public
/// function does not compile either.
#[test]
fn only_the_domains_touch_rows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let domains = ["accounts", "jobs", "entities"].map(|d| src().join(d));
    let mut reaching = Vec::new();
    let mut owners = BTreeSet::new();
    for file in rust_files(&src())
        .into_iter()
        .chain(rust_files(&root.join("bin")))
    {
        let text = std::fs::read_to_string(&file).unwrap();
        let named = ["crate::", "keel::", "super::"]
            .iter()
            .any(|prefix| heads(&text, prefix).iter().any(|h| h == "entities"));
        if !named {
            continue;
        }
        match domains.iter().find(|d| file.starts_with(d)) {
            Some(domain) => {
                owners.insert(domain.file_name().unwrap().to_string_lossy().to_string());
            }
            None => reaching.push(file.display().to_string()),
        }
    }
    assert!(reaching.is_empty(), "{reaching:#?}");
    assert_eq!(owners, BTreeSet::from(["accounts".into(), "jobs".into()]));
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    assert!(
        lib.contains("pub(crate) mod entities;"),
        "entities is private"
    );
    assert!(lib.contains("#![deny(unnameable_types)]"));
}
