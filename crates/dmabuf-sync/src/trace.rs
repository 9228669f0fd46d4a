//! Traces: what fences, engines, locks and waits did, as a Chrome / Perfetto JSON trace
//! (the "JSON trace event format": open it in `ui.perfetto.dev` or `chrome://tracing`).
//!
//! [`start`] begins recording into a bounded ring of events, [`stop`] ends it and
//! returns the [`Trace`], which [`Trace::to_json`] writes out. While nothing records,
//! every hook is one relaxed atomic load.
//!
//! What is recorded:
//!
//! | event | track | form |
//! |---|---|---|
//! | a fence, from its creation (while recording) to its signal | one per fence context, named by its driver and timeline | a slice `seqno N`; its status in the arguments |
//! | a fence signalled with an error | its context's track | an instant `fence error` |
//! | a wait for a fence (not yet signalled when the wait began) | the waiting thread | a slice `wait ctx:seqno`, and a flow arrow from the fence's signal to the wait's end |
//! | a reservation object locked and unlocked | the locking thread | a slice `resv N held` |
//! | a job of a simulated engine | the engine | a slice named by the job's kind, and a flow from each fence it waited for (`dmabuf-drivers`) |
//! | an IOMMU fault, a lockdep report | the thread that saw it | an instant |
//!
//! Any layer above may add its own events ([`complete`], [`instant`], [`flow`],
//! [`named_track`]).
//!
//! Timestamps are `CLOCK_MONOTONIC` ([`ktime_now`]), written in
//! microseconds. The ring holds at most the capacity given to [`start`]; older events
//! are dropped first (the trace says how many), so memory stays bounded however long
//! the run.
//!
//! Lock: one leaf mutex over the recorder, taken only while recording.

use crate::error::{Error, Result};
use crate::fence::{ktime_now, Fence};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);
static REC: Mutex<Option<Recorder>> = parking_lot::const_mutex(None);

/// Most fence creations remembered while waiting for their signal (fences that are
/// never signalled would otherwise grow the table).
const BIRTHS_MAX: usize = 1 << 16;
/// First id of the named (non-thread) tracks.
const NAMED_BASE: u64 = 1 << 40;

/// One event's shape.
#[derive(Clone, Debug, PartialEq)]
enum Ph {
    /// A slice of `dur_ns`.
    Complete { dur_ns: u64 },
    /// A point in time.
    Instant,
    /// The start of flow `id`.
    FlowStart { id: u64 },
    /// The end of flow `id`, bound to the slice that encloses it.
    FlowEnd { id: u64 },
}

/// One recorded event.
#[derive(Clone, Debug)]
struct Event {
    ph: Ph,
    name: String,
    cat: &'static str,
    ts_ns: u64,
    tid: u64,
    args: Vec<(&'static str, String)>,
}

struct Recorder {
    events: VecDeque<Event>,
    capacity: usize,
    dropped: u64,
    /// Named tracks: id → name.
    tracks: Vec<(u64, String)>,
    by_name: HashMap<String, u64>,
    /// Fence context → its track.
    contexts: HashMap<u64, u64>,
    /// `(context, seqno)` → creation time, for fences created while recording.
    births: HashMap<(u64, u64), u64>,
    /// Threads seen: id → name.
    threads: HashMap<u64, String>,
    next_flow: u64,
}

impl Recorder {
    fn push(&mut self, e: Event) {
        if self.events.len() == self.capacity {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(e);
    }

    fn named(&mut self, name: &str) -> u64 {
        if let Some(&t) = self.by_name.get(name) {
            return t;
        }
        let t = NAMED_BASE + self.tracks.len() as u64;
        self.tracks.push((t, name.to_string()));
        self.by_name.insert(name.to_string(), t);
        t
    }

    fn context_track(&mut self, f: &Fence) -> u64 {
        let ctx = f.context().id();
        if let Some(&t) = self.contexts.get(&ctx) {
            return t;
        }
        let t = self.named(&format!(
            "fences {} {} (context {ctx})",
            f.driver_name(),
            f.timeline_name()
        ));
        self.contexts.insert(ctx, t);
        t
    }

    fn thread(&mut self) -> u64 {
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u64;
        self.threads.entry(tid).or_insert_with(|| {
            std::thread::current()
                .name()
                .map_or_else(|| format!("thread {tid}"), str::to_string)
        });
        tid
    }
}

/// Whether a trace is being recorded. One relaxed atomic load: the hooks' only cost
/// while nothing records.
#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Start recording, keeping at most `capacity` events (the oldest are dropped first).
///
/// # Errors
///
/// `Invalid` for a zero capacity; `Busy` while a recording is already running (stop it
/// first); nothing changes then.
pub fn start(capacity: usize) -> Result<()> {
    if capacity == 0 {
        return Err(Error::Invalid("trace of zero events"));
    }
    let mut r = REC.lock();
    if r.is_some() {
        return Err(Error::Busy("a trace is already being recorded"));
    }
    *r = Some(Recorder {
        events: VecDeque::with_capacity(capacity.min(1 << 16)),
        capacity,
        dropped: 0,
        tracks: Vec::new(),
        by_name: HashMap::new(),
        contexts: HashMap::new(),
        births: HashMap::new(),
        threads: HashMap::new(),
        next_flow: 1,
    });
    ON.store(true, Ordering::Release);
    drop(r);
    lockdep::set_report_listener(Some(lockdep_report));
    Ok(())
}

/// Lockdep's reports, as instants on the reporting thread.
fn lockdep_report(rep: &lockdep::Report) {
    instant(
        Track::Thread,
        &format!("lockdep: {:?}", rep.kind),
        "error",
        ktime_now(),
        vec![("classes", rep.classes.join(", "))],
    );
}

/// Stop recording and return what was recorded (`None` when nothing was being recorded).
pub fn stop() -> Option<Trace> {
    ON.store(false, Ordering::Release);
    lockdep::set_report_listener(None);
    let r = REC.lock().take()?;
    let mut names: Vec<(u64, String)> = r.tracks;
    names.extend(r.threads);
    Some(Trace {
        events: r.events.into(),
        dropped: r.dropped,
        tracks: names,
        pid: std::process::id(),
    })
}

/// Run `f` on the recorder, if one is recording.
#[inline]
fn with(f: impl FnOnce(&mut Recorder)) {
    if enabled() {
        if let Some(r) = REC.lock().as_mut() {
            f(r);
        }
    }
}

/// Where an event goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Track {
    /// The calling thread's track.
    Thread,
    /// A named track ([`named_track`]).
    Named(u64),
}

fn tid(r: &mut Recorder, t: Track) -> u64 {
    match t {
        Track::Thread => r.thread(),
        Track::Named(id) => id,
    }
}

/// The track named `name` (made on first use), e.g. one per engine. `None` while
/// nothing records.
pub fn named_track(name: &str) -> Option<Track> {
    let mut out = None;
    with(|r| out = Some(Track::Named(r.named(name))));
    out
}

/// Record a slice `name` of category `cat` on `track`, from `start_ns` to `end_ns`
/// (monotonic ns), with `args`. A no-op while nothing records.
pub fn complete(
    track: Track,
    name: &str,
    cat: &'static str,
    start_ns: u64,
    end_ns: u64,
    args: Vec<(&'static str, String)>,
) {
    with(|r| {
        let tid = tid(r, track);
        r.push(Event {
            ph: Ph::Complete {
                dur_ns: end_ns.saturating_sub(start_ns),
            },
            name: name.to_string(),
            cat,
            ts_ns: start_ns,
            tid,
            args,
        });
    });
}

/// Record an instant `name` of category `cat` on `track` at `ts_ns`. A no-op while
/// nothing records.
pub fn instant(
    track: Track,
    name: &str,
    cat: &'static str,
    ts_ns: u64,
    args: Vec<(&'static str, String)>,
) {
    with(|r| {
        let tid = tid(r, track);
        r.push(Event {
            ph: Ph::Instant,
            name: name.to_string(),
            cat,
            ts_ns,
            tid,
            args,
        });
    });
}

/// Record a flow arrow `name` from `from` at `from_ns` to the slice enclosing `to_ns` on
/// `to`. A no-op while nothing records.
pub fn flow(from: Track, from_ns: u64, to: Track, to_ns: u64, name: &str) {
    with(|r| {
        let (a, b) = (tid(r, from), tid(r, to));
        let id = r.next_flow;
        r.next_flow += 1;
        for (ph, tid, ts) in [
            (Ph::FlowStart { id }, a, from_ns),
            (Ph::FlowEnd { id }, b, to_ns),
        ] {
            r.push(Event {
                ph,
                name: name.to_string(),
                cat: "flow",
                ts_ns: ts,
                tid,
                args: Vec::new(),
            });
        }
    });
}

/// The track of `f`'s context (made on first use); `None` while nothing records.
pub fn fence_track(f: &Fence) -> Option<Track> {
    let mut out = None;
    with(|r| out = Some(Track::Named(r.context_track(f))));
    out
}

/// A flow from `f`'s signal (on its context's track) to `to_ns` on `to`, for a waiter
/// or a job `f` released. A no-op while nothing records, or for a fence not signalled.
pub fn released_by(f: &Fence, to: Track, to_ns: u64) {
    if !enabled() {
        return;
    }
    let Some(ts) = f.timestamp() else { return };
    with(|r| {
        let a = r.context_track(f);
        let b = tid(r, to);
        let id = r.next_flow;
        r.next_flow += 1;
        let name = format!("{}:{}", f.context().id(), f.seqno());
        r.push(Event {
            ph: Ph::FlowStart { id },
            name: name.clone(),
            cat: "flow",
            ts_ns: ts,
            tid: a,
            args: Vec::new(),
        });
        r.push(Event {
            ph: Ph::FlowEnd { id },
            name,
            cat: "flow",
            ts_ns: to_ns.max(ts),
            tid: b,
            args: Vec::new(),
        });
    });
}

/// Hook: `f` is about to signal: its context's track is named now, while its driver
/// and timeline names can still be read.
#[cold]
#[inline(never)]
pub(crate) fn fence_named(f: &Fence) {
    with(|r| {
        r.context_track(f);
    });
}

/// Hook: `f` was created.
#[cold]
#[inline(never)]
pub(crate) fn fence_created(f: &Fence) {
    with(|r| {
        r.context_track(f);
        if r.births.len() >= BIRTHS_MAX {
            r.births.clear();
        }
        r.births.insert((f.context().id(), f.seqno()), ktime_now());
    });
}

/// Hook: `f` was signalled at `ts_ns` (its error, if any, already set).
#[cold]
#[inline(never)]
pub(crate) fn fence_signalled(f: &Fence, ts_ns: u64) {
    with(|r| {
        let track = r.context_track(f);
        let born = r.births.remove(&(f.context().id(), f.seqno()));
        let status = f.get_status();
        r.push(Event {
            ph: Ph::Complete {
                dur_ns: born.map_or(0, |b| ts_ns.saturating_sub(b)),
            },
            name: format!("seqno {}", f.seqno()),
            cat: "fence",
            ts_ns: born.unwrap_or(ts_ns).min(ts_ns),
            tid: track,
            args: vec![
                ("context", f.context().id().to_string()),
                ("status", status.to_string()),
            ],
        });
        if status < 0 {
            r.push(Event {
                ph: Ph::Instant,
                name: "fence error".into(),
                cat: "error",
                ts_ns,
                tid: track,
                args: vec![
                    ("fence", format!("{}:{}", f.context().id(), f.seqno())),
                    ("error", status.to_string()),
                ],
            });
        }
    });
}

/// Hook: this thread waited for `f` from `start_ns` to `end_ns`.
#[cold]
#[inline(never)]
pub(crate) fn fence_waited(f: &Fence, start_ns: u64, end_ns: u64) {
    complete(
        Track::Thread,
        &format!("wait {}:{}", f.context().id(), f.seqno()),
        "wait",
        start_ns,
        end_ns,
        Vec::new(),
    );
    released_by(f, Track::Thread, end_ns);
}

/// A recorded trace ([`stop`]).
#[derive(Clone, Debug)]
pub struct Trace {
    events: Vec<Event>,
    dropped: u64,
    tracks: Vec<(u64, String)>,
    pid: u32,
}

/// `s` as a JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Nanoseconds as the format's microseconds.
fn us(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

impl Trace {
    /// Events recorded (after any the ring dropped).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events the ring dropped (the oldest) to stay within its capacity.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The trace as the JSON trace event format: `{"traceEvents": [...],
    /// "displayTimeUnit": "ns", "otherData": {...}}`, with a `thread_name` metadata event
    /// per track.
    pub fn to_json(&self) -> String {
        let mut o = String::with_capacity(64 + self.events.len() * 120);
        o.push_str("{\"traceEvents\":[\n");
        let mut first = true;
        let mut sep = |o: &mut String| {
            if !first {
                o.push_str(",\n");
            }
            first = false;
        };
        sep(&mut o);
        let _ = write!(
            o,
            "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{},\"tid\":0,\"args\":{{\"name\":\"dmabuf-rs\"}}}}",
            self.pid
        );
        for (tid, name) in &self.tracks {
            sep(&mut o);
            let _ = write!(
                o,
                "{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{},\"tid\":{tid},\"args\":{{\"name\":",
                self.pid
            );
            json_str(&mut o, name);
            o.push_str("}}");
        }
        for e in &self.events {
            sep(&mut o);
            let ph = match e.ph {
                Ph::Complete { .. } => "X",
                Ph::Instant => "i",
                Ph::FlowStart { .. } => "s",
                Ph::FlowEnd { .. } => "f",
            };
            let _ = write!(o, "{{\"ph\":\"{ph}\",\"name\":");
            json_str(&mut o, &e.name);
            let _ = write!(
                o,
                ",\"cat\":\"{}\",\"pid\":{},\"tid\":{},\"ts\":{}",
                e.cat,
                self.pid,
                e.tid,
                us(e.ts_ns)
            );
            match e.ph {
                Ph::Complete { dur_ns } => {
                    let _ = write!(o, ",\"dur\":{}", us(dur_ns));
                }
                Ph::Instant => o.push_str(",\"s\":\"t\""),
                Ph::FlowStart { id } => {
                    let _ = write!(o, ",\"id\":{id}");
                }
                Ph::FlowEnd { id } => {
                    let _ = write!(o, ",\"id\":{id},\"bp\":\"e\"");
                }
            }
            if !e.args.is_empty() {
                o.push_str(",\"args\":{");
                for (i, (k, v)) in e.args.iter().enumerate() {
                    if i > 0 {
                        o.push(',');
                    }
                    json_str(&mut o, k);
                    o.push(':');
                    json_str(&mut o, v);
                }
                o.push('}');
            }
            o.push('}');
        }
        let _ = write!(
            o,
            "\n],\"displayTimeUnit\":\"ns\",\"otherData\":{{\"dropped_events\":\"{}\"}}}}\n",
            self.dropped
        );
        o
    }

    /// Write [`to_json`](Self::to_json) to `path`.
    ///
    /// # Errors
    ///
    /// The file system's, as `Os`.
    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        std::fs::write(path, self.to_json()).map_err(|e| {
            Error::Os(rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fence::Context;

    /// Recording is process-wide: the tests that record take turns.
    static SERIAL: Mutex<()> = parking_lot::const_mutex(());

    #[test]
    fn fences_waits_and_flows_are_recorded_and_bounded() {
        let _s = SERIAL.lock();
        assert!(matches!(start(0), Err(Error::Invalid(_))));
        start(1000).unwrap();
        assert!(matches!(start(10), Err(Error::Busy(_))));
        let f = crate::testing::named("tr", "line", Context::new(), 1);
        let g = f.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            g.signal().unwrap();
        });
        f.wait();
        t.join().unwrap();
        let e = crate::testing::named("tr", "line", Context::new(), 2);
        e.set_error(-5).unwrap();
        e.signal().unwrap();
        let tr = stop().unwrap();
        assert!(stop().is_none());
        let j = tr.to_json();
        assert!(j.starts_with("{\"traceEvents\":["), "{j}");
        assert!(j.contains("\"name\":\"seqno 1\""), "{j}");
        assert!(j.contains("\"name\":\"wait "), "{j}");
        assert!(
            j.contains("\"ph\":\"s\"") && j.contains("\"ph\":\"f\""),
            "{j}"
        );
        assert!(j.contains("\"name\":\"fence error\""), "{j}");
        assert!(j.contains("fences tr line"), "{j}");
        // Off again: nothing more is recorded.
        let h = crate::testing::named("tr", "line", Context::new(), 3);
        h.signal().unwrap();
        assert!(!enabled());
        // Bounded: a small ring keeps the newest events and counts the rest.
        start(4).unwrap();
        let c = Context::new();
        for s in 1..=10 {
            crate::testing::named("tr", "ring", c, s).signal().unwrap();
        }
        let tr = stop().unwrap();
        assert_eq!(tr.len(), 4);
        assert_eq!(tr.dropped(), 6);
        assert!(tr.to_json().contains("\"seqno 10\""));
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
