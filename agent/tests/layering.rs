//! No import loop between the agent's source files: a module may use what is below it, never
//! what uses it. Read from the sources, so a new loop fails `cargo test` with the files and lines
//! that close it.
//!
//! A file's edges are the paths it names: in `use` items (groups and renames expanded) and inline
//! in code, when they start with `crate::`, `super::`, `self::` or a child module the file
//! declares (`mod x;`). Each path goes to the file of its longest module prefix, so a path through
//! a parent's re-export counts as a use of the parent: a child that imports from its own
//! `mod.rs` while that file uses the child is a loop. Comments, strings and `mod tests {}`'s own
//! `super::*` (the file itself) are not edges. Paths to external crates are not followed.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

type Module = Vec<String>;
/// From each file, the files it uses: for each, the first line naming it and the path named.
type Edges = BTreeMap<Module, BTreeMap<Module, (usize, String)>>;

#[test]
fn agent_sources_have_no_import_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&src);
    assert!(files.len() > 20, "found only {} modules under {}", files.len(), src.display());
    let texts = files.iter().map(|(module, path)| (module, fs::read_to_string(path).unwrap()));
    let edges = edges(&files, texts);
    let loops = cycles(&files, &edges);
    let described: Vec<String> = loops
        .iter()
        .map(|scc| {
            let mut lines = Vec::new();
            for from in scc {
                for (to, (line, path)) in edges.get(from).into_iter().flatten() {
                    if scc.contains(to) {
                        let file = files[from].strip_prefix(&src).unwrap().display();
                        lines.push(format!("  {file}:{line} uses {path}"));
                    }
                }
            }
            lines.join("\n")
        })
        .collect();
    assert!(loops.is_empty(), "import loops:\n{}", described.join("\n---\n"));
    // The check sees edges at all (a parser that finds none would pass anything).
    let total: usize = edges.values().map(BTreeMap::len).sum();
    assert!(total > 40, "only {total} edges found");
}

/// A loop made on purpose is found, with the module path through a parent's re-export.
#[test]
fn a_child_importing_through_its_parent_is_a_loop() {
    let parent: Module = vec!["a".into()];
    let child: Module = vec!["a".into(), "b".into()];
    let files: BTreeMap<Module, PathBuf> =
        [(parent.clone(), "a/mod.rs".into()), (child.clone(), "a/b.rs".into())].into();
    let parent_src = "mod b;\npub use b::Thing;\npub fn f() { let _ = b::make(); }\n";
    let child_src =
        "use super::{helper, Other as _};\n// use crate::z;\nfn g() { \"crate::y\"; }\n";
    let edges = edges(&files, [(&parent, parent_src.into()), (&child, child_src.into())]);
    assert_eq!(edges[&parent].keys().collect::<Vec<_>>(), [&child]);
    assert_eq!(edges[&child].keys().collect::<Vec<_>>(), [&parent], "comments and strings skipped");
    assert_eq!(cycles(&files, &edges).len(), 1);
}

/// Every module file under `src` (lib.rs is the crate root; main.rs is another crate).
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module =
                rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            match module.last().map(String::as_str) {
                Some("main") if module.len() == 1 => continue,
                Some("lib") if module.len() == 1 => module.clear(),
                Some("mod") => {
                    module.pop();
                }
                _ => {}
            }
            out.insert(module, path);
        }
    }
    out
}

/// The edges between `files` that their `texts` name (paths outside `files` are not edges).
fn edges<'a>(
    files: &BTreeMap<Module, PathBuf>,
    texts: impl IntoIterator<Item = (&'a Module, String)>,
) -> Edges {
    let mut edges = Edges::new();
    for (module, text) in texts {
        for (line, target) in paths_named(&text, module) {
            let Some(to) = file_of(files, &target) else { continue };
            if &to != module {
                let example = (line, target.join("::"));
                edges.entry(module.clone()).or_default().entry(to).or_insert(example);
            }
        }
    }
    edges
}

/// The file whose module is the longest prefix of `path`.
fn file_of(files: &BTreeMap<Module, PathBuf>, path: &[String]) -> Option<Module> {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| files.contains_key(m))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Punct(char),
    PathSep,
}

/// Identifiers and punctuation with their line numbers; comments, strings and chars dropped.
fn tokens(text: &str) -> Vec<(usize, Token)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(at(i) == '\n');
                    i += 1;
                }
            }
        } else if c == 'r' && (at(i + 1) == '"' || (at(i + 1) == '#' && at(i + 2) != '[')) {
            // Raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            loop {
                if at(j) == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                    i = j + 1 + hashes;
                    break;
                }
                line += usize::from(at(j) == '\n');
                j += 1;
            }
        } else if c == '"' {
            i += 1;
            while at(i) != '"' {
                if at(i) == '\\' {
                    i += 1;
                }
                line += usize::from(at(i) == '\n');
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a), which has no closing quote.
            if at(i + 1) == '\\' {
                i += 2;
                while at(i) != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            out.push((line, Token::Ident(chars[start..i].iter().collect())));
        } else if c == ':' && at(i + 1) == ':' {
            out.push((line, Token::PathSep));
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push((line, Token::Punct(c)));
            }
            i += 1;
        }
    }
    out
}

/// The module paths (absolute, from the crate root) a file names, with their lines.
fn paths_named(text: &str, file_module: &Module) -> Vec<(usize, Module)> {
    let toks = tokens(text);
    let ident = |i: usize| match toks.get(i) {
        Some((_, Token::Ident(s))) => Some(s.as_str()),
        _ => None,
    };
    // Child modules declared by the file (`mod x;`), and inline modules (`mod x {`) by depth.
    let children: BTreeSet<&str> = (0..toks.len())
        .filter(|&i| {
            ident(i) == Some("mod") && toks.get(i + 2).map(|t| &t.1) == Some(&Token::Punct(';'))
        })
        .filter_map(|i| ident(i + 1))
        .collect();
    let mut out = Vec::new();
    let mut scope: Vec<(String, usize)> = Vec::new(); // inline module, brace depth inside it
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let (line, tok) = &toks[i];
        let here: Module =
            file_module.iter().cloned().chain(scope.iter().map(|s| s.0.clone())).collect();
        match tok {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                if scope.last().is_some_and(|s| s.1 == depth) {
                    scope.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Token::Ident(k)
                if k == "mod" && toks.get(i + 2).map(|t| &t.1) == Some(&Token::Punct('{')) =>
            {
                scope.push((ident(i + 1).unwrap_or_default().to_string(), depth + 1));
            }
            Token::Ident(k) if k == "use" => {
                let end =
                    (i..toks.len()).find(|&j| toks[j].1 == Token::Punct(';')).unwrap_or(toks.len());
                for path in use_tree(&toks[i + 1..end]) {
                    if let Some(abs) = absolute(&path, &here, &children) {
                        out.push((*line, abs));
                    }
                }
                i = end;
                continue;
            }
            Token::Ident(first) if toks.get(i + 1).map(|t| &t.1) == Some(&Token::PathSep) => {
                let after_sep = i > 0 && toks[i - 1].1 == Token::PathSep;
                if !after_sep {
                    let mut path = vec![first.clone()];
                    let mut j = i + 1;
                    while toks.get(j).map(|t| &t.1) == Some(&Token::PathSep) {
                        match ident(j + 1) {
                            Some(s) => path.push(s.to_string()),
                            None => break,
                        }
                        j += 2;
                    }
                    if let Some(abs) = absolute(&path, &here, &children) {
                        out.push((*line, abs));
                    }
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// `a::{b, c::{d as e, self}, f::*}` → `a::b`, `a::c::d`, `a::c`, `a::f`.
fn use_tree(toks: &[(usize, Token)]) -> Vec<Vec<String>> {
    fn parse(
        toks: &[(usize, Token)],
        i: &mut usize,
        prefix: &[String],
        out: &mut Vec<Vec<String>>,
    ) {
        let mut path = prefix.to_vec();
        loop {
            match toks.get(*i).map(|t| &t.1) {
                Some(Token::Ident(s)) if s == "as" => {
                    *i += 2;
                }
                Some(Token::Ident(s)) => {
                    // `self` in a group names the group's prefix.
                    if s != "self" || path.is_empty() {
                        path.push(s.clone());
                    }
                    *i += 1;
                }
                Some(Token::PathSep) | Some(Token::Punct('*')) => *i += 1,
                Some(Token::Punct('{')) => {
                    *i += 1;
                    loop {
                        parse(toks, i, &path, out);
                        match toks.get(*i).map(|t| &t.1) {
                            Some(Token::Punct(',')) => *i += 1,
                            _ => break,
                        }
                        if toks.get(*i).map(|t| &t.1) == Some(&Token::Punct('}')) {
                            break;
                        }
                    }
                    *i += 1; // '}'
                    return;
                }
                _ => break,
            }
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    parse(toks, &mut i, &[], &mut out);
    out
}

/// The absolute module path of `path` as named in module `here`, or None for external crates.
fn absolute(path: &[String], here: &Module, children: &BTreeSet<&str>) -> Option<Module> {
    let (first, rest) = path.split_first()?;
    let mut base: Module = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.clone(),
        "super" => here[..here.len().checked_sub(1)?].to_vec(),
        child if children.contains(child) => {
            let mut m = here.clone();
            m.push(child.to_string());
            m
        }
        _ => return None,
    };
    let mut rest = rest;
    while let Some((s, r)) = rest.split_first() {
        if s != "super" {
            break;
        }
        base.pop();
        rest = r;
    }
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(base)
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(files: &BTreeMap<Module, PathBuf>, edges: &Edges) -> Vec<BTreeSet<Module>> {
    struct State<'a> {
        edges: &'a Edges,
        index: BTreeMap<&'a Module, (usize, usize)>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        next: usize,
        out: Vec<BTreeSet<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        s.index.insert(v, (s.next, s.next));
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let edges = s.edges;
        for w in edges.get(v).into_iter().flat_map(BTreeMap::keys) {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.index[v].1.min(s.index[w].1);
                s.index.get_mut(v).unwrap().1 = low;
            } else if s.on_stack.contains(w) {
                let low = s.index[v].1.min(s.index[w].0);
                s.index.get_mut(v).unwrap().1 = low;
            }
        }
        if s.index[v].0 == s.index[v].1 {
            let mut scc = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.insert(w.clone());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in files.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}
