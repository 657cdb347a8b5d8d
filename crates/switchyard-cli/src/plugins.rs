//! `switchyard plugins`: what is in the plugin directory.

use std::path::Path;

use switchyard::{ABI_VERSION, registry::resolve_plugin_dir};

/// Prints a table of loaded plugins and a list of files that failed.
pub fn run(plugin_dir: Option<&Path>) -> anyhow::Result<i32> {
    let dir = resolve_plugin_dir(plugin_dir, None);
    // Every file is loaded in a child process: a library that crashes when loaded is listed
    // as a problem instead of ending the listing.
    let registry = crate::inspect::scan(&dir)?;
    println!(
        "plugin directory: {}  (host ABI {ABI_VERSION})",
        dir.display()
    );
    let rows: Vec<[String; 5]> = registry
        .plugins()
        .iter()
        .map(|p| {
            [
                p.metadata.backends.join(", "),
                p.metadata.version.clone(),
                "ok".to_owned(),
                p.metadata.capabilities.names().join(","),
                p.path.display().to_string(),
            ]
        })
        .collect();
    let header = ["BACKEND", "VERSION", "ABI", "CAPABILITIES", "PATH"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 4 {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    if rows.is_empty() {
        println!("(no plugins loaded)");
    }
    if !registry.problems().is_empty() {
        println!("\nfiles that failed to load:");
        for p in registry.problems() {
            println!("  {}: {}", p.path.display(), p.reason);
        }
    }
    Ok(0)
}
