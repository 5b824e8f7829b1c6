//! Shell completions and man pages, generated from the clap definitions
//! so that they never disagree with the command line.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::cli::Shell;

/// Writes the completion script of `shell` for `command` to `out`.
pub fn completions(command: &mut clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = command.get_name().to_owned();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, command, name, out);
}

/// Writes one man page (roff) per command and visible subcommand into
/// `dir` (created if missing), in man section `section`, named as man
/// looks them up: `flowgatectl.1`, `flowgatectl-backend-drain.1`. Returns
/// the files written.
pub fn man_pages(command: clap::Command, section: &str, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let mut written = Vec::new();
    write_pages(command, section, dir, &mut written)?;
    Ok(written)
}

fn write_pages(
    command: clap::Command,
    section: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), section, dir, written)?;
    }
    let page = clap_mangen::Man::new(command)
        .section(section)
        .manual("flowgate");
    written.push(page.generate_to(dir)?);
    Ok(())
}
