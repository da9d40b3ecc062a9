//! The crate's modules import one way: each folder may use its own modules and the folders
//! below it, never one above or beside it, and no two modules use each other in a circle.
//! Read from the sources, so a new upward import or cycle fails here, not in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Folders (and top-level files) from the bottom up; a folder may import those of lower rank.
/// Folders of equal rank are independent of each other.
const LAYERS: &[(&str, u8)] = &[
    ("telemetry", 0),
    ("k8s", 0),
    ("store", 1),
    ("fleet", 2),
    ("reconcile", 2),
    ("render", 3),
    ("http", 4),
    ("cli", 5),
    ("run", 6),
    ("lib", 7),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("main.rs") {
            out.push(path);
        }
    }
}

/// A file's module path: `src/k8s/crd.rs` is `k8s::crd`, `src/k8s/mod.rs` is `k8s`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The source without comments and the test modules (tests may reach anywhere).
fn production_code(text: &str) -> String {
    let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..cut]
        .lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module named through `crate::...` or `super::...` (relative to `me`), including the
/// items of `use crate::{a, b::c}`.
fn crate_paths(code: &str, me: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let parent = me.rsplit_once("::").map_or("", |(p, _)| p).to_string();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
        let base = if base.is_empty() {
            base
        } else {
            format!("{base}::")
        };
        paths_after(code, prefix, &base, modules, &mut found);
    }
    found
}

fn paths_after(
    code: &str,
    prefix: &str,
    base: &str,
    modules: &BTreeSet<String>,
    found: &mut BTreeSet<String>,
) {
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let word_before = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[i + prefix.len()..];
        if word_before {
            continue;
        }
        let path: String = rest
            .chars()
            .take_while(|c| {
                c.is_alphanumeric()
                    || *c == '_'
                    || *c == ':'
                    || *c == '{'
                    || *c == '}'
                    || *c == ','
                    || c.is_whitespace()
            })
            .collect();
        // `a::b::{c, d::e}` -> a::b::c, a::b::d::e (one level of braces is all the crate uses).
        let (head, group) = match path.split_once('{') {
            Some((h, g)) => (h.to_string(), g.split('}').next().unwrap_or("").to_string()),
            None => (
                path.split_whitespace().next().unwrap_or("").to_string(),
                String::new(),
            ),
        };
        let mut candidates = vec![head.trim_end_matches("::").to_string()];
        for item in group.split(',') {
            let item = item.trim();
            if !item.is_empty() {
                candidates.push(format!("{head}{item}"));
            }
        }
        for candidate in candidates {
            let candidate = format!("{base}{candidate}");
            // The longest prefix that is a module of the crate.
            let parts: Vec<&str> = candidate.split("::").filter(|p| !p.is_empty()).collect();
            if let Some(m) = (1..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|m| modules.contains(m))
            {
                found.insert(m);
            }
        }
    }
}

fn rank(module: &str) -> (String, u8) {
    let top = module.split("::").next().unwrap().to_string();
    let rank = LAYERS
        .iter()
        .find(|(name, _)| *name == top)
        .unwrap_or_else(|| panic!("module {module} is in no layer: add its folder to LAYERS"))
        .1;
    (top, rank)
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    files
        .iter()
        .map(|f| {
            let code = production_code(&std::fs::read_to_string(f).unwrap());
            let me = module_of(f);
            let mut uses = crate_paths(&code, &me, &modules);
            // A module may name its own children and itself.
            uses.retain(|u| u != &me && !u.starts_with(&format!("{me}::")));
            (me, uses)
        })
        .collect()
}

#[test]
fn folders_import_only_folders_below_them() {
    let mut wrong = Vec::new();
    for (module, uses) in graph() {
        let (folder, mine) = rank(&module);
        for used in uses {
            let (other, theirs) = rank(&used);
            if other != folder && theirs >= mine {
                wrong.push(format!("{module} uses {used}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that go up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let graph = graph();
    // Depth-first search; a module met again on the current path closes a circle.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        circles: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| *p == m) {
            circles.push(format!("{} -> {m}", path[i..].join(" -> ")));
            return;
        }
        if !done.insert(m) {
            return;
        }
        path.push(m);
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done, circles);
        }
        path.pop();
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(circles.is_empty(), "modules in a circle:\n{}", circles.join("\n"));
}
