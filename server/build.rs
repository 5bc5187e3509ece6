//! Embeds the migrations of the repository's `sql/` folder: writes `migrations.rs` into
//! `OUT_DIR`, a list of `(version, description, include_str!(file))` in version order, which
//! `store::MIGRATOR` turns into sqlx migrations. (sqlx's `migrate!` macro does the same, but needs
//! sqlx's proc-macro crates, which build most of sqlx a second time.)
//!
//! A file is named `<VERSION>_<DESCRIPTION>.sql`, as sqlx expects: the description is the rest of
//! the name with `_` as spaces.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<(i64, String, std::path::PathBuf)> = Vec::new();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the migrations in {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a migration file").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".sql") else {
            continue;
        };
        let (version, description) = stem.split_once('_').unwrap_or_else(|| {
            panic!("migration {name:?} is not named <VERSION>_<DESCRIPTION>.sql")
        });
        let version: i64 = version
            .parse()
            .unwrap_or_else(|_| panic!("migration {name:?} does not start with a version number"));
        println!("cargo:rerun-if-changed={}", path.display());
        files.push((version, description.replace('_', " "), path));
    }
    files.sort();
    for pair in files.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "two migrations have version {}",
            pair[0].0
        );
    }
    let mut out = String::from("&[\n");
    for (version, description, path) in &files {
        let path = path.canonicalize().expect("a migration's path");
        writeln!(
            out,
            "    ({version}, {description:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("write to a string");
    }
    out.push_str("]\n");
    let target = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("migrations.rs");
    std::fs::write(&target, out).expect("write migrations.rs");
}
