//! Guards for input files nobody vetted (manifests for `check` and
//! `--cluster-state`, the agent's configuration): a directory walk that
//! survives symlink loops, and limits that fail fast, in linear time,
//! before a parser spends quadratic time on a pathological file.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Files larger than this are refused (64 MiB: far beyond any manifest).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Deeper nesting than this is refused. Kubernetes objects nest a dozen
/// levels; the YAML parser's own limit (128) is reached only after
/// quadratic work.
pub const MAX_NESTING: usize = 100;

/// Why a path was not read.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// Reading the path or its metadata failed.
    #[error("{}: {source}", .path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A directory contains itself (a symlink to an ancestor).
    #[error("{}: a symlink loop (this directory contains itself); not followed", .path.display())]
    Loop {
        /// Where the walk met the directory again.
        path: PathBuf,
    },
    /// A file is larger than [`MAX_FILE_BYTES`].
    #[error("{}: {size} bytes, more than the {MAX_FILE_BYTES} bytes a manifest may have", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

/// Every `.yaml`, `.yml` and `.json` file under `paths` (files given
/// directly are taken whatever their name), directories recursively in
/// name order; a directory met twice is read once, and one that contains
/// itself is reported.
pub fn manifest_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<WalkError>) {
    let mut walk = Walk::default();
    for path in paths {
        walk.visit(path, true, &mut Vec::new());
    }
    (walk.files, walk.errors)
}

#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    errors: Vec<WalkError>,
    seen_directories: HashSet<(u64, u64)>,
}

impl Walk {
    fn visit(&mut self, path: &Path, given: bool, ancestors: &mut Vec<(u64, u64)>) {
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(source) => {
                self.errors.push(WalkError::Read {
                    path: path.to_owned(),
                    source,
                });
                return;
            }
        };
        if !metadata.is_dir() {
            let is_manifest = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            if !(given || is_manifest) {
                return;
            }
            if metadata.len() > MAX_FILE_BYTES {
                self.errors.push(WalkError::TooLarge {
                    path: path.to_owned(),
                    size: metadata.len(),
                });
            } else {
                self.files.push(path.to_owned());
            }
            return;
        }
        let identity = (metadata.dev(), metadata.ino());
        if ancestors.contains(&identity) {
            self.errors.push(WalkError::Loop {
                path: path.to_owned(),
            });
            return;
        }
        if !self.seen_directories.insert(identity) {
            return;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(source) => {
                self.errors.push(WalkError::Read {
                    path: path.to_owned(),
                    source,
                });
                return;
            }
        };
        let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        children.sort();
        ancestors.push(identity);
        for child in children {
            self.visit(&child, false, ancestors);
        }
        ancestors.pop();
    }
}

/// The first line (1-based) where `text`'s YAML or JSON nesting — block
/// indentation levels, `- ` sequence entries and flow brackets — exceeds
/// [`MAX_NESTING`]. A linear scan that may count a bracket inside a
/// multi-line quoted string: it errs towards refusing only pathological
/// files.
pub fn too_deep(text: &str) -> Option<usize> {
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let content = line.trim_start_matches(' ');
        let indent = line.len() - content.len();
        let mut block = 0;
        if flow == 0 && !content.is_empty() && !content.starts_with('#') {
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            let mut rest = content;
            while let Some(inner) = rest.strip_prefix("- ") {
                block += 1;
                rest = inner.trim_start_matches(' ');
            }
        }
        let mut quote = None;
        let mut previous = ' ';
        for c in content.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '"' | '\'' => quote = Some(c),
                    '#' if previous == ' ' => break,
                    '[' | '{' => {
                        flow += 1;
                        if flow + indents.len() + block > MAX_NESTING {
                            return Some(number + 1);
                        }
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            previous = c;
        }
        if flow + indents.len() + block > MAX_NESTING {
            return Some(number + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_measured_in_one_pass() {
        let rows = [
            (
                "a Kubernetes object",
                "apiVersion: v1\nkind: Pod\nmetadata:\n  labels: {app: x}\nspec:\n  containers:\n    - name: c\n      ports: [{containerPort: 80}]\n",
                None,
            ),
            (
                "flow brackets",
                &format!("a: {}{}\n", "[".repeat(101), "]".repeat(101)),
                Some(1),
            ),
            (
                "brackets in quotes do not count",
                &format!("a: \"{}\"\n", "[".repeat(200)),
                None,
            ),
            (
                "brackets in comments do not count",
                &format!("a: 1 # {}\n", "[".repeat(200)),
                None,
            ),
            (
                "block indentation",
                &(0..102)
                    .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                    .collect::<String>(),
                Some(101),
            ),
            (
                "sequence entries on one line",
                &format!("{}x\n", "- ".repeat(101)),
                Some(1),
            ),
            (
                "JSON",
                &format!("{}1{}", "[".repeat(99), "]".repeat(99)),
                None,
            ),
        ];
        for (name, text, expected) in rows {
            assert_eq!(too_deep(text), expected, "{name}");
        }
    }

    #[test]
    fn a_symlink_loop_is_reported_not_followed() {
        let dir = std::env::temp_dir().join(format!("netgov-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).expect("dir");
        std::fs::write(dir.join("sub/a.yaml"), "kind: Namespace\n").expect("write");
        std::fs::write(dir.join("notes.txt"), "not a manifest").expect("write");
        std::os::unix::fs::symlink(&dir, dir.join("sub/loop")).expect("symlink");
        std::os::unix::fs::symlink(dir.join("sub"), dir.join("again")).expect("symlink");
        let (files, errors) = manifest_files(std::slice::from_ref(&dir));
        assert_eq!(files, [dir.join("again/a.yaml")], "the sub directory, once");
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [format!(
                "{}: a symlink loop (this directory contains itself); not followed",
                dir.join("again/loop").display()
            )]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
