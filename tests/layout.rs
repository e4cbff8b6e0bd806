//! The layout rule of `src/lib.rs`: a module imports only from modules
//! listed below it, so a request flows down the list, never back up.
//! Read from the source text: every `crate::NAME` in a module's files
//! (doc comments and tests aside) must name a module listed below it.

use std::path::{Path, PathBuf};

/// The top-level modules, in the order `src/lib.rs` declares them.
fn modules(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect()
}

/// The Rust files of module `name`: `src/name.rs` and `src/name/**.rs`.
fn files(src: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let single = src.join(format!("{name}.rs"));
    if single.is_file() {
        out.push(single);
    }
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The top-level modules named as `crate::NAME` in `text`, outside comments
/// and outside its `#[cfg(test)]` module.
fn imports(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `use crate::{a, b}`: each name in the braces.
            if name.is_empty() && rest.starts_with('{') {
                let inner = rest[1..].split('}').next().unwrap_or("");
                out.extend(
                    inner
                        .split(',')
                        .filter_map(|n| n.split("::").next())
                        .map(|n| n.trim().to_owned()),
                );
            } else {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn no_module_imports_from_one_listed_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = modules(&src);
    assert!(order.len() > 10, "modules read from lib.rs: {order:?}");
    let mut upward = Vec::new();
    for (i, module) in order.iter().enumerate() {
        for file in files(&src, module) {
            let text = std::fs::read_to_string(&file).expect("source file");
            for used in imports(&text) {
                match order.iter().position(|m| *m == used) {
                    Some(j) if j < i => upward.push(format!("{} imports crate::{used}", file.display())),
                    _ => {}
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run up the list in lib.rs:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_check_sees_imports() {
    let text =
        "use crate::config::Config;\nuse crate::{app, tokens::X};\n// crate::cli\nfn f() { crate::proxy::g() }\n";
    assert_eq!(imports(text), vec!["config", "app", "tokens", "proxy"]);
}
