//! What a Rust user and an operator expect of the two commands: a version
//! with the git revision, shell completions and man pages generated from
//! the clap definitions (so none of them can drift from the command line).

#[path = "../src/revision.rs"]
mod revision;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn binary(name: &str) -> PathBuf {
    match name {
        "flowgate" => PathBuf::from(env!("CARGO_BIN_EXE_flowgate")),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_flowgatectl")),
    }
}

fn run(name: &str, args: &[&str]) -> Output {
    let out = Command::new(binary(name))
        .args(args)
        .env_remove("FLOWGATE_SOCKET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("fg-conv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_version_names_the_git_revision_it_was_built_from() {
    // build.rs's answer for this build (it sets the same variable for the
    // binaries and for this test).
    let built = env!("FLOWGATE_VERSION");
    for name in ["flowgate", "flowgatectl"] {
        let out = run(name, &["--version"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{name} {built}\n")
        );
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let given = option_env!("FLOWGATE_GIT_REVISION").filter(|r| !r.trim().is_empty());
    match (given, revision::git_revision(manifest)) {
        (Some(given), _) => assert_eq!(
            built,
            format!("{} (git {})", env!("CARGO_PKG_VERSION"), given.trim())
        ),
        // A work tree: the revision is a commit of it (HEAD, or HEAD when
        // built, if a commit came since).
        (None, Some(_)) => {
            let revision = built
                .strip_prefix(&format!("{} (git ", env!("CARGO_PKG_VERSION")))
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("no revision in {built:?}"));
            assert!(
                revision.len() == 12 && revision.chars().all(|c| c.is_ascii_hexdigit()),
                "{built}"
            );
            let commit = Command::new("git")
                .arg("-C")
                .arg(manifest)
                .args(["cat-file", "-t", revision])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&commit.stdout).trim(), "commit");
        }
        (None, None) => assert_eq!(built, env!("CARGO_PKG_VERSION")),
    }
}

#[test]
fn without_a_work_tree_of_its_own_there_is_no_revision() {
    let scratch = Scratch::new("norev");
    // No .git at all (a packaged source tree).
    assert_eq!(revision::git_revision(&scratch.0), None);
    // A directory inside another repository is not that repository's.
    let inside = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    assert_eq!(revision::git_revision(&inside), None);
    if Command::new("git").arg("--version").output().is_ok() {
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(&scratch.0)
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
                .output()
                .unwrap()
        };
        git(&["init", "-q"]);
        // A repository with no commit yet has no revision either.
        assert_eq!(revision::git_revision(&scratch.0), None);
        git(&["commit", "-q", "--allow-empty", "-m", "x"]);
        let head = String::from_utf8(git(&["rev-parse", "--short=12", "HEAD"]).stdout).unwrap();
        assert_eq!(
            revision::git_revision(&scratch.0),
            Some(head.trim().to_owned())
        );
    }
}

/// The visible leaves and groups of a command tree, as man page names:
/// `flowgatectl`, `flowgatectl-backend`, `flowgatectl-backend-drain`.
fn page_names(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
    let name = format!("{prefix}{}", cmd.get_name());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page_names(sub, &format!("{name}-"), out);
    }
    out.insert(name);
}

#[test]
fn man_pages_cover_every_command_and_render_cleanly() {
    let scratch = Scratch::new("man");
    for (name, section, command) in [
        ("flowgatectl", "1", flowgatectl::command("test")),
        ("flowgate", "8", flowgate_dataplane::cli::command("test")),
    ] {
        let dir = scratch.0.join(format!("man{section}"));
        run(name, &["man", dir.to_str().unwrap()]);
        let written: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut expected = BTreeSet::new();
        page_names(&command, "", &mut expected);
        let expected: BTreeSet<String> = expected
            .into_iter()
            .map(|n| format!("{n}.{section}"))
            .collect();
        assert_eq!(written, expected, "{name}");
        for page in &written {
            let path = dir.join(page);
            // groff with every warning: the roff must be clean.
            let out = Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(&path)
                .output()
                .expect("groff (groff-base) is installed");
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "{page}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let top = std::fs::read_to_string(dir.join(format!("{name}.{section}"))).unwrap();
        assert!(
            top.contains("Exit status"),
            "{name}: the page says the exit codes"
        );
    }
    let top = std::fs::read_to_string(scratch.0.join("man1/flowgatectl.1")).unwrap();
    assert!(
        top.contains("ipvsadm"),
        "the shorthand is in flowgatectl(1)"
    );
}

#[test]
fn completions_are_valid_scripts_for_each_shell() {
    let scratch = Scratch::new("completions");
    for name in ["flowgate", "flowgatectl"] {
        for (shell, marker) in [
            ("bash", format!("complete -F _{name} ")),
            ("zsh", format!("#compdef {name}")),
            ("fish", format!("complete -c {name} ")),
        ] {
            let out = run(name, &["completions", shell]);
            let script = String::from_utf8(out.stdout).unwrap();
            assert!(script.contains(&marker), "{name} {shell}: no {marker:?}");
            for sub in ["status", "backend", "drain"]
                .iter()
                .filter(|_| name == "flowgatectl")
            {
                assert!(script.contains(sub), "{name} {shell}: no {sub}");
            }
            if shell == "bash" {
                let file = scratch.0.join(format!("{name}.bash"));
                std::fs::write(&file, &script).unwrap();
                let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
                assert!(
                    check.status.success(),
                    "{name}: bash -n: {}",
                    String::from_utf8_lossy(&check.stderr)
                );
            }
        }
    }
}
