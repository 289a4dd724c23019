//! The plan of the house, checked against the code: every `crate::`,
//! `super::` and `self::` path in `src/` (imports and inline paths, test
//! modules left out) must follow the "Who may use whom" list in
//! docs/ARCHITECTURE.md, and no files may import each other in a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A file's module path: `src/tls/store/mod.rs` → `[tls, store]`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(Path::new(ROOT).join("src")).unwrap();
    let mut segs: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(
        segs.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        segs.pop();
    }
    segs
}

/// The module paths a file refers to, resolved to absolute paths.
struct Uses {
    /// The module the visitor is in (the file's, plus inline modules).
    here: Vec<String>,
    /// Child modules declared in the file (`mod x;`), usable without `self::`.
    children: BTreeSet<String>,
    found: BTreeSet<Vec<String>>,
}

impl Uses {
    fn resolve(&mut self, segs: &[String]) {
        let Some(first) = segs.first() else { return };
        let mut path = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.here.clone(),
            "super" => self.here.clone(),
            name if self.children.contains(name) => self.here.clone(),
            _ => return, // another crate, a local name, a prelude type
        };
        let mut rest = segs;
        if first == "crate" || first == "self" {
            rest = &segs[1..];
        }
        for seg in rest {
            if seg == "super" {
                path.pop();
            } else {
                path.push(seg.clone());
            }
        }
        self.found.insert(path);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.resolve(&full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                full.push(r.ident.to_string());
                self.resolve(&full);
            }
            syn::UseTree::Glob(_) => self.resolve(prefix),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

fn is_test_module(m: &syn::ItemMod) -> bool {
    m.attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Uses {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segs.len() > 1 {
            self.resolve(&segs);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_test_module(m) {
            return;
        }
        if m.content.is_none() {
            return;
        }
        self.here.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.here.pop();
    }
}

/// The module paths a file's code uses, resolved; `module` is the file's.
fn uses_of(module: &[String], ast: &syn::File) -> BTreeSet<Vec<String>> {
    let children = ast
        .items
        .iter()
        .filter_map(|i| match i {
            syn::Item::Mod(m) if m.content.is_none() => Some(m.ident.to_string()),
            _ => None,
        })
        .collect();
    let mut uses = Uses {
        here: module.to_vec(),
        children,
        found: BTreeSet::new(),
    };
    uses.visit_file(ast);
    uses.found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file that defines a module path, or the longest prefix of it that
/// is a file (the rest names items inside that file).
fn file_of(path: &[String], files: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| files.contains_key(p))
}

/// File → files it uses (itself left out).
fn file_graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut paths = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut paths);
    let files: BTreeMap<Vec<String>, PathBuf> = paths
        .into_iter()
        .filter(|p| !p.ends_with("main.rs"))
        .map(|p| (module_of(&p), p))
        .collect();
    let mut graph = BTreeMap::new();
    for (module, path) in &files {
        let src = std::fs::read_to_string(path).unwrap();
        let ast = syn::parse_file(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let targets = uses_of(module, &ast)
            .iter()
            .filter_map(|p| file_of(p, &files))
            .filter(|t| t != module)
            .collect();
        graph.insert(module.clone(), targets);
    }
    graph
}

/// Strongly connected groups of more than one node (Tarjan's algorithm).
fn loops<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    struct Walk<'g, N> {
        graph: &'g BTreeMap<N, BTreeSet<N>>,
        index: BTreeMap<N, usize>,
        low: BTreeMap<N, usize>,
        stack: Vec<N>,
        found: Vec<Vec<N>>,
    }
    impl<N: Ord + Clone> Walk<'_, N> {
        fn visit(&mut self, n: &N) {
            let i = self.index.len();
            self.index.insert(n.clone(), i);
            self.low.insert(n.clone(), i);
            self.stack.push(n.clone());
            for m in self.graph.get(n).into_iter().flatten() {
                if !self.index.contains_key(m) {
                    self.visit(m);
                    let low = self.low[n].min(self.low[m]);
                    self.low.insert(n.clone(), low);
                } else if self.stack.contains(m) {
                    let low = self.low[n].min(self.index[m]);
                    self.low.insert(n.clone(), low);
                }
            }
            if self.low[n] == self.index[n] {
                let at = self.stack.iter().position(|x| x == n).unwrap();
                let group = self.stack.split_off(at);
                if group.len() > 1 {
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for n in graph.keys() {
        if !walk.index.contains_key(n) {
            walk.visit(n);
        }
    }
    walk.found
}

/// The list in docs/ARCHITECTURE.md: "- `module`: may use `a`, `b`".
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/ARCHITECTURE.md")).unwrap();
    let section = doc
        .split("## Who may use whom")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has a \"Who may use whom\" section");
    let section = section.split("\n## ").next().unwrap();
    let names = |s: &str| -> BTreeSet<String> {
        s.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    section
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .filter_map(|l| l.split_once(':'))
        .map(|(module, uses)| {
            let module = names(module).into_iter().next().expect("a `module` name");
            (module, names(uses))
        })
        .collect()
}

fn show(path: &[String]) -> String {
    if path.is_empty() {
        "lib".into()
    } else {
        path.join("::")
    }
}

#[test]
fn no_two_files_import_each_other() {
    let found = loops(&file_graph());
    let shown: Vec<String> = found
        .iter()
        .map(|g| g.iter().map(|p| show(p)).collect::<Vec<_>>().join(" <-> "))
        .collect();
    assert!(shown.is_empty(), "import loops between files: {shown:#?}");
}

#[test]
fn modules_use_only_what_the_architecture_allows() {
    let allowed = allowed();
    let plan_loops = loops(&allowed);
    assert!(
        plan_loops.is_empty(),
        "the plan itself has loops: {plan_loops:?}"
    );
    let mut wrong = Vec::new();
    for (file, targets) in file_graph() {
        let Some(module) = file.first() else { continue };
        let Some(may) = allowed.get(module) else {
            wrong.push(format!("`{module}` is missing from \"Who may use whom\""));
            continue;
        };
        for t in targets {
            match t.first() {
                // The crate root's helpers (`locked`) are everyone's.
                None => {}
                Some(m) if m == module || may.contains(m) => {}
                Some(m) => wrong.push(format!("{} uses {m}", show(&file))),
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the plan: {wrong:#?}");
}

/// The checker itself: a loop it must see, and paths it must resolve.
#[test]
fn the_checker_finds_loops_and_resolves_paths() {
    let g: BTreeMap<u8, BTreeSet<u8>> = [
        (1, BTreeSet::from([2])),
        (2, BTreeSet::from([3])),
        (3, BTreeSet::from([1])),
        (4, BTreeSet::from([1])),
    ]
    .into();
    assert_eq!(loops(&g).len(), 1);
    assert_eq!(loops(&g)[0].len(), 3);

    let src = "use crate::a::{b::C, d}; use super::e::*; use kid::Z; fn f() { crate::g::h::i(); }
               mod kid; #[cfg(test)] mod tests { use crate::zz::Y; }";
    let ast = syn::parse_file(src).unwrap();
    let found = uses_of(&["m".into(), "n".into()], &ast);
    let found: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        found,
        ["a::b::C", "a::d", "g::h::i", "m::e", "m::n::kid::Z"]
    );
}

/// The rules a request passes through (`request`) and the connection side
/// (`conn`) work without pingora-proxy's `Session`, so a second request
/// path can call them; the connection side knows no site, page or origin.
#[test]
fn the_rules_and_the_connection_side_need_no_proxy_session() {
    let mut wrong = Vec::new();
    for (room, banned) in [
        ("request", &["pingora_proxy"][..]),
        (
            "conn",
            &[
                "pingora_proxy",
                "crate::edge",
                "crate::proxy",
                "crate::request",
            ][..],
        ),
    ] {
        let mut files = Vec::new();
        rust_files(&Path::new(ROOT).join("src").join(room), &mut files);
        assert!(!files.is_empty(), "src/{room} has files");
        for file in files {
            let src = std::fs::read_to_string(&file).unwrap();
            for name in banned.iter().filter(|n| src.contains(*n)) {
                wrong.push(format!("{} names {name}", file.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
