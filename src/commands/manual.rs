//! `claimfab completions` and `claimfab man`: shell completion scripts and man pages made
//! from the clap definitions at run time, so they never drift from the parser they document.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::batch_dir::replace_file_at;
use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::error::UserError;

const BIN: &str = "claimfab";

/// Prints the completion script of one shell.
pub fn completions(args: &CompletionsArgs) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), BIN, &mut script);
    print(&script)
}

/// Prints claimfab(1), or writes every page into `--out`.
pub fn man(args: &ManArgs) -> Result<()> {
    let pages = pages()?;
    let Some(dir) = &args.out else {
        return print(&pages[0].1);
    };
    make_dir(dir)?;
    for (name, page) in &pages {
        replace_file_at(&dir.join(name), 0o644, |file| file.write_all(page))?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))?;
    crate::say!("wrote {} man pages to {}", pages.len(), dir.display());
    let files: Vec<String> = pages.into_iter().map(|(name, _)| name).collect();
    crate::output::emit(&crate::output::records::Record::ManPages {
        dir: &dir.display().to_string(),
        files: &files,
    });
    Ok(())
}

/// Every man page, claimfab.1 first: (file name, roff text).
fn pages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = vec![render(command.clone())?];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push(render(sub.clone())?);
    }
    Ok(pages)
}

fn render(command: clap::Command) -> Result<(String, Vec<u8>)> {
    let man = clap_mangen::Man::new(command).source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render(&mut page).context("cannot render a man page")?;
    Ok((man.get_filename(), page))
}

/// The output directory, made if missing; a file in its place is the user's to fix.
fn make_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(UserError::Flag {
            flag: "--out",
            value: dir.display().to_string(),
            problem: "exists and is not a directory; choose a directory for the man pages".into(),
        }
        .into());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes to standard output; a closed pipe (`claimfab man | head`) ends quietly.
fn print(bytes: &[u8]) -> Result<()> {
    match crate::output::write_bytes(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}
