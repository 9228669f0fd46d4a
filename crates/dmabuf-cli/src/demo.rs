//! `dmabuf demo`: the frame pipeline across simulated devices (see `dmabuf_tools::demo`),
//! with progress, a summary and the final bufinfo. Exits non-zero on any wrong frame or
//! any report.

use crate::ui;
use dmabuf::buf::DmaBuf;
use dmabuf_tools::demo::{self, processes, DemoConfig};
use std::process::ExitCode;

/// Where the stages run.
pub enum Mode {
    /// All in this process.
    Threads,
    /// One process per stage; optionally kill one mid-run.
    Processes(Option<processes::Kill>),
}

/// Run one stage of a multi-process demo: the control socket is standard input.
pub fn stage(name: &str, cfg: &DemoConfig) -> ExitCode {
    use std::os::fd::AsFd;
    match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(ctl) => ExitCode::from(processes::stage_main(name, cfg, ctl) as u8),
        Err(e) => {
            eprintln!("dmabuf demo ({name}): standard input (the control socket): {e}");
            ExitCode::FAILURE
        }
    }
}

/// The arguments that make a stage process see the same configuration.
fn stage_args(cfg: &DemoConfig, name: &str) -> Vec<String> {
    let mut a = vec![
        "demo".to_string(),
        "--stage".into(),
        name.into(),
        "--frames".into(),
        cfg.frames.to_string(),
        "--size".into(),
        cfg.frame_bytes.to_string(),
        "--ring".into(),
        cfg.ring.to_string(),
        "--inspect-every".into(),
        cfg.inspect_every.to_string(),
    ];
    if cfg.isp_coherent {
        a.push("--isp-coherent".into());
    }
    a
}

/// Where `--trace` writes, and how many events it keeps.
pub struct TraceTo {
    /// The JSON file.
    pub path: std::path::PathBuf,
    /// The ring's capacity.
    pub events: usize,
}

pub fn main(
    cfg: DemoConfig,
    mode: Mode,
    trace: Option<&TraceTo>,
    alloc: &dyn Fn(usize) -> dmabuf::Result<DmaBuf>,
) -> ExitCode {
    if let Some(t) = trace {
        if let Err(e) = dmabuf::trace::start(t.events) {
            eprintln!("dmabuf demo: --trace: {e} (errno {})", e.errno());
            return ExitCode::FAILURE;
        }
    }
    let bar = ui::bar(
        cfg.frames as u64,
        "{elapsed:>4} [{bar:30}] {pos}/{len} frames, {rate} {eta_s}",
        "frames",
        "",
    );
    let progress = |done: usize, _| bar.set_position(done as u64);
    let result = match &mode {
        Mode::Threads => demo::run(&cfg, alloc, &progress),
        Mode::Processes(kill) => {
            let spawn = |name: &str, ctl: std::os::fd::OwnedFd| {
                std::process::Command::new(std::env::current_exe()?)
                    .args(stage_args(&cfg, name))
                    .stdin(std::process::Stdio::from(ctl))
                    .env("RUST_LOG", ui::log_filter())
                    .stdout(std::process::Stdio::null())
                    .spawn()
            };
            let opts = processes::Options {
                kill: kill.clone(),
                check_leaks: true,
            };
            processes::run(&cfg, alloc, &spawn, &opts, &progress)
        }
    };
    if let Some(t) = trace {
        if let Some(tr) = dmabuf::trace::stop() {
            let json = tr.to_json();
            match std::fs::write(&t.path, &json) {
                Ok(()) => ui::note(format_args!(
                    "dmabuf demo: trace: {} events ({} dropped), {} bytes in {} (open it in ui.perfetto.dev)",
                    tr.len(),
                    tr.dropped(),
                    json.len(),
                    t.path.display()
                )),
                Err(e) => {
                    eprintln!("dmabuf demo: --trace {}: {e}", t.path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            bar.abandon();
            eprintln!("dmabuf demo: {e} (errno {})", e.errno());
            if let Some(why) = ui::explain(e.errno()) {
                eprintln!("dmabuf demo: {why}");
            }
            if e.errno() == 24 {
                let per = match mode {
                    Mode::Threads => "",
                    Mode::Processes(_) => " in each stage process",
                };
                // Two buffers a slot, and some descriptors of the process's own.
                let fits = (ui::nofile().0.unwrap_or(u64::MAX).saturating_sub(64) / 2).max(1);
                eprintln!(
                    "dmabuf demo: a ring of {} holds {} buffers{per}, each a descriptor: {}",
                    cfg.ring,
                    2 * cfg.ring,
                    ui::nofile_advice(&format!("--ring {fits} or less"))
                );
            }
            return ExitCode::FAILURE;
        }
    };
    bar.finish_and_clear();
    let secs = report.elapsed.as_secs_f64();
    let frame_mib = cfg.frame_bytes as f64 / (1024.0 * 1024.0);
    println!(
        "pipeline: camera (coherent) -> isp ({}) -> cpu inspect every {} -> encoder (coherent), ring of {}{}",
        if cfg.isp_coherent { "coherent" } else { "non-coherent, bounce-buffered" },
        cfg.inspect_every,
        cfg.ring,
        match mode {
            Mode::Threads => "",
            Mode::Processes(_) => "; one process per stage, buffers shared as descriptors, fences as sync files",
        }
    );
    println!(
        "frames:     {} run, {} verified ok, {} inspected by the CPU",
        report.frames, report.frames_ok, report.inspected
    );
    println!(
        "throughput: {:.1} frames/s, {:.1} MiB/s ({} bytes per frame, {:.2} s)",
        report.frames as f64 / secs,
        report.frames as f64 * frame_mib / secs,
        cfg.frame_bytes,
        secs
    );
    let ms = |p: f64| report.latency_percentile(p).as_secs_f64() * 1e3;
    println!(
        "latency:    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms (camera submit -> encoder signal)",
        ms(50.0),
        ms(90.0),
        ms(99.0),
        ms(100.0)
    );
    println!(
        "reports:    {} lockdep, {} ownership, {} IOMMU faults, {} failed jobs{}",
        report.lockdep.len(),
        report.ownership.len(),
        report.faults,
        report.failed_jobs,
        match mode {
            Mode::Threads => String::new(),
            Mode::Processes(_) => format!(", {} in the stage processes", report.stage_reports),
        }
    );
    for r in &report.lockdep {
        println!("{r}");
    }
    for r in &report.ownership {
        println!("{r}");
    }
    print!("{}", report.bufinfo);
    if report.is_clean() {
        println!("demo: clean");
        ExitCode::SUCCESS
    } else {
        println!("demo: FAILED");
        ExitCode::FAILURE
    }
}
