//! Writes the seed corpora: `seeds DIR` fills `DIR/parse/`,
//! `DIR/pipeline/` and `DIR/xdp_fast_path/` (the same scripts as the
//! pipeline's) with one file per seed (overwriting files of the same name,
//! leaving others alone).

use std::path::PathBuf;
use std::{env, fs, io, process};

use flowgate_fuzz::seeds;

fn main() {
    let Some(dir) = env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: seeds CORPUS_DIR");
        process::exit(2);
    };
    let corpora = [
        ("parse", seeds::frames()),
        ("pipeline", seeds::scripts()),
        ("xdp_fast_path", seeds::scripts()),
    ];
    for (target, files) in corpora {
        if let Err(e) = write_all(&dir.join(target), &files) {
            eprintln!("seeds: {}: {e}", dir.join(target).display());
            process::exit(1);
        }
        println!(
            "{target}: {} seeds in {}",
            files.len(),
            dir.join(target).display()
        );
    }
}

fn write_all(dir: &std::path::Path, files: &[(String, Vec<u8>)]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, bytes) in files {
        fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
