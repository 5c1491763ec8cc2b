//! `cargo xtask layers`: the agent crate's top-level modules point only
//! down.
//!
//! Reads `netgov-agent/src/lib.rs` and every module it declares, leaving
//! out `#[cfg(test)]` items (tests may reach anywhere), and collects each
//! `crate::<module>` path — in `use` trees, in code, in macro invocations
//! and attributes, in attributes' strings (`with = "crate::…"`) — and
//! each `super::` that climbs out of its top-level module. It fails
//! when
//! - a top-level module is missing from [`LAYERS`];
//! - a module uses one in a higher layer;
//! - the modules of one layer use each other in a cycle;
//! - a production module is stitched in with `#[path]`.
//!
//! The same table is drawn in ARCHITECTURE.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

use crate::XtaskError;

/// The crate's layers, bottom first. A module may use modules of lower
/// layers, and modules of its own layer as long as no cycle forms.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("vocabulary", &["model", "input", "churn_map"]),
    ("engine", &["engine"]),
    (
        "stages",
        &[
            "sources", "config", "capture", "names", "judge", "ledger", "flowlog", "export",
            "hubble",
        ],
    ),
    ("the agent", &["agent"]),
    ("commands", &["commands"]),
    ("command line", &["cli"]),
];

/// One use of another top-level module: where it is written.
#[derive(Debug, Clone)]
struct Use {
    file: PathBuf,
    line: usize,
}

/// Every top-level module and the modules it uses.
#[derive(Debug, Default)]
struct Graph {
    /// (from, to) → the first place it is written.
    edges: BTreeMap<(String, String), Use>,
    /// Production modules declared with `#[path]`.
    stitched: Vec<Use>,
    /// Top-level modules declared in lib.rs.
    modules: BTreeSet<String>,
}

/// `cargo xtask layers`.
///
/// # Errors
/// [`XtaskError::Output`] listing every violation.
pub fn layers() -> Result<(), XtaskError> {
    let src = crate::workspace_root().join("netgov-agent/src");
    let graph = read_crate(&src)?;
    let mut problems = Vec::new();
    let layer_of = |module: &str| {
        LAYERS
            .iter()
            .position(|(_, modules)| modules.contains(&module))
    };
    for module in &graph.modules {
        if layer_of(module).is_none() {
            problems.push(format!(
                "module `{module}` is in no layer of xtask/src/layers.rs (LAYERS)"
            ));
        }
    }
    for (layer, modules) in LAYERS {
        for module in *modules {
            if !graph.modules.contains(*module) {
                problems.push(format!(
                    "LAYERS names `{module}` ({layer}), which lib.rs does not declare"
                ));
            }
        }
    }
    for ((from, to), at) in &graph.edges {
        if let (Some(low), Some(high)) = (layer_of(to), layer_of(from))
            && low > high
        {
            problems.push(format!(
                "`{from}` ({}) uses `{to}` ({}), a higher layer: {}:{}",
                LAYERS[high].0,
                LAYERS[low].0,
                shown(&at.file),
                at.line
            ));
        }
    }
    for cycle in cycles(&graph) {
        let mut text = format!("cycle: {}", cycle.join(" → "));
        for pair in cycle.windows(2) {
            let at = &graph.edges[&(pair[0].clone(), pair[1].clone())];
            text.push_str(&format!(
                "\n    {} → {}: {}:{}",
                pair[0],
                pair[1],
                shown(&at.file),
                at.line
            ));
        }
        problems.push(text);
    }
    for at in &graph.stitched {
        problems.push(format!(
            "production module stitched in with #[path]: {}:{}",
            shown(&at.file),
            at.line
        ));
    }
    if std::env::var_os("NETGOV_LAYERS_VERBOSE").is_some() {
        for ((from, to), at) in &graph.edges {
            println!("{from} → {to}  ({}:{})", shown(&at.file), at.line);
        }
    }
    if problems.is_empty() {
        println!(
            "layers: {} top-level modules, {} uses between them, all pointing down, no cycle",
            graph.modules.len(),
            graph.edges.len()
        );
        return Ok(());
    }
    Err(XtaskError::Output {
        tool: "layers",
        detail: format!("\n{}", problems.join("\n")),
    })
}

fn shown(file: &Path) -> String {
    let root = crate::workspace_root();
    file.strip_prefix(&root)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// Reads lib.rs and every production module below it.
fn read_crate(src: &Path) -> Result<Graph, XtaskError> {
    let mut graph = Graph::default();
    let lib = src.join("lib.rs");
    let file = parse(&lib)?;
    let mut pending = Vec::new();
    for item in &file.items {
        if let syn::Item::Mod(module) = item
            && !is_test(&module.attrs)
        {
            graph.modules.insert(module.ident.to_string());
        }
    }
    // The crate root's own items use modules too (lib.rs has few); they
    // belong to no module and are not counted.
    for item in &file.items {
        if let syn::Item::Mod(module) = item
            && !is_test(&module.attrs)
        {
            let name = module.ident.to_string();
            pending.push(Module {
                path: vec![name],
                file: lib.clone(),
                dir: src.to_path_buf(),
                item: module.clone(),
            });
        }
    }
    while let Some(module) = pending.pop() {
        let top = module.path[0].clone();
        if has_path_attribute(&module.item.attrs) {
            graph.stitched.push(Use {
                file: module.file.clone(),
                line: module.item.ident.span().start().line,
            });
        }
        let (items, file, dir) = match &module.item.content {
            Some((_, items)) => (
                items.clone(),
                module.file.clone(),
                module.dir.join(module.item.ident.to_string()),
            ),
            None if has_path_attribute(&module.item.attrs) => {
                let file = module
                    .file
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(path_attribute(&module.item.attrs));
                (parse(&file)?.items, file.clone(), module.dir.clone())
            }
            None => {
                let name = module.item.ident.to_string();
                let flat = module.dir.join(format!("{name}.rs"));
                let nested = module.dir.join(&name).join("mod.rs");
                let file = if flat.exists() { flat } else { nested };
                (parse(&file)?.items, file, module.dir.join(&name))
            }
        };
        let mut visitor = Uses {
            depth: module.path.len(),
            found: Vec::new(),
            modules: &graph.modules,
        };
        for item in &items {
            match item {
                syn::Item::Mod(child) if is_test(&child.attrs) => {}
                syn::Item::Mod(child) => {
                    let mut path = module.path.clone();
                    path.push(child.ident.to_string());
                    pending.push(Module {
                        path,
                        file: file.clone(),
                        dir: dir.clone(),
                        item: child.clone(),
                    });
                }
                item if is_test(attributes(item)) => {}
                item => visitor.visit_item(item),
            }
        }
        for (to, line) in visitor.found {
            if to != top {
                graph.edges.entry((top.clone(), to)).or_insert(Use {
                    file: file.clone(),
                    line,
                });
            }
        }
    }
    Ok(graph)
}

/// A module still to read.
struct Module {
    /// Its path from the crate root.
    path: Vec<String>,
    /// The file that declares it.
    file: PathBuf,
    /// The directory its file, or its children's, are in.
    dir: PathBuf,
    item: syn::ItemMod,
}

fn parse(file: &Path) -> Result<syn::File, XtaskError> {
    let text = std::fs::read_to_string(file).map_err(|source| XtaskError::Io {
        what: format!("reading {}", file.display()),
        source,
    })?;
    syn::parse_file(&text).map_err(|error| XtaskError::Output {
        tool: "layers",
        detail: format!(
            "{}:{}: cannot parse: {error}",
            file.display(),
            error.span().start().line
        ),
    })
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

fn has_path_attribute(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| attr.path().is_ident("path"))
}

/// The file a `#[path = "..."]` names.
fn path_attribute(attrs: &[syn::Attribute]) -> String {
    attrs
        .iter()
        .find_map(|attr| match &attr.meta {
            syn::Meta::NameValue(pair) if pair.path.is_ident("path") => match &pair.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(text),
                    ..
                }) => Some(text.value()),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_default()
}

fn attributes(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(item) => &item.attrs,
        syn::Item::Enum(item) => &item.attrs,
        syn::Item::ExternCrate(item) => &item.attrs,
        syn::Item::Fn(item) => &item.attrs,
        syn::Item::ForeignMod(item) => &item.attrs,
        syn::Item::Impl(item) => &item.attrs,
        syn::Item::Macro(item) => &item.attrs,
        syn::Item::Mod(item) => &item.attrs,
        syn::Item::Static(item) => &item.attrs,
        syn::Item::Struct(item) => &item.attrs,
        syn::Item::Trait(item) => &item.attrs,
        syn::Item::TraitAlias(item) => &item.attrs,
        syn::Item::Type(item) => &item.attrs,
        syn::Item::Union(item) => &item.attrs,
        syn::Item::Use(item) => &item.attrs,
        _ => &[],
    }
}

/// Collects the top-level modules a module's items name.
struct Uses<'a> {
    /// How deep the module is (1 for a top-level module).
    depth: usize,
    /// (module, line).
    found: Vec<(String, usize)>,
    modules: &'a BTreeSet<String>,
}

impl Uses<'_> {
    /// `segments` is a path as written; records the top-level module it
    /// reaches, if it leaves the crate root through `crate::` or enough
    /// `super::`s.
    fn record(&mut self, segments: &[String], line: usize) {
        let target = match segments.first().map(String::as_str) {
            Some("crate") => segments.get(1),
            Some("super") => {
                let climbs = segments.iter().take_while(|s| *s == "super").count();
                if climbs >= self.depth {
                    segments.get(climbs)
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(target) = target
            && self.modules.contains(target)
        {
            self.found.push((target.clone(), line));
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                prefix.push(name.ident.to_string());
                self.record(prefix, name.ident.span().start().line);
                prefix.pop();
            }
            syn::UseTree::Rename(rename) => {
                prefix.push(rename.ident.to_string());
                self.record(prefix, rename.ident.span().start().line);
                prefix.pop();
            }
            syn::UseTree::Glob(glob) => {
                prefix.push("*".into());
                self.record(prefix, glob.star_token.spans[0].start().line);
                prefix.pop();
            }
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }

    /// Paths inside a macro's tokens (`crate :: module`), which syn leaves
    /// unparsed.
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let tokens: Vec<_> = tokens.into_iter().collect();
        for (index, token) in tokens.iter().enumerate() {
            match token {
                proc_macro2::TokenTree::Group(group) => self.tokens(group.stream()),
                proc_macro2::TokenTree::Literal(literal) => {
                    let text = literal.to_string();
                    let line = literal.span().start().line;
                    for (at, _) in text.match_indices("crate::") {
                        let module: String = text[at + "crate::".len()..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        self.record(&["crate".into(), module], line);
                    }
                }
                proc_macro2::TokenTree::Ident(ident) if ident == "crate" => {
                    let preceded_by_dollar = index > 0
                        && matches!(&tokens[index - 1], proc_macro2::TokenTree::Punct(p) if p.as_char() == '$');
                    if let (
                        false,
                        Some(proc_macro2::TokenTree::Punct(colon)),
                        Some(proc_macro2::TokenTree::Ident(next)),
                    ) = (
                        preceded_by_dollar,
                        tokens.get(index + 2),
                        tokens.get(index + 3),
                    ) && colon.as_char() == ':'
                    {
                        self.record(
                            &["crate".into(), next.to_string()],
                            ident.span().start().line,
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path
            .segments
            .iter()
            .map(|segment| segment.ident.to_string())
            .collect();
        if let Some(first) = path.segments.first() {
            self.record(&segments, first.ident.span().start().line);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // Inline modules are read as modules of their own (read_crate).
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        // Attributes are not parsed as code (`#[arg(default_value_t =
        // crate::…)]`, `#[serde(with = "crate::…")]`): their tokens are
        // read as a macro's are.
        self.tokens(quote::ToTokens::to_token_stream(&attr.meta));
    }
}

/// Cycles among the top-level modules: for each module not already in a
/// reported cycle, the shortest closed walk through it, first module
/// repeated at the end.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in graph.edges.keys() {
        next.entry(from).or_default().push(to);
    }
    let mut found = Vec::new();
    let mut in_cycle: BTreeSet<String> = BTreeSet::new();
    for start in &graph.modules {
        if in_cycle.contains(start) {
            continue;
        }
        if let Some(path) = shortest_path_back(&next, start) {
            in_cycle.extend(path.iter().cloned());
            found.push(path);
        }
    }
    found
}

/// The shortest walk from `start` back to itself, breadth first.
fn shortest_path_back(next: &BTreeMap<&str, Vec<&str>>, start: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for &to in next.get(at).into_iter().flatten() {
            if to == start {
                let mut path = vec![start.to_string()];
                let mut back = at;
                let mut reversed = vec![at.to_string()];
                while back != start {
                    back = came_from[back];
                    reversed.push(back.to_string());
                }
                reversed.pop();
                reversed.reverse();
                path.extend(reversed);
                path.push(start.to_string());
                return Some(path);
            }
            if !came_from.contains_key(to) && to != start {
                came_from.insert(to, at);
                queue.push_back(to);
            }
        }
    }
    None
}
