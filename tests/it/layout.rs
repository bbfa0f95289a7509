//! The source layout's dependency rules (docs/ARCHITECTURE.md): no import
//! cycle between the top-level modules (folders) of `src/`, none between
//! files, and no non-test source file longer than 800 lines.
//!
//! Imports are read from the text: every `crate::a::b` path and every
//! `super::` path (including `use super::{a, b}` groups), with comments and
//! `#[cfg(test)]` modules left out; a path counts as an edge to the longest
//! module prefix it names. `src/main.rs` (the binary crate) is not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest non-test source file allowed, in lines.
const MAX_LINES: usize = 800;

struct Module {
    /// Module path segments (`["exec", "gather", "run"]`; `[]` = crate root).
    path: Vec<String>,
    /// Text without comments and test modules.
    text: String,
    /// Full file length in lines.
    lines: usize,
    file: PathBuf,
}

fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        if in_str {
            if b[i] == b'\\' {
                i += 2;
                continue;
            }
            if b[i] == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            in_str = true;
            out.push('"');
            i += 1;
            continue;
        }
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if b[i..].starts_with(b"/*") {
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Removes `#[cfg(test)] mod name { ... }` blocks; returns the text and the
/// names of `#[cfg(test)] mod name;` children.
fn strip_test_modules(s: &str) -> (String, BTreeSet<String>) {
    let mut text = s.to_string();
    let mut test_children = BTreeSet::new();
    while let Some(at) = text.find("#[cfg(test)]") {
        let rest = text[at + 12..].trim_start();
        let Some(after_mod) = rest.strip_prefix("mod ") else {
            // A test-only item other than a module: drop the attribute only.
            text.replace_range(at..at + 12, "");
            continue;
        };
        let name: String = after_mod
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let body_at = text.len() - after_mod.len() + name.len();
        let tail = text[body_at..].trim_start();
        if tail.starts_with(';') {
            test_children.insert(name);
            let end = text.len() - tail.len() + 1;
            text.replace_range(at..end, "");
            continue;
        }
        // Skip the braced body.
        let open = text.len() - tail.len();
        let mut depth = 0usize;
        let mut end = text.len();
        for (k, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        text.replace_range(at..end, "");
    }
    (text, test_children)
}

fn load(src: &Path) -> Vec<Module> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read src dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && p != src.join("main.rs") {
                files.push(p);
            }
        }
    }
    let mut mods = Vec::new();
    let mut test_only: BTreeSet<Vec<String>> = BTreeSet::new();
    for f in files {
        let rel = f.strip_prefix(src).expect("under src");
        let mut path: Vec<String> = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let is_dir = matches!(path.last().map(String::as_str), Some("mod" | "lib"));
        if is_dir {
            path.pop();
        }
        let raw = std::fs::read_to_string(&f).expect("read source");
        let (text, tests) = strip_test_modules(&strip_comments(&raw));
        let parent = if is_dir {
            path.clone()
        } else {
            path[..path.len() - 1].to_vec()
        };
        for t in tests {
            let mut p = parent.clone();
            p.push(t);
            test_only.insert(p);
        }
        mods.push(Module {
            path,
            text,
            lines: raw.lines().count(),
            file: f,
        });
    }
    mods.retain(|m| !test_only.contains(&m.path));
    mods
}

/// Reads an identifier path (`a::b::c`) starting at `s`.
fn read_path(s: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let id: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if id.is_empty() {
            break;
        }
        rest = &rest[id.len()..];
        segs.push(id);
        match rest.strip_prefix("::") {
            Some(r) if !r.starts_with('{') => rest = r,
            _ => break,
        }
    }
    segs
}

/// Module paths `m` refers to (not resolved yet).
fn references(m: &Module) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let t = &m.text;
    // `super` is the parent of the module itself (for `a/mod.rs`, the
    // parent of `a`).
    for (kw, root) in [("crate::", Vec::new()), ("super::", m.path.clone())] {
        let mut from = 0;
        while let Some(k) = t[from..].find(kw) {
            let at = from + k;
            from = at + kw.len();
            let prev = t[..at].chars().next_back();
            if prev.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut prefix = root.clone();
            let mut rest = &t[at + kw.len()..];
            if kw == "super::" {
                prefix.pop();
                while let Some(r) = rest.strip_prefix("super::") {
                    prefix.pop();
                    rest = r;
                }
            }
            let segs = read_path(rest);
            let mut full = prefix.clone();
            full.extend(segs.iter().cloned());
            out.push(full.clone());
            // A `{a, b::c}` group after the path.
            let after: usize = segs.iter().map(|s| s.len() + 2).sum();
            if let Some(group) = rest.get(after..).and_then(|g| g.strip_prefix('{')) {
                let body = &group[..group.find('}').unwrap_or(group.len())];
                for item in body.split(',') {
                    let item = read_path(item.trim());
                    if item.first().is_some_and(|s| s != "self") {
                        let mut p = full.clone();
                        p.extend(item);
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

/// Strongly connected components with more than one member (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        e: &'a BTreeMap<String, BTreeSet<String>>,
        idx: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.idx.len();
        t.idx.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.e.get(v) {
            for w in ws {
                if !t.idx.contains_key(w.as_str()) {
                    visit(t, w);
                    let lw = t.low[w.as_str()];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w.as_str()) {
                    let iw = t.idx[w.as_str()];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.idx[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        e: edges,
        idx: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.idx.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Import edges between files and between top-level modules.
fn graphs(
    mods: &[Module],
) -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let names: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let resolve = |p: &[String]| -> Option<Vec<String>> {
        (1..=p.len())
            .rev()
            .map(|i| p[..i].to_vec())
            .find(|c| names.contains(c))
    };
    let mut files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut folders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in mods {
        let from = m.path.join("::");
        files.entry(from.clone()).or_default();
        for r in references(m) {
            let Some(to) = resolve(&r) else { continue };
            if to == m.path {
                continue;
            }
            files.entry(from.clone()).or_default().insert(to.join("::"));
            if let (Some(a), Some(b)) = (m.path.first(), to.first()) {
                if a != b {
                    folders.entry(a.clone()).or_default().insert(b.clone());
                }
            }
        }
    }
    (files, folders)
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_import_cycles_between_folders_or_files() {
    let mods = load(&src_dir());
    assert!(mods.len() > 50, "read {} modules only", mods.len());
    let (files, folders) = graphs(&mods);
    // The data path, checked to be read at all.
    assert!(
        folders.get("session").is_some_and(|s| s.contains("exec")),
        "session -> exec edge not found: {folders:?}"
    );
    assert!(
        !folders.get("exec").is_some_and(|s| s.contains("session")),
        "executors import the session: {:?}",
        folders.get("exec")
    );
    let folder_cycles = cycles(&folders);
    assert!(
        folder_cycles.is_empty(),
        "import cycles between folders: {folder_cycles:?}"
    );
    let file_cycles = cycles(&files);
    assert!(
        file_cycles.is_empty(),
        "import cycles between files: {file_cycles:?}"
    );
}

#[test]
fn source_files_stay_small() {
    let long: Vec<String> = load(&src_dir())
        .iter()
        .filter(|m| m.lines > MAX_LINES)
        .map(|m| format!("{} ({} lines)", m.file.display(), m.lines))
        .collect();
    assert!(
        long.is_empty(),
        "source files over {MAX_LINES} lines: {long:?}"
    );
}

#[test]
fn the_checker_finds_a_cycle() {
    let m = |path: &str, text: &str| Module {
        path: path.split("::").map(str::to_string).collect(),
        text: text.to_string(),
        lines: 1,
        file: PathBuf::from(path),
    };
    let mods = [
        m("a::x", "use super::y::Y; use crate::b::B;"),
        m("a::y", "use crate::a::{x::X, z};"),
        m("a::z", "fn f() {}"),
        m("b", "use crate::c::C;"),
        m("c", "fn g() -> crate::b::T {}"),
    ];
    let (files, folders) = graphs(&mods);
    let mut file_cycles = cycles(&files);
    file_cycles.sort();
    assert_eq!(
        file_cycles,
        vec![
            vec!["a::x".to_string(), "a::y".to_string()],
            vec!["b".to_string(), "c".to_string()]
        ]
    );
    assert_eq!(
        cycles(&folders),
        vec![vec!["b".to_string(), "c".to_string()]]
    );
    let (stripped, tests) = strip_test_modules(&strip_comments(
        "// crate::q\nuse crate::r;\n#[cfg(test)]\nmod tests { use super::*; }\n#[cfg(test)]\nmod pg_tests;\n",
    ));
    assert!(
        !stripped.contains("super") && !stripped.contains('q'),
        "{stripped}"
    );
    assert!(tests.contains("pg_tests"));
}
