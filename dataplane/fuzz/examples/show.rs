//! Shows what a fuzz input does, step by step, for triage:
//!
//! ```text
//! cargo run --example show -- parse FILE
//! cargo run --example show -- pipeline FILE
//! ```
//!
//! For `parse`: the frame in hex and what `wire::parse` made of it. For
//! `pipeline`: each step of the script (switches, time, port, the frame in
//! hex, its parse, the verdict and the frame as left). Then the target's
//! own checks run, so a reproducer panics here as it did under the fuzzer,
//! after the last step printed.

use std::{env, fs, process};

use flowgate_dataplane::wire;
use flowgate_fuzz::check;

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let [target, path] = args.as_slice() else {
        eprintln!("usage: show (parse|pipeline) FILE");
        process::exit(2);
    };
    let input = fs::read(path).unwrap_or_else(|e| {
        eprintln!("show: {path}: {e}");
        process::exit(1);
    });
    match target.as_str() {
        "parse" => {
            println!("frame {}", hex(&input));
            println!("parse {:?}", wire::parse(&input));
            check::parse_frame(&input);
        }
        "pipeline" => check::run_script(&input, |r| {
            let s = r.step;
            println!(
                "step {} t={}ns gen={} port={} switch={} repair={} expire={}",
                r.index,
                r.now_ns,
                r.generation,
                s.ingress,
                s.switch_snapshot,
                s.repair_checksums,
                s.expire
            );
            println!("  in   {}", hex(r.frame_in));
            println!("  parse {:?}", wire::parse(r.frame_in));
            println!("  checksums ok {}", wire::frame_checksums_ok(r.frame_in));
            println!("  verdict {:?}", r.verdict);
            if r.frame_out != r.frame_in {
                println!("  out  {}", hex(r.frame_out));
            }
        }),
        _ => {
            eprintln!("usage: show (parse|pipeline) FILE");
            process::exit(2);
        }
    }
    println!("checks passed");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
