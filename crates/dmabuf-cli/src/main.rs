//! `dmabuf`: the dmabuf-rs command-line tool.

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

mod bench;
mod demo;
mod inspect;
mod selftest;
mod torture;
mod ui;

#[derive(Parser)]
#[command(
    name = "dmabuf",
    version,
    about = "DMA-BUF buffer sharing in userspace"
)]
struct Cli {
    /// More log output: -v debug, -vv trace, for the dmabuf crates (wins over RUST_LOG,
    /// which is honoured otherwise; the default is warnings).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Errors only: no warnings, notes or progress.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Progress on standard error: bars on a terminal (auto), a plain line a second
    /// (plain: for logs and CI), or none.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    progress: ui::Progress,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Push frames through a pipeline of simulated devices and check every one.
    Demo {
        /// Frames to run (1 or more).
        #[arg(long, default_value_t = 240, value_parser = ui::count, allow_negative_numbers = true)]
        frames: usize,
        /// Bytes per frame (e.g. 4096, 256K, 1.5M, 1MiB, 1G; K/M/G are powers of 1024);
        /// buffers are rounded up to whole pages.
        #[arg(long, default_value = "256K", value_parser = ui::size, allow_negative_numbers = true)]
        size: usize,
        /// Buffer pairs in the ring (1 or more; each buffer is a descriptor).
        #[arg(long, default_value_t = 4, value_parser = ui::count, allow_negative_numbers = true)]
        ring: usize,
        /// The CPU inspects every n-th frame (1 or more).
        #[arg(long, default_value_t = 4, value_parser = ui::count, allow_negative_numbers = true)]
        inspect_every: usize,
        /// Make the processing device coherent (default: non-coherent, bounce buffers).
        #[arg(long)]
        isp_coherent: bool,
        /// The heap the ring is allocated from (`system`, `contig`).
        #[arg(long, default_value = "system", value_parser = ui::heap)]
        heap: String,
        /// Run the camera, isp and encoder as separate processes of this binary,
        /// sharing the ring as descriptors and each frame's fences as sync files
        /// (the ring must come from a heap whose buffers have descriptors: `system` and
        /// `contig` do).
        #[arg(long)]
        processes: bool,
        /// With --processes: kill this stage (camera, isp, encoder) mid-run, to see
        /// the others report it and the run fail cleanly.
        #[arg(long, requires = "processes", value_parser = ["camera", "isp", "encoder"])]
        kill_stage: Option<String>,
        /// With --kill-stage: frames done before the kill.
        #[arg(long, default_value_t = 10, requires = "kill_stage")]
        kill_after: usize,
        /// Internal: run as this stage of a multi-process demo (standard input is the
        /// control socket).
        #[arg(long, hide = true, conflicts_with = "processes")]
        stage: Option<String>,
        /// Record a Chrome/Perfetto JSON trace of the run into FILE (open it in
        /// ui.perfetto.dev): engines, fences, waits, lock holds, errors.
        #[arg(long, value_name = "FILE", conflicts_with = "processes")]
        trace: Option<std::path::PathBuf>,
        /// With --trace: most events kept (the oldest are dropped first).
        #[arg(long, default_value_t = 1 << 18, value_parser = ui::count, allow_negative_numbers = true, requires = "trace")]
        trace_events: usize,
    },
    /// Print a process's buffers as the kernel's debugfs `dma_buf/bufinfo` does; without
    /// --pid, list the processes that expose their state (DMABUF_DEBUG_SOCKET=1).
    Bufinfo {
        /// The process (one of this user's, serving its debug socket).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Print a process's sw_sync timelines and sync files as the kernel's `sync/info`.
    Fences {
        /// The process (one of this user's, serving its debug socket).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Print a process's lockdep classes and dependencies as `/proc/lockdep`.
    Lockdep {
        /// The process (one of this user's, serving its debug socket).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Run the ports of the kernel's self-tests; ends with `N passed, M failed`.
    Selftest {
        /// Run only cases whose name contains this text.
        filter: Option<String>,
        /// List the cases instead of running them.
        #[arg(long)]
        list: bool,
        /// Seconds a case may run before the watchdog calls it hung (a FAIL).
        #[arg(long, default_value_t = 60, value_parser = ui::secs)]
        timeout: u64,
    },
    /// Run the racing self-test scenarios over and over for a while, lockdep on.
    Torture {
        /// How long to run, in seconds (at least 1).
        #[arg(long, default_value_t = 10, value_parser = ui::secs)]
        seconds: u64,
        /// Only scenarios whose name contains this text.
        filter: Option<String>,
        /// Seconds one run of a scenario may take before the watchdog calls it hung.
        #[arg(long, default_value_t = 60, value_parser = ui::secs)]
        timeout: u64,
    },
    /// Run a benchmark suite beside its baselines and print the ratios.
    Bench {
        /// The suite (`ww`, …) or `all`.
        suite: String,
        /// Shorter sampling (for CI and smoke runs).
        #[arg(long)]
        quick: bool,
        /// Print one JSON array of {suite, case, ours_ns, baseline, baseline_ns, ratio,
        /// target, target_of, met} (and overhead_ns for overhead cases).
        #[arg(long)]
        json: bool,
        /// Exit 1 when any case misses its target (naming each on stderr).
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    // A bench peer (the `fd` suite's consumer process) before anything else.
    if let Some(code) = dmabuf_tools::bench::peer_main() {
        std::process::exit(code)
    }
    let cli = Cli::parse();
    ui::init_progress(cli.progress, cli.quiet);
    ui::init_logging(cli.verbose, cli.quiet);
    match cli.cmd {
        Cmd::Demo {
            frames,
            size,
            ring,
            inspect_every,
            isp_coherent,
            heap,
            processes,
            kill_stage,
            kill_after,
            stage,
            trace,
            trace_events,
        } => {
            let cfg = dmabuf_tools::demo::DemoConfig {
                frames,
                frame_bytes: size,
                ring,
                inspect_every,
                isp_coherent,
            };
            if let Some(name) = stage {
                return demo::stage(&name, &cfg);
            }
            tracing::debug!(
                frames,
                size,
                ring,
                inspect_every,
                isp_coherent,
                heap = %heap,
                processes,
                "demo configuration"
            );
            let page = dmabuf::mem::page_size();
            if size % page != 0 {
                let rounded = size.div_ceil(page) * page;
                ui::note(format_args!(
                    "dmabuf demo: note: --size {size} is not a whole number of {page}-byte pages; each buffer will be rounded up to {rounded} bytes ({} pages)",
                    rounded / page
                ));
            }
            let mode = if processes {
                demo::Mode::Processes(kill_stage.map(|stage| dmabuf_tools::demo::processes::Kill {
                    stage,
                    after: kill_after,
                }))
            } else {
                demo::Mode::Threads
            };
            let trace = trace.map(|path| demo::TraceTo {
                path,
                events: trace_events,
            });
            demo::main(cfg, mode, trace.as_ref(), &|bytes| {
                let data = dmabuf::heap::AllocData::new(bytes as u64);
                dmabuf::heap::heaps().alloc(&heap, &data)
            })
        }
        Cmd::Bufinfo { pid } => inspect::main(inspect::Query::Bufinfo, pid),
        Cmd::Fences { pid } => inspect::main(inspect::Query::Fences, pid),
        Cmd::Lockdep { pid } => inspect::main(inspect::Query::Lockdep, pid),
        Cmd::Selftest {
            filter,
            list,
            timeout,
        } => selftest::main(filter.as_deref(), list, Duration::from_secs(timeout)),
        Cmd::Bench {
            suite,
            quick,
            json,
            check,
        } => bench::main(&suite, quick, json, check),
        Cmd::Torture {
            seconds,
            filter,
            timeout,
        } => torture::main(seconds, filter.as_deref(), Duration::from_secs(timeout)),
    }
}
