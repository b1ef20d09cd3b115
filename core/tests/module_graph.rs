//! The `use crate::…` graph of core's modules has no cycle, so each module can be read, tested
//! and changed bottom-up (issue 13: validation lives in a leaf, `holdout`, `operator` and
//! `governance` need neither `request` nor `claims`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules each `src/*.rs` file names as `crate::<module>`, outside its `#[cfg(test)]` part.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
            let text = std::fs::read_to_string(&path).unwrap();
            let production = text.split("#[cfg(test)]").next().unwrap().to_string();
            sources.insert(name, production);
        }
    }
    let names: BTreeSet<String> = sources.keys().cloned().collect();
    sources.iter().map(|(name, text)| (name.clone(), uses(text, &names, name))).collect()
}

/// `crate::a::…`, and `crate::{a::…, b, …}` groups one level deep.
fn uses(text: &str, names: &BTreeSet<String>, this: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find(';').unwrap_or(group.len())];
            found.extend(group.split([',', '{']).map(|p| ident(p.trim())));
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| names.contains(m) && m != this);
    found
}

/// A module on a cycle, if any (depth-first search, colouring modules in progress).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| *p == m) {
            return Some(path[at..].iter().map(|s| s.to_string()).chain([m.to_string()]).collect());
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        let found = graph[m].iter().find_map(|next| visit(next, graph, path, done));
        path.pop();
        found
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn core_modules_form_no_import_cycle() {
    let graph = module_graph();
    assert!(graph.len() > 20, "the scan found core's modules");
    assert!(graph["claims"].contains("request"), "the scan sees `use crate::…` edges");
    assert_eq!(cycle(&graph), None);
}

#[test]
fn validation_is_a_leaf() {
    let graph = module_graph();
    for module in ["validate", "canary", "totals"] {
        assert!(graph[module].iter().all(|m| m == "error" || m == "hash"), "{module} uses {:?}", graph[module]);
    }
    for module in ["holdout", "operator", "governance"] {
        assert!(
            !graph[module].contains("request") && !graph[module].contains("claims"),
            "{module}: {:?}",
            graph[module]
        );
    }
}
