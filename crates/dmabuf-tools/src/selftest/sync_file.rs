//! Ports of the semantics of the kernel's `tools/testing/selftests/sync` (sized small):
//! sw_sync timelines and sync files used through their descriptors, waits done by
//! polling the descriptor as the kernel's `sync_wait` does. One case of our own,
//! `sync/fd-copies-and-foreign-records`, checks the descriptor itself (duplicates, and
//! records written by somebody else).

use crate::error::Error;
use crate::fence::timeline::Timeline;
use crate::sync_file::{
    get_fence, ioctl_file_info, ioctl_merge, poll_readable, sw_sync_create_fence, SyncFenceInfo,
    SyncFile, SyncFileInfo, SyncMergeData,
};
use lockdep::selftest::Case;
use rustix::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::selftest::{ensure, R};

/// Every sync scenario.
pub(crate) fn cases() -> Vec<Case> {
    case_table![
        "sync/alloc-timeline" => alloc_timeline,
        "sync/alloc-fence" => alloc_fence,
        "sync/alloc-fence-negative" => alloc_fence_negative,
        "sync/fence-one-timeline-wait" => one_timeline_wait,
        "sync/fence-one-timeline-merge" => one_timeline_merge,
        "sync/merge-same" => merge_same,
        "sync/multi-timeline-wait" => multi_timeline_wait,
        "sync/timeline-close-enoent" => timeline_close,
        "sync/timeline-inc-chunks" => timeline_inc_chunks,
        "sync/stress-parallelism" => stress_parallelism,
        "sync/stress-consumer" => stress_consumer,
        "sync/stress-merge" => stress_merge,
        "sync/fd-copies-and-foreign-records" => fd_copies_and_foreign_records,
        "sync/sw-sync-point-implicit-sync" => sw_sync_point_implicit_sync,
        "sync/sw-sync-timeline-descriptor" => sw_sync_timeline_descriptor,
    ]
}

fn wait(sf: &SyncFile, ms: u64) -> bool {
    poll_readable(sf.as_fd(), Some(Duration::from_millis(ms))).unwrap_or(false)
}

fn counts(sf: &SyncFile) -> Result<(usize, usize, usize), String> {
    let mut info = SyncFileInfo::default();
    ioctl_file_info(sf.as_fd(), &mut info, &mut []).map_err(|e| e.to_string())?;
    let mut out = vec![SyncFenceInfo::default(); info.num_fences as usize];
    ioctl_file_info(sf.as_fd(), &mut info, &mut out).map_err(|e| e.to_string())?;
    let active = out.iter().filter(|i| i.status == 0).count();
    let signaled = out.iter().filter(|i| i.status == 1).count();
    Ok((out.len(), active, signaled))
}

fn mk(tl: &Timeline, v: u32) -> Result<SyncFile, String> {
    sw_sync_create_fence(tl, v).map_err(|e| format!("create fence: {e}"))
}

fn merge(name: &str, a: &SyncFile, b: &SyncFile) -> Result<SyncFile, String> {
    a.merge(name, b).map_err(|e| format!("merge: {e}"))
}

fn alloc_timeline() -> R {
    let tl = Timeline::new("alloc");
    ensure(tl.value() == 0 && tl.pending_count() == 0, "fresh timeline")
}

fn alloc_fence() -> R {
    let tl = Timeline::new("alloc");
    let sf = mk(&tl, 1)?;
    ensure(!wait(&sf, 0), "fence signalled at creation")?;
    let back = get_fence(sf.as_fd()).map_err(|e| e.to_string())?;
    ensure(
        crate::fence::Fence::ptr_eq(&back, sf.fence()),
        "import of own export is not the same fence",
    )
}

fn alloc_fence_negative() -> R {
    let tl = Timeline::new("neg");
    let sf = mk(&tl, 1)?;
    // A descriptor that is not a sync file: a pipe.
    let (r, _w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| e.to_string())?;
    ensure(
        matches!(get_fence(r.as_fd()), Err(Error::Invalid(_))),
        "import of a pipe must fail with EINVAL",
    )?;
    let mut d = SyncMergeData {
        fd2: rustix::fd::AsRawFd::as_raw_fd(&r),
        ..Default::default()
    };
    let before = d;
    ensure(
        matches!(ioctl_merge(sf.as_fd(), &mut d), Err(Error::NoEntry(_))),
        "merge with a non-sync fd must be ENOENT",
    )?;
    ensure(d == before, "failed merge changed its argument")
}

fn one_timeline_wait() -> R {
    let tl = Timeline::new("one");
    let sf = mk(&tl, 5)?;
    ensure(!wait(&sf, 0), "failure waiting on fence until timeout")?;
    tl.inc(1);
    ensure(!wait(&sf, 0), "failure waiting on fence until timeout")?;
    tl.inc(3);
    ensure(!wait(&sf, 0), "failure waiting on fence until timeout")?;
    tl.inc(2);
    ensure(wait(&sf, 0), "failure waiting on fence")?;
    ensure(tl.value() == 6, "timeline value")
}

fn one_timeline_merge() -> R {
    let tl = Timeline::new("merge");
    let (a, b, c, d) = (mk(&tl, 1)?, mk(&tl, 2)?, mk(&tl, 3)?, mk(&tl, 3)?);
    ensure(
        crate::fence::Fence::ptr_eq(c.fence(), d.fence()),
        "a live point of the same value must be reused",
    )?;
    let ab = merge("ab", &a, &b)?;
    let abc = merge("abc", &ab, &c)?;
    let (n, active, _) = counts(&abc)?;
    ensure(
        n == 1 && active == 1,
        "same-timeline merge must keep one fence",
    )?;
    tl.inc(1);
    ensure(!wait(&abc, 0), "merged fence signalled early")?;
    tl.inc(1);
    ensure(!wait(&abc, 0), "merged fence signalled early")?;
    tl.inc(1);
    ensure(wait(&abc, 0), "merged fence not signalled")?;
    ensure(wait(&a, 0) && wait(&b, 0), "component fences not signalled")
}

fn merge_same() -> R {
    let tl = Timeline::new("same");
    let a = mk(&tl, 1)?;
    let m = merge("same", &a, &a)?;
    ensure(!wait(&m, 0), "merged-same signalled early")?;
    tl.inc(1);
    ensure(wait(&m, 0), "merged-same not signalled")
}

fn multi_timeline_wait() -> R {
    let (t1, t2, t3) = (Timeline::new("a"), Timeline::new("b"), Timeline::new("c"));
    let (a, b, c) = (mk(&t1, 5)?, mk(&t2, 5)?, mk(&t3, 5)?);
    let ab = merge("ab", &a, &b)?;
    let abc = merge("abc", &ab, &c)?;
    let check = |active_want: usize, signaled_want: usize| -> R {
        let (n, active, signaled) = counts(&abc)?;
        ensure(
            n == 3 && active == active_want && signaled == signaled_want,
            &format!("counts n={n} active={active} signaled={signaled}"),
        )
    };
    check(3, 0)?;
    ensure(!wait(&abc, 0), "merged fence signalled early")?;
    t1.inc(5);
    check(2, 1)?;
    t2.inc(5);
    check(1, 2)?;
    ensure(!wait(&abc, 0), "merged fence signalled early")?;
    t3.inc(5);
    check(0, 3)?;
    ensure(wait(&abc, 0), "merged fence not signalled")
}

fn timeline_close() -> R {
    let tl = Timeline::new("close");
    let a = mk(&tl, 3)?;
    tl.inc(1);
    drop(tl);
    ensure(wait(&a, 100), "point not signalled on close")?;
    ensure(
        a.fence().get_status() == -2,
        "point closed with the wrong error",
    )
}

fn timeline_inc_chunks() -> R {
    let tl = Timeline::new("chunks");
    // A value more than 2^31 ahead counts as already reached (32-bit ordering).
    ensure(
        tl.create_fence(u32::MAX - 1).is_signaled(),
        "a point 2^31 behind must be signalled at birth",
    )?;
    let f = tl.create_fence(i32::MAX as u32);
    let g = tl.create_fence(1);
    ensure(
        !f.is_signaled() && !g.is_signaled(),
        "points signalled early",
    )?;
    // More than INT_MAX: applied in chunks, each signalling what it reaches in order.
    tl.inc(0x8000_0000);
    ensure(
        f.is_signaled() && g.is_signaled(),
        "large increment not applied",
    )?;
    ensure(tl.value() == 0x8000_0000, "value after chunked inc")?;
    tl.inc(i32::MAX as u32);
    // Value 0xffff_ffff: a point at 2 lies ahead across the wrap.
    let h = tl.create_fence(2);
    ensure(!h.is_signaled(), "wrapped point signalled at birth")?;
    tl.inc(3);
    ensure(
        h.is_signaled() && tl.value() == 2,
        "wrapped point not signalled",
    )
}

/// Two threads take turns on one timeline: each waits for its point, bumps a counter,
/// then advances the timeline.
fn stress_parallelism() -> R {
    const ITERS: u32 = 200;
    let tl = Arc::new(Timeline::new("parallel"));
    let counter = Arc::new(AtomicU32::new(0));
    let mut hs = Vec::new();
    for t in 0..2u32 {
        let (tl, counter) = (tl.clone(), counter.clone());
        hs.push(std::thread::spawn(move || -> R {
            for i in 0..ITERS {
                let sf = mk(&tl, i * 2 + t)?;
                if !wait(&sf, 2000) {
                    return Err(format!("thread {t} pass {i}: wait timed out"));
                }
                let c = counter.fetch_add(1, Ordering::SeqCst);
                if c != i * 2 + t {
                    return Err(format!("counter {c} expected {}", i * 2 + t));
                }
                tl.inc(1);
            }
            Ok(())
        }));
    }
    // Thread 0's first point is at 0: already reached, so the dance starts by itself.
    for h in hs {
        h.join().map_err(|_| "stress thread panicked")??;
    }
    Ok(())
}

/// Producers wait for their turn on a consumer timeline, produce, and signal the
/// producer timeline; the consumer waits for all producers each round.
fn stress_consumer() -> R {
    const PRODUCERS: u32 = 2;
    const ITERS: u32 = 100;
    let producer_tl = Arc::new(Timeline::new("producers"));
    let consumer_tl = Arc::new(Timeline::new("consumer"));
    let data = Arc::new(AtomicU32::new(0));
    let mut hs = Vec::new();
    for _ in 0..PRODUCERS {
        let (p, c, data) = (producer_tl.clone(), consumer_tl.clone(), data.clone());
        hs.push(std::thread::spawn(move || -> R {
            for i in 0..ITERS {
                let turn = mk(&c, i)?;
                if !wait(&turn, 2000) {
                    return Err("producer wait timed out".into());
                }
                data.fetch_add(1, Ordering::SeqCst);
                p.inc(1);
            }
            Ok(())
        }));
    }
    let mut result = Ok(());
    for i in 0..ITERS {
        let all = match mk(&producer_tl, (i + 1) * PRODUCERS) {
            Ok(f) => f,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if !wait(&all, 2000) {
            result = Err(format!("consumer round {i} timed out"));
            break;
        }
        if data.load(Ordering::SeqCst) != (i + 1) * PRODUCERS {
            result = Err("consumer saw wrong data".into());
            break;
        }
        consumer_tl.inc(1);
    }
    if result.is_err() {
        // Unblock producers: closing would need the last reference; bump far instead.
        consumer_tl.inc(ITERS * 2);
    }
    for h in hs {
        h.join().map_err(|_| "producer panicked")??;
    }
    result
}

/// Random merges of points on several timelines; after advancing every timeline, every
/// merged fence has signalled, and not before.
fn stress_merge() -> R {
    const TIMELINES: usize = 4;
    const MERGES: usize = 64;
    let tls: Vec<Timeline> = (0..TIMELINES).map(|_| Timeline::new("merge")).collect();
    let mut max = [0u32; TIMELINES];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut merged = mk(&tls[0], 1)?;
    max[0] = 1;
    for _ in 0..MERGES {
        let t = (next() % TIMELINES as u64) as usize;
        let v = (next() % 32) as u32 + 1;
        max[t] = max[t].max(v);
        let f = mk(&tls[t], v)?;
        merged = merge("stress", &merged, &f)?;
    }
    let (n, _, _) = counts(&merged)?;
    ensure(
        n <= TIMELINES,
        "merge kept more than one fence per timeline",
    )?;
    for (t, tl) in tls.iter().enumerate().filter(|(t, _)| max[*t] > 0) {
        ensure(!wait(&merged, 0), "merged fence signalled early")?;
        tl.inc(max[t]);
    }
    ensure(wait(&merged, 0), "merged fence not signalled")
}

/// The descriptor itself: a duplicate imports as the same fence and reads the status
/// once signalled; a descriptor made elsewhere, holding a signal record, imports as a
/// signalled proxy with that record's status and timestamp.
fn fd_copies_and_foreign_records() -> R {
    use crate::fence::{ktime_now, Status};
    use crate::sync_file::{encode_record, fd_status};
    let tl = Timeline::new("fd");
    let sf = mk(&tl, 1)?;
    let dup = rustix::io::fcntl_dupfd_cloexec(sf.as_fd(), 0).map_err(|e| e.to_string())?;
    let back = get_fence(dup.as_fd()).map_err(|e| e.to_string())?;
    ensure(
        crate::fence::Fence::ptr_eq(&back, sf.fence()),
        "a duplicate must import as the same fence",
    )?;
    ensure(
        matches!(fd_status(dup.as_fd()), Ok(Status::Pending)),
        "pending before the signal",
    )?;
    tl.inc(1);
    ensure(
        matches!(fd_status(dup.as_fd()), Ok(Status::Signaled)),
        "the duplicate reads the signal",
    )?;
    let e = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
        .map_err(|e| e.to_string())?;
    let ts = ktime_now() - 1000;
    rustix::io::write(&e, &encode_record(-110, ts).to_ne_bytes()).map_err(|e| e.to_string())?;
    let f = get_fence(e.as_fd()).map_err(|e| e.to_string())?;
    ensure(
        f.is_signaled() && f.get_status() == -110 && f.timestamp() == Some(ts),
        "a foreign record imports as a signalled proxy with its status and time",
    )
}

/// A sw_sync point is a plain fence, not a container: its sync file imports into a
/// buffer's implicit sync (`DMA_BUF_IOCTL_IMPORT_SYNC_FILE`) with READ, WRITE and
/// READ|WRITE, making the buffer busy in the right directions until the timeline
/// reaches the point.
fn sw_sync_point_implicit_sync() -> R {
    use crate::buf::simple::SimpleExporter;
    use crate::buf::sync_flags;
    let s = |r: crate::error::Result<()>| r.map_err(|e| e.to_string());
    // (flags, readable while pending, writable while pending)
    for (flags, readable, what) in [
        (sync_flags::READ, true, "READ"),
        (sync_flags::WRITE, false, "WRITE"),
        (sync_flags::RW, false, "READ|WRITE"),
    ] {
        let ex = SimpleExporter::new(1).map_err(|e| e.to_string())?;
        let b = ex.export().map_err(|e| e.to_string())?;
        let tl = Timeline::new("implicit");
        let sf = sw_sync_create_fence(&tl, 1).map_err(|e| e.to_string())?;
        s(b.import_sync_file(flags, sf.as_fd()))?;
        ensure(b.resv().num_fences() == 1, "the point was added")?;
        ensure(
            b.poll() == (readable, false),
            &format!("{what}: busy while the point is pending"),
        )?;
        tl.inc(1);
        ensure(
            b.poll() == (true, true),
            &format!("{what}: idle once it signals"),
        )?;
    }
    Ok(())
}

/// The timeline as a descriptor: points made through it signal on increments made
/// through any descriptor of it, the last close signals the pending ones with -ENOENT,
/// and a descriptor that is not a timeline is refused with ENOTTY.
fn sw_sync_timeline_descriptor() -> R {
    use crate::sync_file::sw_sync;
    let e = |r: crate::error::Error| r.to_string();
    let tl = sw_sync::open().map_err(e)?;
    let dup = rustix::io::fcntl_dupfd_cloexec(&tl, 0).map_err(|x| x.to_string())?;
    let p1 = sw_sync::create_fence(tl.as_fd(), 1).map_err(e)?;
    let p2 = sw_sync::create_fence(dup.as_fd(), 2).map_err(e)?;
    sw_sync::inc(dup.as_fd(), 1).map_err(e)?;
    ensure(p1.poll() && !p2.poll(), "inc signals the points reached")?;
    drop(dup);
    ensure(
        !p2.poll(),
        "closing one of two descriptors is not the last close",
    )?;
    drop(tl);
    ensure(
        wait(&p2, 10_000),
        "the last close signals the pending point",
    )?;
    ensure(
        p2.fence().get_status() == -2,
        "the pending point reads -ENOENT after the last close",
    )?;
    let (r, w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|x| x.to_string())?;
    drop(r);
    ensure(
        sw_sync::create_fence(w.as_fd(), 1).is_err_and(|x| x.errno() == 25),
        "a pipe that is not a timeline: ENOTTY",
    )?;
    ensure(
        sw_sync::inc(p1.as_fd(), 1).is_err_and(|x| x.errno() == 25),
        "a sync file is not a timeline: ENOTTY",
    )
}
