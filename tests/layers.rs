//! The source tree's shape, checked: every `use` and path of `src/` resolved to the file it
//! names, then (1) no module imports from a layer above its own, (2) no import circle among the
//! files, (3) no file over 600 lines and at most 14 entries at the top of `src/`, (4) no function
//! over 100 lines (a function reads as a short list of named steps). The layers, top
//! to bottom, as the README's source layout describes them:
//!
//! cli (the binary) → server → pipeline → config → tools → memory → stages → store → media | text | host

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library's top-level modules and their layer (0 is the top). Modules on one layer may not
/// import from each other.
const LAYERS: [(&str, u8); 10] = [
    ("server", 1),
    ("pipeline", 2),
    ("config", 3),
    ("tools", 4),
    ("memory", 5),
    ("stages", 6),
    ("store", 7),
    ("media", 8),
    ("text", 8),
    ("host", 8),
];

fn layer(top: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == top).map(|(_, l)| *l)
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A file's module path: src/stages/llm/mod.rs → [stages, llm]; src/stages/asr.rs → [stages, asr].
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file a module path lives in, if any.
fn file_of(module: &[String]) -> Option<PathBuf> {
    let base = module.iter().fold(src(), |p, m| p.join(m));
    if module.is_empty() {
        return Some(src().join("lib.rs"));
    }
    let single = base.with_extension("rs");
    if single.is_file() {
        return Some(single);
    }
    let folder = base.join("mod.rs");
    folder.is_file().then_some(folder)
}

/// The code of a file without comments and string literals (so paths in docs do not count), and
/// without its inline unit tests (`#[cfg(test)] mod tests { ... }`, last in a file), whose
/// `super` is the file itself.
fn code_only(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::new();
    for line in text.lines() {
        let mut l = line.to_string();
        if let Some(i) = l.find("//") {
            l.truncate(i);
        }
        let mut kept = String::new();
        let mut in_str = false;
        let mut prev = ' ';
        for c in l.chars() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                kept.push(c);
            }
            prev = c;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// Every path a file uses that starts with `crate`, `super` or `self`, brace groups expanded.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0
            || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let head = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|h| rest.starts_with(h));
        if let (true, Some(_)) = (starts_word, head) {
            // Take the path with its brace groups.
            let mut depth = 0;
            let mut j = i;
            while j < bytes.len() {
                let c = bytes[j];
                if c == '{' {
                    depth += 1;
                } else if c == '}' {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                } else if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') {
                    break;
                }
                j += 1;
            }
            let text: String = bytes[i..j].iter().collect();
            expand(&text, &mut out);
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// `a::{b, c::{d, e}}` → [a, b], [a, c, d], [a, c, e].
fn expand(text: &str, out: &mut Vec<Vec<String>>) {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    match text.find('{') {
        None => out.push(
            text.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        Some(open) => {
            let prefix = &text[..open];
            let inner = &text[open + 1..text.rfind('}').unwrap_or(text.len())];
            let mut depth = 0;
            let mut start = 0;
            let mut items = Vec::new();
            for (k, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&inner[start..k]);
                        start = k + 1;
                    }
                    _ => {}
                }
            }
            items.push(&inner[start..]);
            for item in items.into_iter().filter(|s| !s.is_empty()) {
                let item = if item == "self" { "" } else { item };
                expand(&format!("{prefix}{item}"), out);
            }
        }
    }
}

/// The module a path names, from the module that uses it: the longest prefix that is a module
/// of its own file (`super` is the parent module, `self` the module itself).
fn resolve(from: &[String], path: &[String]) -> Option<Vec<String>> {
    let (mut module, rest) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.to_vec(), &path[1..]),
        Some("super") => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let keep = from.len().checked_sub(ups)?;
            (from[..keep].to_vec(), &path[ups..])
        }
        _ => return None,
    };
    for seg in rest {
        let mut next = module.clone();
        next.push(seg.clone());
        if file_of(&next).is_some() {
            module = next;
        } else {
            break;
        }
    }
    Some(module)
}

struct Tree {
    /// file → the files it imports from.
    edges: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    /// (file, module it imports) for the layer check.
    imports: Vec<(PathBuf, Vec<String>)>,
}

fn library_tree() -> Tree {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut edges = BTreeMap::new();
    let mut imports = Vec::new();
    for f in files {
        let module = module_of(&f);
        // The binary (main.rs and cli/) uses the library by name, from above every layer.
        if module.first().is_some_and(|m| m == "cli") || f.ends_with("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let mut to = BTreeSet::new();
        for path in paths_in(&code_only(&text)) {
            let Some(target) = resolve(&module, &path) else {
                continue;
            };
            if let Some(file) = file_of(&target) {
                if file != f {
                    to.insert(file);
                }
            }
            imports.push((f.clone(), target));
        }
        edges.insert(f, to);
    }
    Tree { edges, imports }
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let tree = library_tree();
    let mut wrong = Vec::new();
    for (file, target) in &tree.imports {
        let from = module_of(file);
        let (Some(a), Some(b)) = (from.first(), target.first()) else {
            continue;
        };
        if a == b {
            continue;
        }
        let (Some(la), Some(lb)) = (layer(a), layer(b)) else {
            wrong.push(format!(
                "{}: unknown top-level module {a} or {b}",
                file.display()
            ));
            continue;
        };
        if lb <= la {
            wrong.push(format!(
                "{} ({a}, layer {la}) imports {} (layer {lb})",
                file.strip_prefix(src()).unwrap().display(),
                target.join("::")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
    // And the check sees imports at all (a parser that found none would pass anything).
    assert!(
        tree.imports.len() > 100,
        "{} imports found",
        tree.imports.len()
    );
}

#[test]
fn the_library_never_reaches_the_command_line() {
    let tree = library_tree();
    for file in tree.edges.keys() {
        let text = code_only(&std::fs::read_to_string(file).unwrap());
        assert!(
            !names_cli(&text, "mod ") && !names_cli(&text, "crate::"),
            "{} reaches into the command line",
            file.display()
        );
    }
    // The check tells the module from a name that starts like it.
    assert!(names_cli("use crate::cli::run;", "crate::") && names_cli("mod cli;", "mod "));
    assert!(!names_cli("pub mod client;", "mod ") && !names_cli("crate::clip", "crate::"));
}

/// Whether `text` names the `cli` module after `before` (`mod cli`, `crate::cli`), as a whole
/// name (not `mod client`).
fn names_cli(text: &str, before: &str) -> bool {
    let at = format!("{before}cli");
    text.match_indices(&at).any(|(i, _)| {
        let next = text[i + at.len()..].chars().next();
        !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn no_import_circle_among_the_files() {
    let tree = library_tree();
    // Depth-first search for a back edge; report the circle it closes.
    fn visit(
        f: &PathBuf,
        tree: &Tree,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        state.insert(f.clone(), 1);
        stack.push(f.clone());
        for g in tree.edges.get(f).into_iter().flatten() {
            match state.get(g).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == g).unwrap();
                    let mut circle = stack[at..].to_vec();
                    circle.push(g.clone());
                    return Some(circle);
                }
                0 => {
                    if let Some(c) = visit(g, tree, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(f.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for f in tree.edges.keys() {
        if state.get(f).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(f, &tree, &mut state, &mut Vec::new()) {
                let names: Vec<_> = c
                    .iter()
                    .map(|p| p.strip_prefix(src()).unwrap().display().to_string())
                    .collect();
                panic!("import circle: {}", names.join(" -> "));
            }
        }
    }
}

#[test]
fn files_stay_small_and_the_top_of_src_stays_short() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 600).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "files over 600 lines: {long:?}");
    let top = std::fs::read_dir(src()).unwrap().count();
    assert!(top <= 14, "src/ has {top} entries at its top level");
}

/// The functions of a file's text longer than `limit` lines: (name, first line, lines). A
/// function starts at a line with `fn name` (not a declaration ending in `;`) and ends at the
/// first later line that is its indentation followed by `}` (rustfmt's layout).
fn long_functions(text: &str, limit: usize) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let indent = &line[..line.len() - code.len()];
        let Some(at) = code.find("fn ") else { continue };
        let head = &code[..at];
        let is_fn = head.split_whitespace().all(|w| {
            w == "pub" || w.starts_with("pub(") || matches!(w, "async" | "const" | "unsafe")
        });
        // Not a declaration (`;`) nor a function on one line (`{ ... }`).
        let one_line = code.contains('{') && code.matches('{').count() == code.matches('}').count();
        if !is_fn || code.trim_end().ends_with(';') || one_line {
            continue;
        }
        let name: String = code[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{indent}}}");
        if let Some(end) = (i + 1..lines.len()).find(|&j| lines[j].trim_end() == close) {
            let n = end - i + 1;
            if n > limit {
                out.push((name, i + 1, n));
            }
        }
    }
    out
}

#[test]
fn no_function_is_over_100_lines() {
    // The check finds a long function, and not a short one or a declaration.
    let body = "        step();\n".repeat(100);
    let sample = format!(
        "impl X {{\n    fn short(&self) {{}}\n    fn decl(&self);\n    pub(crate) fn long(&self) {{\n{body}    }}\n}}\n"
    );
    assert_eq!(long_functions(&sample, 100), [("long".to_string(), 4, 102)]);
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            long_functions(&text, 100)
                .into_iter()
                .map(move |(name, at, n)| format!("{}:{at} {name} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "functions over 100 lines: {long:#?}");
}

#[test]
fn the_resolver_understands_the_forms_it_checks() {
    let mut out = Vec::new();
    expand("crate::a::{b, c::{d, e}, self}", &mut out);
    assert_eq!(
        out,
        [
            vec!["crate", "a", "b"],
            vec!["crate", "a", "c", "d"],
            vec!["crate", "a", "c", "e"],
            vec!["crate", "a"],
        ]
    );
    let code = code_only("use super::x::Y; // crate::not::this\nlet s = \"crate::nor::this\";");
    assert_eq!(paths_in(&code), [vec!["super", "x", "Y"]]);
    let m = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // From src/stages/llm/local.rs, `super::chat` is src/stages/llm/chat.rs.
    assert_eq!(
        resolve(&m(&["stages", "llm", "local"]), &m(&["super", "chat", "X"])),
        Some(m(&["stages", "llm", "chat"]))
    );
    // From src/stages/llm/mod.rs, `super::Cancel` is src/stages/mod.rs.
    assert_eq!(
        resolve(&m(&["stages", "llm"]), &m(&["super", "Cancel"])),
        Some(m(&["stages"]))
    );
    // From src/stages/mod.rs, `crate::store::Store` is src/store/mod.rs.
    assert_eq!(
        resolve(&m(&["stages"]), &m(&["crate", "store", "Store"])),
        Some(m(&["store"]))
    );
}
