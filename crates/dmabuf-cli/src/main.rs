//! `dmabuf`: the dmabuf-rs command-line tool.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod selftest;

#[derive(Parser)]
#[command(
    name = "dmabuf",
    version,
    about = "DMA-BUF buffer sharing in userspace"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the ports of the kernel's self-tests; ends with `N passed, M failed`.
    Selftest {
        /// Run only cases whose name contains this text.
        filter: Option<String>,
        /// List the cases instead of running them.
        #[arg(long)]
        list: bool,
    },
    /// Run a benchmark suite beside its baselines and print the ratios.
    Bench {
        /// The suite (`ww`, …) or `all`.
        suite: String,
        /// Shorter sampling (for CI and smoke runs).
        #[arg(long)]
        quick: bool,
        /// Print one JSON array of {suite, case, ours_ns, baseline, baseline_ns, ratio}.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Selftest { filter, list } => selftest::main(filter.as_deref(), list),
        Cmd::Bench { suite, quick, json } => bench::main(&suite, quick, json),
    }
}
