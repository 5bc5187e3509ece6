//! Finding the Postgres server binaries installed on this machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::PgError;

/// The programs bigpeer runs to manage its own cluster.
const REQUIRED: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// A folder holding `initdb`, `pg_ctl`, `postgres` (and usually `createdb`) of one Postgres version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub dir: PathBuf,
    pub major: u32,
    pub version: String,
}

impl PgBinaries {
    pub fn initdb(&self) -> PathBuf {
        self.dir.join("initdb")
    }
    pub fn pg_ctl(&self) -> PathBuf {
        self.dir.join("pg_ctl")
    }
    pub fn createdb(&self) -> PathBuf {
        self.dir.join("createdb")
    }
}

/// Finds the binaries: in `explicit` when given, else among the usual install folders, preferring
/// `want_major` (the version of an existing cluster) or else the newest version.
pub fn find(explicit: Option<&Path>, want_major: Option<u32>) -> Result<PgBinaries, PgError> {
    if let Some(dir) = explicit {
        let found = probe(dir).ok_or_else(|| PgError::BinariesNotIn {
            dir: dir.to_path_buf(),
        })?;
        if let Some(want) = want_major {
            if found.major != want {
                return Err(PgError::VersionMismatch {
                    cluster: want,
                    found: vec![found],
                });
            }
        }
        return Ok(found);
    }
    choose(candidate_dirs(), want_major)
}

/// Picks among candidate folders (pure apart from running `pg_ctl --version`).
pub fn choose(candidates: Vec<PathBuf>, want_major: Option<u32>) -> Result<PgBinaries, PgError> {
    let mut found: Vec<PgBinaries> = Vec::new();
    for dir in candidates {
        let dir = dir.canonicalize().unwrap_or(dir);
        if found.iter().any(|f| f.dir == dir) {
            continue;
        }
        if let Some(bins) = probe(&dir) {
            found.push(bins);
        }
    }
    if found.is_empty() {
        return Err(PgError::BinariesNotFound);
    }
    let pick = match want_major {
        Some(want) => found.iter().find(|f| f.major == want),
        // Stable: the first folder wins among equal versions (pg_config's comes first).
        None => found.iter().rev().max_by_key(|f| f.major),
    };
    match pick {
        Some(bins) => Ok(bins.clone()),
        None => Err(PgError::VersionMismatch {
            cluster: want_major.unwrap_or(0),
            found,
        }),
    }
}

/// Folders that may hold Postgres binaries, most specific first.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !dir.is_empty() {
                dirs.push(PathBuf::from(dir));
            }
        }
    }
    // Versioned layouts: Debian/Ubuntu, PGDG RPMs, Homebrew kegs, Postgres.app.
    for pattern in [
        ("/usr/lib/postgresql", "bin"),
        ("/usr", "bin"), // /usr/pgsql-NN/bin
        ("/opt/homebrew/opt", "bin"),
        ("/usr/local/opt", "bin"),
        ("/Applications/Postgres.app/Contents/Versions", "bin"),
    ] {
        let (parent, leaf) = pattern;
        if let Ok(entries) = std::fs::read_dir(parent) {
            let mut sub: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    match name {
                        Some(n) if parent == "/usr" => n.starts_with("pgsql"),
                        Some(n) if parent.ends_with("/opt") => n.starts_with("postgresql"),
                        Some(_) => true,
                        None => false,
                    }
                })
                .map(|p| p.join(leaf))
                .collect();
            sub.sort();
            dirs.extend(sub);
        }
    }
    for fixed in [
        "/usr/local/pgsql/bin",
        "/opt/homebrew/bin",
        "/usr/local/bin",
        "/usr/bin",
    ] {
        dirs.push(PathBuf::from(fixed));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

/// The binaries in `dir`, when all are there and `pg_ctl --version` answers.
fn probe(dir: &Path) -> Option<PgBinaries> {
    if !REQUIRED.iter().all(|b| dir.join(b).is_file()) {
        return None;
    }
    let out = Command::new(dir.join("pg_ctl"))
        .arg("--version")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text)?;
    let major = major_of(&version)?;
    Some(PgBinaries {
        dir: dir.to_path_buf(),
        major,
        version,
    })
}

/// `pg_ctl (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)` → `15.19`.
fn parse_version(text: &str) -> Option<String> {
    let rest = text.split("(PostgreSQL)").nth(1)?;
    rest.split_whitespace().next().map(str::to_string)
}

/// `15.19` → 15, `9.6.24` → 9 (close enough for choosing), `16beta1` → 16.
pub fn major_of(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_install(root: &Path, name: &str, version: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("create fake bin dir");
        for b in REQUIRED {
            let script = format!("#!/bin/sh\necho \"{b} (PostgreSQL) {version}\"\n");
            let path = dir.join(b);
            std::fs::write(&path, script).expect("write fake binary");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod fake binary");
        }
        dir
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version("pg_ctl (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)\n").as_deref(),
            Some("15.19")
        );
        assert_eq!(
            parse_version("pg_ctl (PostgreSQL) 17beta2").as_deref(),
            Some("17beta2")
        );
        assert_eq!(parse_version("something else"), None);
        assert_eq!(major_of("17beta2"), Some(17));
        assert_eq!(major_of("9.6.24"), Some(9));
        assert_eq!(major_of("x"), None);
    }

    #[test]
    fn prefers_the_newest_version_unless_a_cluster_wants_another() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let old = fake_install(tmp.path(), "14", "14.11");
        let new = fake_install(tmp.path(), "16", "16.2");
        let incomplete = tmp.path().join("broken");
        std::fs::create_dir_all(&incomplete).expect("mkdir");
        std::fs::write(incomplete.join("initdb"), "").expect("write");

        let all = vec![incomplete.clone(), old.clone(), new.clone()];
        let newest = choose(all.clone(), None).expect("found");
        assert_eq!((newest.major, newest.version.as_str()), (16, "16.2"));

        let for_cluster = choose(all.clone(), Some(14)).expect("found");
        assert_eq!(for_cluster.major, 14);

        let err = choose(all, Some(12)).expect_err("no 12 installed");
        assert_eq!(err.code(), "pg/version-mismatch");
        assert!(err.to_string().contains("PostgreSQL 12"), "{err}");

        let err = choose(vec![incomplete.clone()], None).expect_err("nothing usable");
        assert_eq!(err.code(), "pg/binaries-not-found");
        let hint = err.hint().unwrap_or_default();
        assert!(hint.contains("apt-get install postgresql"), "{hint}");
        assert!(hint.contains("DATABASE_URL"), "{hint}");

        let err = find(Some(&incomplete), None).expect_err("explicit folder lacks binaries");
        assert_eq!(err.code(), "pg/binaries-not-found");
        assert!(err.to_string().contains("broken"), "{err}");
    }
}
