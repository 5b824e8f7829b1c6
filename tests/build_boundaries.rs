//! Which binaries the workspace ships and what each is built from, read
//! from `cargo metadata` and `cargo tree` (offline, against Cargo.lock):
//!
//! - The root package `flowgate` has the two binaries, `flowgate` and
//!   `flowgatectl`, so that `cargo build --release` and
//!   `cargo install --path .` give them; no other package has a binary
//!   (two packages with a binary of one name would overwrite each other's
//!   in target/).
//! - `flowgatectl` builds without the data path: the data plane only
//!   without its `daemon` feature (the rules, the control API's edits and
//!   the fleet's etcd store, for `--etcd`: feature `etcd`), so none of the
//!   daemon's kernel-facing crates (AF_XDP, libxdp and libbpf with the
//!   bindgen and clang their build needs, aya, netlink) nor its metrics
//!   server — as its crate, and as the root package without its `daemon`
//!   feature. (tokio and hyper come with the etcd client's gRPC.)
//! - The `flowgate` binary is built without the data plane's `testkit`
//!   feature (frame builder, namespaces, in-memory control data plane),
//!   which only tests, benches and fixtures turn on.
//!
//! Each check is paired with the same query over a build that does have
//! what is looked for, so a query that saw nothing could not pass.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates a flowgatectl build must not contain: the live gateway's.
const DATA_PATH_CRATES: [&str; 10] = [
    "aya",
    "aya-obj",
    "xsk-rs",
    "libxdp-sys",
    "libbpf-sys",
    "bindgen",
    "clang-sys",
    "netlink-sys",
    "netlink-packet-route",
    "signal-hook",
];

/// The lines of `cargo tree ARGS --prefix none`, deduplicated, with the
/// `(*)` marks of repeated subtrees removed.
fn cargo_tree(args: &[&str]) -> BTreeSet<String> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--manifest-path", manifest, "--offline", "--locked"])
        .args(["--prefix", "none"])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
        .map(|line| line.trim_end_matches(" (*)").to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

/// The crate names of a `cargo tree` listing of packages.
fn crate_names(lines: &BTreeSet<String>) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn present<'a>(names: &BTreeSet<String>, wanted: &[&'a str]) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|name| names.contains(*name))
        .collect()
}

#[test]
fn flowgatectl_builds_without_the_data_path() {
    let names = crate_names(&cargo_tree(&["-p", "flowgatectl", "-e", "normal,build"]));
    let wanted = [
        "flowgatectl",
        "flowgate-api",
        "clap",
        "serde_json",
        "flowgate-dataplane",
        "etcd-client",
    ];
    assert_eq!(present(&names, &wanted), wanted, "{names:?}");
    assert_eq!(present(&names, &DATA_PATH_CRATES), [] as [&str; 0]);
    // The data plane comes without its live gateway (whose build runs
    // clang on the XDP program), with its etcd client.
    let features = data_plane_features(&["-p", "flowgatectl"], "normal,build");
    assert!(features.contains("etcd"), "{features:?}");
    assert!(!features.contains("daemon"), "{features:?}");
    assert!(!features.contains("testkit"), "{features:?}");
}

#[test]
fn the_root_package_without_its_daemon_builds_flowgatectl_alone() {
    // `cargo install --path . --no-default-features`: flowgatectl where
    // the BPF toolchain is not installed.
    let names = crate_names(&cargo_tree(&[
        "-p",
        "flowgate",
        "--no-default-features",
        "-e",
        "normal,build",
    ]));
    assert!(names.contains("flowgatectl"), "{names:?}");
    assert_eq!(present(&names, &DATA_PATH_CRATES), [] as [&str; 0]);
    let features =
        data_plane_features(&["-p", "flowgate", "--no-default-features"], "normal,build");
    assert!(!features.contains("daemon"), "{features:?}");
    // With its default features it has the data path: the query sees it.
    let names = crate_names(&cargo_tree(&["-p", "flowgate", "-e", "normal,build"]));
    assert_eq!(present(&names, &DATA_PATH_CRATES), DATA_PATH_CRATES);
}

/// Each package of the workspace and its binaries, from `cargo metadata`.
fn binaries_by_package() -> std::collections::BTreeMap<String, Vec<String>> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--manifest-path",
            manifest,
            "--offline",
            "--locked",
        ])
        .args(["--no-deps", "--format-version", "1"])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    packages
        .iter()
        .map(|package| {
            let bins = package["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bin"))
                })
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect();
            (package["name"].as_str().unwrap_or("?").to_owned(), bins)
        })
        .collect()
}

#[test]
fn the_root_package_ships_both_binaries_and_no_other_package_has_one() {
    let bins = binaries_by_package();
    assert_eq!(
        bins.get("flowgate").map(Vec::as_slice),
        Some(&["flowgate".to_owned(), "flowgatectl".to_owned()][..]),
        "{bins:?}"
    );
    for package in ["flowgate-dataplane", "flowgatectl", "flowgate-api"] {
        assert_eq!(
            bins.get(package).map(Vec::len),
            Some(0),
            "{package} must be a library only: {bins:?}"
        );
    }
}

#[test]
fn the_daemon_build_has_what_flowgatectl_must_not() {
    let names = crate_names(&cargo_tree(&[
        "-p",
        "flowgate-dataplane",
        "-e",
        "normal,build",
    ]));
    assert_eq!(
        present(&names, &DATA_PATH_CRATES),
        DATA_PATH_CRATES,
        "the query no longer sees the daemon's dependencies"
    );
}

/// The data plane's features on in a build of `scope` (`-p NAME` or
/// `--workspace`) that follows dependencies of the `kinds` given (`normal`,
/// `build`, `dev`).
fn data_plane_features(scope: &[&str], kinds: &str) -> BTreeSet<String> {
    let edges = format!("features,{kinds}");
    let mut args = vec!["-e", edges.as_str(), "-i", "flowgate-dataplane"];
    args.extend_from_slice(scope);
    cargo_tree(&args)
        .into_iter()
        .filter_map(|line| {
            line.strip_prefix("flowgate-dataplane feature \"")
                .and_then(|rest| rest.split('"').next())
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn the_flowgate_binary_is_built_without_the_testkit() {
    // `cargo build --release` (the root package, as the scripts and
    // README build it), the data plane on its own, and
    // `cargo build --workspace --bins`.
    for scope in [
        &["-p", "flowgate"][..],
        &["-p", "flowgate-dataplane"][..],
        &["--workspace"][..],
    ] {
        let features = data_plane_features(scope, "normal,build");
        assert!(features.contains("daemon"), "{scope:?}: {features:?}");
        assert!(!features.contains("testkit"), "{scope:?}: {features:?}");
    }
}

#[test]
fn tests_and_benches_build_the_data_plane_with_the_testkit() {
    let features = data_plane_features(&["--workspace"], "normal,build,dev");
    assert!(
        features.contains("testkit") && features.contains("daemon"),
        "{features:?}"
    );
}
