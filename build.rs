//! Sets `FLOWGATE_VERSION`, what `flowgate --version` and
//! `flowgatectl --version` print: the package version and the git revision
//! it was built from, `0.1.0 (git 1a2b3c4d5e6f)`.
//!
//! The revision comes from `$FLOWGATE_GIT_REVISION` when it is set (for a
//! packager building from a tarball), else from git when the source tree is
//! a git work tree of its own. Without either (a packaged source tree with
//! no .git, or no git installed) the version is the package version alone:
//! the build never fails for want of a revision.

use std::path::Path;

#[path = "src/revision.rs"]
mod revision;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/revision.rs");
    println!("cargo:rerun-if-env-changed=FLOWGATE_GIT_REVISION");
    let version = env("CARGO_PKG_VERSION").unwrap_or_else(|| "unknown".into());
    let revision = env("FLOWGATE_GIT_REVISION")
        .filter(|r| !r.trim().is_empty())
        .map(|r| r.trim().to_owned())
        .or_else(|| {
            env("CARGO_MANIFEST_DIR").and_then(|dir| revision::git_revision(Path::new(&dir)))
        });
    let full = match revision {
        Some(revision) => format!("{version} (git {revision})"),
        None => version,
    };
    println!("cargo:rustc-env=FLOWGATE_VERSION={full}");
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
