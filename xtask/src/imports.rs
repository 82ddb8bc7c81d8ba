//! Import loops between a crate's top-level modules, from its source text: module `a` imports `b`
//! when `crate::b` appears in `a`'s files (a `use` or a path in code), with `crate::{b, c::…}`
//! groups read too. A path to an item of the crate root (`crate::ALLOW`) imports the root. Only
//! top-level modules are nodes: `a/x.rs` counts as `a`. Comments are not skipped, so a path quoted
//! in one counts as an import; that errs towards reporting a loop, never towards hiding one.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// The crate root's node name.
pub const ROOT: &str = "(root)";

/// Module → the modules it imports, for the crate whose root file is `src/main.rs` or
/// `src/lib.rs`.
pub fn graph(src: &Path) -> std::io::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    collect(src, &mut files)?;
    let mut texts = Vec::new();
    let mut modules = BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("found under src");
        let first = rel.components().next().expect("non-empty").as_os_str().to_string_lossy();
        let module = match first.strip_suffix(".rs") {
            Some("main" | "lib") => ROOT.to_string(),
            Some(stem) => stem.to_string(),
            None => first.to_string(),
        };
        modules.insert(module.clone());
        texts.push((module, std::fs::read_to_string(&file)?));
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> =
        modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (module, text) in texts {
        for target in crate_paths(&text) {
            let target = if modules.contains(&target) { target } else { ROOT.to_string() };
            if target != module {
                graph.get_mut(&module).expect("every module is a node").insert(target);
            }
        }
    }
    Ok(graph)
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The first segment of every path that starts with `crate::` in `text`.
pub fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `mycrate::`, not `crate::`
        }
        let trimmed = rest.trim_start();
        if let Some(group) = trimmed.strip_prefix('{') {
            out.extend(group_heads(group));
        } else {
            out.push(ident(trimmed).to_string());
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

/// The first segment of each item of a `{…}` group (`group` starts after the brace).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && depth == 0 && !c.is_whitespace() => {
                heads.push(ident(&group[i..]).to_string());
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// Every loop of the graph, each as the modules on it from its smallest name, once.
pub fn loops(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        // Paths from `start` through modules named after it, back to `start`: each loop is found
        // from its smallest module only.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            for next in &graph[&node] {
                if next == start {
                    found.insert(path.clone());
                } else if next > start && !path.contains(next) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph_of(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(m, to)| (m.to_string(), to.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn reads_single_and_grouped_paths() {
        let text = "use crate::{\n    dns,\n    maps::{CW_A, count},\n    packet::{L4, x},\n    \
                    request, response,\n};\nlet v = crate::scratch::forget(1);\nuse mycrate::no;\n\
                    use crate::ALLOW;";
        assert_eq!(
            crate_paths(text),
            ["dns", "maps", "packet", "request", "response", "scratch", "ALLOW"]
        );
    }

    #[test]
    fn finds_a_loop_and_only_loops() {
        let g = graph_of(&[
            ("(root)", &["router"]),
            ("router", &["packet", "dns"]),
            ("dns", &["packet"]),
            ("packet", &["dns"]),
        ]);
        assert_eq!(loops(&g), [["dns", "packet"]]);
        let g = graph_of(&[("(root)", &["a"]), ("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        assert_eq!(loops(&g), [["a", "b", "c"]]);
        let g = graph_of(&[("(root)", &["a", "b"]), ("a", &["b"]), ("b", &[])]);
        assert!(loops(&g).is_empty());
    }

    /// issue 14: the kernel programs are layered (entry points, router, parsers, helpers; see
    /// agent-ebpf/src/main.rs), so no module imports one that imports it back.
    #[test]
    fn kernel_programs_have_no_import_loop() {
        let src = crate::workspace_root().join("agent-ebpf/src");
        let graph = graph(&src).expect("read agent-ebpf/src");
        // The check saw the crate: a parser imports the helpers.
        assert!(graph.get("dns").is_some_and(|to| to.contains("packet")), "{graph:?}");
        assert_eq!(loops(&graph), Vec::<Vec<String>>::new(), "{graph:#?}");
    }
}
