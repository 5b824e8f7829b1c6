//! Compiles the XDP program (bpf/flowgate_xdp.c) into `$OUT_DIR` with
//! clang, against libbpf's helper headers (libbpf-dev) and the kernel's UAPI
//! headers (linux-libc-dev, whose `asm/` lives in Debian's multiarch
//! directory). The crate embeds the object (`xdp::program`).
//!
//! Runs only with the `daemon` feature (the default); reruns only when the C
//! source changes. When clang or a header is
//! missing, the build stops with one line that says what to install.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

const SOURCE: &str = "bpf/flowgate_xdp.c";
const OBJECT: &str = "flowgate_xdp.o";
const FIX: &str = "run scripts/install-deps.sh";

fn main() {
    // Only the live gateway (feature `daemon`) carries the XDP program.
    if env::var_os("CARGO_FEATURE_DAEMON").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=CLANG");

    let out_dir = match env::var_os("OUT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => fail("OUT_DIR is not set (build through cargo)"),
    };
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let multiarch = multiarch_include();

    for (header, package) in [
        ("/usr/include/bpf/bpf_helpers.h", "libbpf-dev"),
        ("/usr/include/linux/bpf.h", "linux-libc-dev"),
    ] {
        if !Path::new(header).exists() {
            fail(&format!("{header} is missing ({package}); {FIX}"));
        }
    }
    let Some(multiarch) = multiarch else {
        fail(&format!(
            "no asm/types.h under /usr/include/<arch>-linux-gnu (linux-libc-dev); {FIX}"
        ));
    };

    let object = out_dir.join(OBJECT);
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall"])
        .arg(format!("-I{}", multiarch.display()))
        .arg("-c")
        .arg(SOURCE)
        .arg("-o")
        .arg(&object)
        .output();
    match output {
        Err(e) => fail(&format!(
            "cannot run `{clang}` to compile the XDP program ({e}); {FIX}"
        )),
        Ok(out) if !out.status.success() => {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            fail(&format!("`{clang}` failed to compile {SOURCE} (see above)"));
        }
        Ok(_) => {}
    }
}

/// Debian's multiarch include directory holding the target's `asm/`
/// headers, e.g. /usr/include/x86_64-linux-gnu.
fn multiarch_include() -> Option<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let debian_arch = match arch.as_str() {
        "x86" => "i386",
        other => other,
    };
    let preferred = PathBuf::from(format!("/usr/include/{debian_arch}-linux-gnu"));
    if preferred.join("asm/types.h").exists() {
        return Some(preferred);
    }
    // Any multiarch directory with the headers (the UAPI types the program
    // uses are the same on every 64-bit Linux target).
    std::fs::read_dir("/usr/include")
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|dir| {
            dir.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("-linux-gnu"))
                && dir.join("asm/types.h").exists()
        })
}

fn fail(message: &str) -> ! {
    eprintln!("error: flowgate-dataplane: {message}");
    exit(1);
}
