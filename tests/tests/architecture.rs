//! The library's shape, checked on its source: no module cycle, no function over 120
//! lines, no file over 700 lines, no CLI file over 400 lines (issue 14's targets).
//!
//! Written by hand rather than with `cargo modules dependencies --acyclic`: that tool
//! builds rust-analyzer's crates (a quarter of an hour on two cores in every fresh CI
//! run), and `syn` with line numbers needs `proc-macro2/span-locations`, which would
//! rebuild every proc macro of the tree. The source is ours and rustfmt-formatted, so a
//! lexer that blanks comments, strings and chars, then reads `crate::…` paths and brace
//! depth, is exact enough; the tests below check the lexer itself on the hard cases.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FN_LINES: usize = 120;
const MAX_FILE_LINES: usize = 700;
const MAX_CLI_FILE_LINES: usize = 400;

fn library_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/src")
}

/// The `fanout` command-line binary: a crate of its own (`main.rs` is its root).
fn cli_src() -> PathBuf {
    library_src().join("bin/fanout")
}

/// One source file of the library: its module path and its code, with comments, string
/// and char literals blanked (newlines kept, so line numbers hold) and `#[cfg(test)]`
/// items removed.
struct Source {
    path: PathBuf,
    module: Vec<String>,
    code: String,
    lines: usize,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Blanks comments, string literals (plain, byte, raw) and char literals, keeping
/// newlines; lifetimes (`'a`) are left alone.
fn blank_literals(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }))
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0usize, 0);
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(hashes) = raw_string_start(rest) {
            let open = rest
                .iter()
                .position(|&c| c == b'"')
                .expect("raw string quote")
                + 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let end = rest[open..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(rest.len(), |p| open + p + close.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'"' || rest.starts_with(b"b\"") {
            let mut j = if rest[0] == b'"' { 1 } else { 2 };
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'\'' && char_literal_len(rest).is_some() {
            let n = char_literal_len(rest).unwrap_or(1);
            blank(&mut out, &rest[..n]);
            i += n;
        } else {
            // An identifier ending in `r` or `b` (e.g. `ptr"`) is not a literal prefix.
            let ident_len = rest
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                .unwrap_or(rest.len());
            let n = ident_len.max(1);
            out.extend_from_slice(&rest[..n]);
            i += n;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `r"`, `r#"`, `br##"`: the number of hashes of a raw string starting here.
fn raw_string_start(s: &[u8]) -> Option<usize> {
    let s = s.strip_prefix(b"b").unwrap_or(s);
    let s = s.strip_prefix(b"r")?;
    let hashes = s.iter().take_while(|&&c| c == b'#').count();
    (s.get(hashes) == Some(&b'"')).then_some(hashes)
}

/// The length of a char literal starting at a `'`, or `None` for a lifetime.
fn char_literal_len(s: &[u8]) -> Option<usize> {
    if s.get(1) == Some(&b'\\') {
        let close = s[2..].iter().position(|&c| c == b'\'')?;
        return Some(close + 3);
    }
    // One character (up to 4 UTF-8 bytes) then a closing quote.
    (2..=5)
        .find(|&n| {
            s.get(n) == Some(&b'\'')
                && std::str::from_utf8(&s[1..n]).is_ok_and(|c| c.chars().count() == 1)
        })
        .map(|n| n + 1)
}

/// The index just past the brace block that opens at or after `from`.
fn block_end(code: &str, from: usize) -> usize {
    let b = code.as_bytes();
    let Some(open) = b[from..].iter().position(|&c| c == b'{' || c == b';') else {
        return b.len();
    };
    let open = from + open;
    if b[open] == b';' {
        return open + 1;
    }
    let mut depth = 0;
    for (j, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    b.len()
}

/// Blanks every item under `#[cfg(test)]` (a `mod tests { … }`, a `mod tests;`, a test
/// helper), keeping newlines.
fn strip_test_items(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(p) = out[from..].find("#[cfg(test)]") {
        let start = from + p;
        let end = block_end(&out, start);
        let blanked: String = out[start..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(start..end, &blanked);
        from = end;
    }
    out
}

/// Files declared `#[cfg(test)] mod name;` are test code wherever they live.
fn test_only_files(code: &str, dir: &Path, stem: &str, out: &mut BTreeSet<PathBuf>) {
    let mut rest = code;
    while let Some(p) = rest.find("#[cfg(test)]") {
        let after = rest[p + 12..].trim_start();
        if let Some(name) = after.strip_prefix("mod ").and_then(|s| s.split(';').next())
            && !name.contains('{')
        {
            let name = name.trim();
            let base = if matches!(stem, "mod" | "lib" | "main") {
                dir.to_path_buf()
            } else {
                dir.join(stem)
            };
            out.insert(base.join(format!("{name}.rs")));
            out.insert(base.join(name).join("mod.rs"));
        }
        rest = &rest[p + 12..];
    }
}

fn load_library() -> Vec<Source> {
    let root = library_src();
    let mut sources = load_crate(&root);
    sources.retain(|s| s.module.first().is_none_or(|m| m != "bin"));
    sources
}

/// The non-test source files of the crate rooted at `root` (`lib.rs` or `main.rs`).
fn load_crate(root: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut test_files = BTreeSet::new();
    let mut sources = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(root)
            .expect("under the root")
            .to_path_buf();
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let code = blank_literals(&text);
        let stem = rel
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        test_files_of(&code, &path, &stem, &mut test_files);
        let mut module: Vec<String> = rel
            .parent()
            .map(|p| p.iter().map(|c| c.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if !matches!(stem.as_str(), "mod" | "lib" | "main") {
            module.push(stem);
        }
        sources.push(Source {
            lines: text.lines().count(),
            code: strip_test_items(&code),
            path,
            module,
        });
    }
    sources.retain(|s| !test_files.contains(&s.path));
    sources
}

fn test_files_of(code: &str, path: &Path, stem: &str, out: &mut BTreeSet<PathBuf>) {
    let dir = path.parent().expect("file in a directory");
    test_only_files(code, dir, stem, out);
}

/// Every path the code of `module` names that starts with `crate::`, `super::` (any
/// number) or `self::`, made absolute, `use …::{a::b, c}` groups expanded.
fn module_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let at_word_start = i == 0 || {
            let c = bytes[i - 1];
            !(c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b':')
        };
        let base: Option<(Vec<String>, usize)> = if !at_word_start {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), 7))
        } else if rest.starts_with("self::") {
            Some((module.to_vec(), 6))
        } else if rest.starts_with("super::") {
            let mut base = module.to_vec();
            let mut len = 0;
            while code[i + len..].starts_with("super::") {
                base.pop();
                len += 7;
            }
            Some((base, len))
        } else {
            None
        };
        match base {
            Some((base, len)) => {
                expand_use_tree(&code[i + len..], base, &mut out);
                i += len;
            }
            None => i += 1,
        }
    }
    out
}

/// Reads one use tree (`a::b::{c, d::e}` or a plain path) at the start of `s`.
fn expand_use_tree(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let s = s.trim_start();
    if let Some(inner) = s.strip_prefix('{') {
        let end = block_end(s, 0) - 1;
        let mut depth = 0;
        let mut item_start = 0;
        let body = &inner[..end - 1];
        for (j, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use_tree(&body[item_start..j], prefix.clone(), out);
                    item_start = j + 1;
                }
                _ => {}
            }
        }
        expand_use_tree(&body[item_start..], prefix, out);
        return;
    }
    let ident_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    if ident_len == 0 {
        if !prefix.is_empty() {
            out.push(prefix);
        }
        return;
    }
    let mut path = prefix;
    path.push(s[..ident_len].to_string());
    match s[ident_len..].strip_prefix("::") {
        Some(rest) => expand_use_tree(rest, path, out),
        None => out.push(path),
    }
}

/// Re-exports of every module (`pub use error::{Error, Result}` in `lib.rs`,
/// `pub use records::Manifest` in `job/mod.rs`): (module, name) → the absolute path
/// of what it names.
fn reexports(sources: &[Source]) -> BTreeMap<(Vec<String>, String), Vec<String>> {
    let modules: BTreeSet<&[String]> = sources.iter().map(|s| s.module.as_slice()).collect();
    let mut out = BTreeMap::new();
    for s in sources {
        let mut from = 0;
        while let Some(p) = s.code[from..]
            .find("pub use ")
            .or_else(|| s.code[from..].find("pub(crate) use "))
        {
            let start = from + p;
            let tree = &s.code[start..];
            let tree = &tree[tree.find("use ").map_or(0, |u| u + 4)..];
            let end = tree.find(';').unwrap_or(tree.len());
            from = start + 4;
            let mut paths = Vec::new();
            if ["crate::", "super::", "self::"]
                .iter()
                .any(|k| tree.starts_with(k))
            {
                paths = module_paths(&tree[..end], &s.module);
            } else {
                // `pub use child::X`: relative to this module when `child` is one of its modules.
                expand_use_tree(&tree[..end], s.module.clone(), &mut paths);
                paths.retain(|p| {
                    p.len() > s.module.len() + 1 && modules.contains(&p[..=s.module.len()])
                });
            }
            for p in paths.into_iter().filter(|p| p.len() >= 2) {
                out.insert((s.module.clone(), p[p.len() - 1].clone()), p);
            }
        }
    }
    out
}

/// `path` with re-exported names replaced by what they name, until none is left.
fn resolve(
    mut path: Vec<String>,
    reexports: &BTreeMap<(Vec<String>, String), Vec<String>>,
) -> Vec<String> {
    for _ in 0..16 {
        let hop = (0..path.len()).find_map(|i| {
            reexports
                .get(&(path[..i].to_vec(), path[i].clone()))
                .filter(|target| **target != path[..=i])
                .map(|target| (i, target.clone()))
        });
        match hop {
            Some((i, target)) => {
                let mut next = target;
                next.extend_from_slice(&path[i + 1..]);
                path = next;
            }
            None => break,
        }
    }
    path
}

/// Edges between the children of `parent` (the crate root: empty): `a → b` when code in
/// `parent::a` (or below) names `parent::b` (or below).
fn module_graph(sources: &[Source], parent: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let depth = parent.len();
    let reexports = reexports(sources);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources
        .iter()
        .filter(|s| s.module.len() > depth && s.module[..depth] == *parent)
    {
        let from = s.module[depth].clone();
        let edges = graph.entry(from.clone()).or_default();
        for path in module_paths(&s.code, &s.module) {
            let path = resolve(path, &reexports);
            if path.len() > depth && path[..depth] == *parent {
                let to = &path[depth];
                let is_module = sources
                    .iter()
                    .any(|o| o.module.len() > depth && o.module[..=depth] == path[..=depth]);
                if is_module && *to != from {
                    edges.insert(to.clone());
                }
            }
        }
    }
    graph
}

/// A cycle of the graph, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, bool>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(true) => return None,
            Some(false) => {
                let at = stack.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = stack[at..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        state.insert(node, false);
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(node, true);
        None
    }
    let mut state = BTreeMap::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut state, &mut Vec::new()))
}

/// Every function (`fn name … { … }`) of the non-test code with its line and length.
fn functions(s: &Source) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let code = &s.code;
    let mut from = 0;
    while let Some(p) = code[from..].find("fn ") {
        let start = from + p;
        from = start + 3;
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = code[from..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body starts at the first `{` outside the signature's parentheses and
        // generics; a `;` first is a declaration without a body.
        let mut depth = 0i32;
        let mut body = None;
        for (j, c) in code[from..].char_indices() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                '{' if depth == 0 => {
                    body = Some(from + j);
                    break;
                }
                ';' if depth == 0 => break,
                _ => {}
            }
        }
        let Some(body) = body else { continue };
        let end = block_end(code, body);
        let first = code[..start].matches('\n').count() + 1;
        let last = code[..end].matches('\n').count() + 1;
        out.push((name, first, last - first + 1));
    }
    out
}

/// Panics with the first cycle among the children of any module of these sources.
fn assert_acyclic(name: &str, sources: &[Source]) {
    let mut parents: BTreeSet<Vec<String>> = BTreeSet::new();
    for s in sources {
        for d in 0..s.module.len() {
            parents.insert(s.module[..d].to_vec());
        }
    }
    for parent in &parents {
        let graph = module_graph(sources, parent);
        if let Some(cycle) = find_cycle(&graph) {
            let at = if parent.is_empty() {
                name.to_string()
            } else {
                parent.join("::")
            };
            panic!(
                "module cycle among the children of {at}: {}",
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn the_library_has_no_module_cycle_at_any_level() {
    let sources = load_library();
    let top = module_graph(&sources, &[]);
    assert!(
        top.len() >= 20,
        "the top-level graph is missing modules: {top:?}"
    );
    assert!(
        top["worker"].contains("job"),
        "the graph misses edges: {top:?}"
    );
    assert_acyclic("the library", &sources);
}

#[test]
fn the_cli_has_no_module_cycle() {
    let sources = load_crate(&cli_src());
    assert!(sources.len() > 10, "the CLI's modules were not found");
    assert_acyclic("the fanout binary", &sources);
}

#[test]
fn no_function_is_longer_than_120_lines_and_no_file_than_700() {
    let mut sources = load_library();
    sources.extend(load_crate(&cli_src()));
    let mut problems = Vec::new();
    for s in &sources {
        let rel = s
            .path
            .strip_prefix(library_src())
            .unwrap_or(&s.path)
            .display()
            .to_string();
        let cli = rel.starts_with("bin/");
        let max_file = if cli {
            MAX_CLI_FILE_LINES
        } else {
            MAX_FILE_LINES
        };
        if s.lines > max_file {
            problems.push(format!("{rel}: {} lines (at most {max_file})", s.lines));
        }
        for (name, line, len) in functions(s) {
            if len > MAX_FN_LINES {
                problems.push(format!(
                    "{rel}:{line}: fn {name} is {len} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_lexer_blanks_comments_strings_and_chars_but_not_lifetimes() {
    let src = "let a = \"crate::x {\"; // crate::y {\nlet c = '{'; fn f<'a>(x: &'a str) {}\nlet r = r#\"}\"#; /* { */ let d = b'\\'';";
    let code = blank_literals(src);
    assert!(!code.contains("crate::"), "{code}");
    assert_eq!(code.matches('{').count(), 1, "{code}");
    assert!(code.contains("<'a>(x: &'a str)"), "{code}");
    assert_eq!(code.lines().count(), src.lines().count());
}

#[test]
fn use_trees_expand_to_every_path() {
    let mut out = Vec::new();
    expand_use_tree("{a::{b, c::D}, e, f::g as h};", Vec::new(), &mut out);
    let got: Vec<String> = out.iter().map(|p| p.join("::")).collect();
    assert_eq!(got, ["a::b", "a::c::D", "e", "f::g"]);
    let module = ["read".to_string(), "csv".to_string()];
    let paths = module_paths(
        "use crate::job::{layout, Manifest};\nlet x = crate::clock::now_ms(); mycrate::z;\n\
         super::csv_fast::decode(); use super::super::plan::Chunk; self::inner::f(); a::super::b",
        &module,
    );
    let got: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        got,
        [
            "job::layout",
            "job::Manifest",
            "clock::now_ms",
            "read::csv_fast::decode",
            "plan::Chunk",
            "read::csv::inner::f"
        ]
    );
}

#[test]
fn reexported_names_resolve_to_the_module_that_defines_them() {
    let src = |module: &[&str], code: &str| Source {
        path: PathBuf::from(format!("{}.rs", module.join("/"))),
        module: module.iter().map(|m| m.to_string()).collect(),
        code: blank_literals(code),
        lines: 1,
    };
    let sources = [
        src(&[], "pub mod job;\npub use error::{Error, Result};"),
        src(&["error"], "pub enum Error {}"),
        src(
            &["job"],
            "mod io;\nmod records;\npub use records::{Manifest, ChunkRecord};\npub use io::load;",
        ),
        src(&["job", "records"], "pub struct Manifest;"),
        src(
            &["job", "io"],
            "use super::Manifest;\nfn f() -> crate::Result<()> { Ok(()) }",
        ),
    ];
    let graph = module_graph(&sources, &["job".to_string()]);
    assert_eq!(graph["io"], BTreeSet::from(["records".to_string()]));
    let top = module_graph(&sources, &[]);
    assert_eq!(top["job"], BTreeSet::from(["error".to_string()]));
}

#[test]
fn a_cycle_is_found_and_a_dag_passes() {
    let g = |edges: &[(&str, &str)]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            m.entry(a.to_string()).or_default().insert(b.to_string());
            m.entry(b.to_string()).or_default();
        }
        m
    };
    assert_eq!(find_cycle(&g(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    let cycle = find_cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
}

#[test]
fn function_lengths_count_from_signature_to_closing_brace() {
    let s = Source {
        path: PathBuf::from("x.rs"),
        module: vec!["x".into()],
        code: blank_literals(
            "fn a() {\n    let s = \"}\";\n}\n\nfn b<T: Fn(u8) -> u8>(\n    t: T,\n) -> u8 {\n    t(1)\n}\ntrait T { fn c(&self); }\n",
        ),
        lines: 10,
    };
    assert_eq!(
        functions(&s),
        [("a".to_string(), 1, 3), ("b".to_string(), 5, 5)]
    );
}
