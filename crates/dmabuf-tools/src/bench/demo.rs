//! `dmabuf bench demo`: the frame pipeline with one process per stage beside the same
//! pipeline in one process (`dmabuf demo --processes` against `dmabuf demo`), 256 KiB
//! frames from the system heap, a ring of 4, lockdep off on both sides.
//!
//! One iteration is one frame; a sample runs at least 48 frames (so the ring's fill and
//! drain are a small part of it) and is scaled to its iterations. The time is the
//! pipeline's own (first frame requested to last frame verified), without starting the
//! stage processes or allocating the ring. The ratio is time per frame, processes over
//! threads: the "frames/s across processes ≥ 0.7 × in one process" is a ratio
//! ≤ 1.43 here. Where the time goes across processes: per frame two sync files cross
//! (created, sent with their liveness, imported as proxies and waited on), four
//! `SCM_RIGHTS` messages and the context switches between the stages; in one process
//! the stages hand fences over in memory but run one after another on the caller's
//! thread, where across processes the camera runs ahead of the isp and the encoder.
//!
//! The stages are this executable run again with `DMABUF_BENCH_PEER=demo:<stage>:...`
//! (see [`peer_main`](super::peer_main)).

use super::BenchCase;
use crate::demo::{self, processes, DemoConfig};
use crate::heap::{heaps, AllocData};
use rustix::fd::OwnedFd;
use std::time::Duration;

/// Frames at least, per sample.
const MIN_FRAMES: u64 = 48;

/// The cases of the `demo` suite.
pub(crate) fn cases() -> Vec<BenchCase> {
    vec![BenchCase::new(
        "demo",
        "pipeline per frame, 3 processes, 256 KiB",
        "the same pipeline in one process",
        across_processes,
        in_one_process,
    )
    .target(1.43)]
}

fn config(frames: u64) -> DemoConfig {
    DemoConfig {
        frames: frames as usize,
        ..DemoConfig::default()
    }
}

fn alloc(bytes: usize) -> crate::Result<crate::buf::DmaBuf> {
    heaps().alloc("system", &AllocData::new(bytes as u64))
}

/// `elapsed` of `frames` frames, scaled to `iters`.
fn scaled(elapsed: Duration, iters: u64, frames: u64) -> Duration {
    Duration::from_secs_f64(elapsed.as_secs_f64() * iters as f64 / frames as f64)
}

fn in_one_process(iters: u64) -> Duration {
    let frames = iters.max(MIN_FRAMES);
    let r = demo::run(&config(frames), &alloc, &|_, _| {}).expect("the demo runs");
    assert!(r.is_clean(), "the demo is clean");
    scaled(r.elapsed, iters, frames)
}

fn across_processes(iters: u64) -> Duration {
    let frames = iters.max(MIN_FRAMES);
    let cfg = config(frames);
    let spawn = |name: &str, ctl: OwnedFd| super::fd::spawn_peer(&peer_role(name, &cfg), ctl);
    let r = processes::run(
        &cfg,
        &alloc,
        &spawn,
        &processes::Options::default(),
        &|_, _| {},
    )
    .expect("the demo runs");
    assert!(r.is_clean(), "the demo is clean");
    scaled(r.elapsed, iters, frames)
}

/// The peer role that runs stage `name` of `cfg`.
fn peer_role(name: &str, cfg: &DemoConfig) -> String {
    format!(
        "demo:{name}:{}:{}:{}:{}:{}",
        cfg.frames,
        cfg.frame_bytes,
        cfg.ring,
        cfg.inspect_every,
        u8::from(cfg.isp_coherent)
    )
}

/// Run the stage a `demo:` peer role names, standard input its control socket.
pub(crate) fn stage_main(role: &str) -> i32 {
    let p: Vec<&str> = role.split(':').collect();
    let num = |i: usize| p.get(i).and_then(|s| s.parse::<usize>().ok());
    let (Some(name), Some(frames), Some(frame_bytes), Some(ring), Some(inspect_every), Some(c)) =
        (p.get(1), num(2), num(3), num(4), num(5), num(6))
    else {
        eprintln!("bad demo peer role {role:?}");
        return 2;
    };
    lockdep::set_enabled(false);
    let cfg = DemoConfig {
        frames,
        frame_bytes,
        ring,
        inspect_every,
        isp_coherent: c == 1,
    };
    // Standard input is the control socket: a duplicate of it is ours.
    match rustix::fd::AsFd::as_fd(&std::io::stdin()).try_clone_to_owned() {
        Ok(ctl) => processes::stage_main(name, &cfg, ctl),
        Err(e) => {
            eprintln!("dmabuf bench demo peer: standard input: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_run_clean() {
        for c in cases() {
            assert!((c.ours)(2) > Duration::ZERO, "{}", c.case);
            assert!((c.base)(2) > Duration::ZERO, "{}", c.case);
        }
    }

    #[test]
    fn a_bad_peer_role_is_refused() {
        assert_eq!(stage_main("demo:isp:x"), 2);
        assert_eq!(stage_main("demo"), 2);
    }
}
