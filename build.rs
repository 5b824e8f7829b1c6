//! Sets `FLOWGATE_VERSION`, what `flowgate --version` and
//! `flowgatectl --version` print: the package version and the git revision
//! it was built from, `0.1.0 (git 1a2b3c4d5e6f)`.
//!
//! The revision comes from `$FLOWGATE_GIT_REVISION` when it is set (for a
//! packager building from a tarball), else from git when the source tree is
//! a git work tree of its own. Without either (a packaged source tree with
//! no .git, or no git installed) the version is the package version alone:
//! the build never fails for want of a revision.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FLOWGATE_GIT_REVISION");
    let version = env("CARGO_PKG_VERSION").unwrap_or_else(|| "unknown".into());
    let revision = env("FLOWGATE_GIT_REVISION")
        .filter(|r| !r.trim().is_empty())
        .map(|r| r.trim().to_owned())
        .or_else(|| env("CARGO_MANIFEST_DIR").and_then(|dir| git_revision(Path::new(&dir))));
    let full = match revision {
        Some(revision) => format!("{version} (git {revision})"),
        None => version,
    };
    println!("cargo:rustc-env=FLOWGATE_VERSION={full}");
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The abbreviated commit of `dir`'s HEAD, if `dir` is the top of a git work
/// tree (not a directory inside some other repository), and has the build
/// rerun when HEAD moves.
fn git_revision(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    };
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let revision = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD names the branch; the branch's ref (loose or packed) names the
    // commit: a change of either is a new revision.
    let absolute = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            dir.join(p)
        }
    };
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]).map(absolute) {
        println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]).map(absolute) {
        println!(
            "cargo:rerun-if-changed={}",
            common.join("packed-refs").display()
        );
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", common.join(branch).display());
        }
    }
    Some(revision)
}
