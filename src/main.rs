//! The `ckptcheck` binary: parse arguments, run the command, map the result to an exit code
//! (0 clean, 1 findings at or above the fail level, 2 could not run).

use std::process::ExitCode;

use clap::Parser;

use ckptcheck::cli::{Cli, Command};
use ckptcheck::commands::{self, EXIT_COULD_NOT_RUN};
use ckptcheck::output::Printer;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // --help and --version are successes; bad arguments are "could not run".
            return if e.use_stderr() { ExitCode::from(EXIT_COULD_NOT_RUN) } else { ExitCode::SUCCESS };
        }
    };
    let printer = Printer { quiet: false, verbose: cli.verbose };
    let quiet = |json: bool| Printer { quiet: json, ..printer };
    if let Err(e) = ckptcheck::model::set_threads(cli.threads) {
        printer.error(&format!("error: {}", commands::error_text(&anyhow::Error::from(e))));
        return ExitCode::from(EXIT_COULD_NOT_RUN);
    }
    let result = match &cli.command {
        Command::Bisect(a) => return finish(commands::bisect::bisect(a, &quiet(a.json)), &printer),
        Command::Gate(a) => return finish(commands::bisect::gate(a, &quiet(a.json)), &printer),
        Command::Inspect(a) => commands::inspect::run(a, &quiet(a.json)),
        Command::Lint(a) => commands::lint::run(a, &quiet(a.json)),
        Command::Compare(a) => commands::compare::run(a, &quiet(a.json)),
        Command::MergeCheck(a) => commands::merge_check::run(a, &quiet(a.json)),
        Command::Completions(a) => commands::completions::run(a, &printer),
        Command::BenchForward(a) => commands::bench::run(a, &quiet(a.json)),
    };
    match result {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            printer.error(&format!("error: {}", commands::error_text(&e)));
            ExitCode::from(EXIT_COULD_NOT_RUN)
        }
    }
}

fn finish(r: anyhow::Result<u8>, printer: &Printer) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            printer.error(&format!("error: {}", commands::error_text(&e)));
            ExitCode::from(EXIT_COULD_NOT_RUN)
        }
    }
}
