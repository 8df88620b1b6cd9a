//! `ckptcheck completions SHELL` prints a shell completion script (clap_complete) and
//! `ckptcheck completions man [SUBCOMMAND]` a roff man page (clap_mangen), both generated from the
//! clap definitions in `cli`, so they cannot drift from the real arguments. Everything goes to
//! stdout through the `Printer`; this command writes no files (`> ckptcheck.1` is the user's).
//! Hidden subcommands (`bench-forward`) get neither completions nor a page.

use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::Outcome;
use crate::cli::{Cli, CompletionsArgs, Generated};
use crate::output::Printer;

/// The name completions are registered for and man pages are titled with.
const BIN: &str = "ckptcheck";

pub fn run(args: &CompletionsArgs, printer: &Printer) -> Result<Outcome> {
    let shell = match args.shell {
        Generated::Man => {
            printer.data(&man_page(args.page.as_deref())?);
            return Ok(Outcome::Clean);
        }
        Generated::Bash => Shell::Bash,
        Generated::Zsh => Shell::Zsh,
        Generated::Fish => Shell::Fish,
        Generated::Powershell => Shell::PowerShell,
        Generated::Elvish => Shell::Elvish,
    };
    if let Some(page) = &args.page {
        bail!("`completions {shell}` takes no SUBCOMMAND (got `{page}`): only `completions man {page}` prints one subcommand's man page");
    }
    printer.data(&completion_script(shell)?);
    Ok(Outcome::Clean)
}

/// The completion script for one shell.
pub fn completion_script(shell: Shell) -> Result<String> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), BIN, &mut buf);
    String::from_utf8(buf).context("clap_complete wrote a completion script that is not UTF-8")
}

/// The top-level command without its hidden subcommands, which clap_complete would otherwise
/// complete: the same arguments, about, version and subcommands, less `bench-forward`.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new(BIN).version(env!("CKPTCHECK_VERSION")).subcommand_required(full.is_subcommand_required_set());
    if let Some(a) = full.get_about() {
        cmd = cmd.about(a.clone());
    }
    cmd = cmd.args(full.get_arguments().cloned());
    cmd.subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned())
}

/// `ckptcheck.1`, or `ckptcheck-SUB.1` for a visible subcommand `SUB`.
pub fn man_page(page: Option<&str>) -> Result<String> {
    // Built, so each subcommand carries its display name (`ckptcheck-bisect`) and the global
    // `--threads`; no `help` subcommand in the SUBCOMMANDS section.
    let mut root = visible_command().disable_help_subcommand(true);
    root.build();
    let cmd = match page {
        None => root,
        Some(name) => {
            let visible: Vec<&clap::Command> = root.get_subcommands().collect();
            match visible.iter().find(|c| c.get_name() == name) {
                Some(c) => (*c).clone(),
                None => {
                    let names: Vec<&str> = visible.iter().map(|c| c.get_name()).collect();
                    bail!("no subcommand `{name}` to print a man page for: one of {}", names.join(", "));
                }
            }
        }
    };
    let man = clap_mangen::Man::new(cmd)
        .source(format!("{BIN} {}", env!("CKPTCHECK_VERSION")))
        .date(env!("CKPTCHECK_COMMIT_DATE"))
        .manual("ckptcheck manual");
    let mut buf = Vec::new();
    man.render(&mut buf).context("rendering the man page")?;
    String::from_utf8(buf).context("clap_mangen wrote a man page that is not UTF-8")
}
