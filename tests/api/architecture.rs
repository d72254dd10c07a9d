//! The layering the README's code map promises, checked on the source: transports
//! (`src/http/`) sit on the GraphQL runtime (`src/graphql/`), which merges the slices, which
//! use `realtime/`. Nothing imports upwards.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The lines of `file` (comments removed) that name one of `forbidden`.
fn offending_lines(file: &Path, forbidden: &[&str]) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("readable source");
    text.lines()
        .enumerate()
        .filter_map(|(n, line)| {
            let code = line.split("//").next().unwrap_or_default();
            forbidden
                .iter()
                .any(|path| code.contains(path))
                .then(|| format!("{}:{}: {}", file.display(), n + 1, line.trim()))
        })
        .collect()
}

fn violations(folders: &[&str], forbidden: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    folders
        .iter()
        .flat_map(|folder| sources(&src.join(folder)))
        .flat_map(|file| offending_lines(&file, forbidden))
        .collect()
}

#[test]
fn slices_do_not_import_the_transport_layer_or_the_schema() {
    let found = violations(
        &[
            "projects", "tasks", "events", "presence", "auth", "users", "webhooks",
        ],
        &["crate::http", "crate::graphql"],
    );
    assert!(found.is_empty(), "imports upwards:\n{}", found.join("\n"));
}

#[test]
fn realtime_knows_only_events_and_no_slice_or_transport() {
    let found = violations(
        &["realtime"],
        &[
            "crate::http",
            "crate::graphql",
            "crate::presence",
            "crate::tasks",
            "crate::projects",
            "crate::users",
            "crate::auth",
            "crate::state",
        ],
    );
    assert!(
        found.is_empty(),
        "realtime reaches out:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.rs");
    std::fs::write(
        &file,
        "// crate::http in a comment is fine\nuse crate::http::HttpState;\n",
    )
    .expect("write");
    assert_eq!(offending_lines(&file, &["crate::http"]).len(), 1);
}

#[test]
fn every_source_path_the_readme_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let mut missing = Vec::new();
    for word in readme.split(|c: char| c.is_whitespace() || "`()[],;:".contains(c)) {
        let path = word.trim_end_matches(['.', '*']);
        let named = ["src/", "tests/", "migration/", "bench/", "deploy/", ".ci/"]
            .iter()
            .any(|prefix| path.starts_with(prefix));
        if named && !root.join(path).exists() {
            missing.push(path.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "README names paths that do not exist: {missing:?}"
    );
}

#[test]
fn every_websocket_close_code_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let mut codes = Vec::new();
    for file in sources(&root.join("src/http/ws")) {
        let text = std::fs::read_to_string(&file).expect("source");
        for (i, _) in text.match_indices("Close(") {
            let digits: String = text[i + 6..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if !digits.is_empty() {
                codes.push(digits);
            }
        }
    }
    assert!(codes.len() > 5, "close codes found: {codes:?}");
    let undocumented: Vec<&String> = codes
        .iter()
        .filter(|code| !readme.contains(&format!("| {code} |")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in the README's table: {undocumented:?}"
    );
}

#[test]
fn services_take_what_they_use_not_the_whole_state() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found: Vec<String> = [
        "projects/service.rs",
        "tasks/service.rs",
        "tasks/write/mod.rs",
        "tasks/write/steps.rs",
        "events/service.rs",
    ]
    .iter()
    .flat_map(|file| offending_lines(&src.join(file), &["AppState"]))
    .collect();
    assert!(
        found.is_empty(),
        "services taking AppState:\n{}",
        found.join("\n")
    );
}
