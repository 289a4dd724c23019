//! Maps between places in a TOML file and key paths, so every config error
//! names the key and the line (`pools.public.servers[1].addr`, line 14).

use std::ops::Range;
use toml_edit::{ImDocument, Item, Table, Value};

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(k: &str) -> Self {
        Seg::Key(k.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

pub fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A node of the document, whichever flavour of table or array it is.
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Item(&'a Item),
    Value(&'a Value),
}

type Child<'a> = (Seg, Option<Range<usize>>, Node<'a>);

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Table(t) => t.span(),
            Node::Item(i) => i.span(),
            Node::Value(v) => v.span(),
        }
    }

    /// Children with their path step and the span of their key, if any.
    fn children(self) -> Vec<Child<'a>> {
        fn table(t: &Table) -> Vec<Child<'_>> {
            t.iter()
                .filter_map(|(k, _)| t.get_key_value(k))
                .map(|(k, v)| (Seg::Key(k.get().to_string()), k.span(), Node::Item(v)))
                .collect()
        }
        match self {
            Node::Table(t) | Node::Item(Item::Table(t)) => table(t),
            Node::Item(Item::ArrayOfTables(a)) => a
                .iter()
                .enumerate()
                .map(|(i, t)| (Seg::Index(i), None, Node::Table(t)))
                .collect(),
            Node::Item(Item::Value(v)) => Node::Value(v).children(),
            Node::Value(Value::InlineTable(t)) => t
                .iter()
                .filter_map(|(k, _)| t.get_key_value(k))
                .map(|(k, v)| (Seg::Key(k.get().to_string()), k.span(), Node::Item(v)))
                .collect(),
            Node::Value(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (Seg::Index(i), None, Node::Value(v)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Does this node, its keys or anything below it cover `offset`?
    fn covers(self, offset: usize) -> bool {
        let hit = |s: Option<Range<usize>>| s.is_some_and(|r| r.start <= offset && offset < r.end);
        hit(self.span())
            || self
                .children()
                .into_iter()
                .any(|(_, ks, c)| hit(ks) || c.covers(offset))
    }

    /// Where the node starts: its own span, else its first key.
    fn start(self) -> Option<usize> {
        self.span().map(|r| r.start).or_else(|| {
            self.children()
                .into_iter()
                .find_map(|(_, ks, c)| ks.map(|r| r.start).or_else(|| c.start()))
        })
    }
}

pub struct Locator {
    doc: Option<ImDocument<String>>,
    line_starts: Vec<usize>,
}

impl Locator {
    pub fn new(src: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Locator {
            doc: ImDocument::parse(src.to_string()).ok(),
            line_starts,
        }
    }

    /// 1-based line of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }

    /// The deepest key path whose key or value covers `offset`.
    pub fn path_at(&self, offset: usize) -> Vec<Seg> {
        let mut path = Vec::new();
        let Some(doc) = &self.doc else {
            return path;
        };
        let mut node = Node::Table(doc.as_table());
        while let Some((seg, _, child)) = node.children().into_iter().find(|(_, ks, c)| {
            ks.as_ref()
                .is_some_and(|r| r.start <= offset && offset < r.end)
                || c.covers(offset)
        }) {
            path.push(seg);
            node = child;
        }
        path
    }

    /// Line where the value at `path` starts (or, for a missing key, where
    /// the deepest existing part of the path does).
    pub fn line_of(&self, path: &[Seg]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        for seg in path {
            match node.children().into_iter().find(|(s, _, _)| s == seg) {
                Some((_, _, child)) => node = child,
                None => break,
            }
        }
        node.start().map(|o| self.line(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "[pop]\nid = \"fra1\"\n\n[pools.public]\nservers = [\n  { addr = \"1.2.3.4:80\" },\n  { addr = \"x\" },\n]\n\n[[sites]]\nhostname = \"a.com\"\n";

    #[test]
    fn finds_line_of_nested_path() {
        let loc = Locator::new(SRC);
        let path: Vec<Seg> = vec![
            "pools".into(),
            "public".into(),
            "servers".into(),
            1.into(),
            "addr".into(),
        ];
        assert_eq!(loc.line_of(&path), Some(7));
        assert_eq!(
            loc.line_of(&["sites".into(), 0.into(), "hostname".into()]),
            Some(11)
        );
    }

    #[test]
    fn finds_path_at_offset() {
        let loc = Locator::new(SRC);
        let off = SRC.find("\"x\"").unwrap();
        assert_eq!(render(&loc.path_at(off)), "pools.public.servers[1].addr");
        assert_eq!(loc.line(off), 7);
    }
}
