//! What every subcommand shares: logging, progress bars that logs do not tear, argument
//! parsers whose errors say what would be valid, notes, and errno explanations.

use indicatif::{MultiProgress, ProgressBar, ProgressState, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// The crates whose logs `-v`/`-vv` turn up (tracing targets are crate names).
const OUR_CRATES: [&str; 8] = [
    "lockdep",
    "dmabuf",
    "dmabuf_sync",
    "dmabuf_mem",
    "dmabuf_core",
    "dmabuf_drivers",
    "dmabuf_tools",
    "dmabuf_cli",
];

static QUIET: AtomicBool = AtomicBool::new(false);
static FILTER: OnceLock<String> = OnceLock::new();
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Every progress bar hangs off this, so that a log line suspends the bars while it is
/// written instead of tearing them.
fn bars() -> &'static MultiProgress {
    BARS.get_or_init(MultiProgress::new)
}

/// Where progress goes (`--progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    /// Bars on standard error when it is a terminal.
    Auto,
    /// A plain line on standard error every second, terminal or not (for logs and CI).
    Plain,
    /// None.
    Never,
}

/// Progress as plain lines, no cursor movement: a redraw is a line, at most one a
/// second (indicatif's refresh limit does not hold back explicit updates).
#[derive(Debug, Default)]
struct PlainLines(std::sync::Mutex<Option<std::time::Instant>>);

impl indicatif::TermLike for PlainLines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let s = s.trim_end();
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_empty() || last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return Ok(());
        }
        *last = Some(std::time::Instant::now());
        writeln!(std::io::stderr(), "{s}")
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Set where progress goes; before any bar (and `-q` means none).
pub fn init_progress(mode: Progress, quiet: bool) {
    use indicatif::ProgressDrawTarget;
    let target = match (mode, quiet) {
        (_, true) | (Progress::Never, _) => ProgressDrawTarget::hidden(),
        (Progress::Plain, _) => {
            ProgressDrawTarget::term_like_with_hz(Box::<PlainLines>::default(), 1)
        }
        (Progress::Auto, _) => ProgressDrawTarget::stderr(),
    };
    let _ = BARS.set(MultiProgress::with_draw_target(target));
}

/// Standard error, written between redraws of the progress bars.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        bars().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Install the `tracing` subscriber: formatted lines on standard error. `-q` (errors
/// only) and `-v`/`-vv` (debug/trace for the dmabuf crates) win over `RUST_LOG`, which
/// is honoured otherwise; the default is `warn`.
pub fn init_logging(verbose: u8, quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    let directives = if quiet {
        "error".to_string()
    } else if verbose > 0 {
        let level = if verbose == 1 { "debug" } else { "trace" };
        let mut d = String::from("warn");
        for c in OUR_CRATES {
            d.push_str(&format!(",{c}={level}"));
        }
        d
    } else {
        match std::env::var("RUST_LOG") {
            Ok(s) if !s.trim().is_empty() => {
                if let Err(e) = EnvFilter::builder().parse(&s) {
                    eprintln!("dmabuf: RUST_LOG={s:?} is not a valid filter ({e}); using \"warn\" (e.g. RUST_LOG=debug or RUST_LOG=dmabuf_core=trace)");
                    "warn".to_string()
                } else {
                    s
                }
            }
            _ => "warn".to_string(),
        }
    };
    let filter = EnvFilter::builder().parse_lossy(&directives);
    let _ = FILTER.set(directives);
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_ansi(ansi)
        .without_time()
        .try_init();
}

/// The log filter in effect, for child processes (as their `RUST_LOG`).
pub fn log_filter() -> &'static str {
    FILTER.get().map_or("warn", String::as_str)
}

/// A note on standard error (not an error), unless `-q`.
pub fn note(msg: std::fmt::Arguments<'_>) {
    if !QUIET.load(Ordering::Relaxed) {
        let _ = bars().suspend(|| writeln!(std::io::stderr(), "{msg}"));
    }
}

/// A progress bar of `len` steps in `template`, on standard error (drawn only when it is
/// a terminal), redrawn at least every 200 ms so elapsed time and ETA move. Keys beyond
/// indicatif's: `{rate}` (steps per second, 3 significant digits) and `{eta_s}` (the
/// ETA, blank until it can be estimated).
pub fn bar(len: u64, template: &str, unit: &'static str, msg: &str) -> ProgressBar {
    bar_with(len, style(template, unit), msg)
}

/// A progress bar of `len` steps in `style`, showing `msg` from its first draw (see
/// [`bar`]).
pub fn bar_with(len: u64, style: ProgressStyle, msg: &str) -> ProgressBar {
    if QUIET.load(Ordering::Relaxed) {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len)
        .with_style(style)
        .with_message(msg.to_string());
    let b = bars().add(b);
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

/// [`bar`]'s style: `template` with the keys `{rate}` (in `unit`s) and `{eta_s}`.
pub fn style(template: &str, unit: &'static str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{} {unit}/s", sig3(s.per_sec()));
            },
        )
        .with_key("eta_s", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            if s.pos() > 0 {
                let _ = write!(w, "ETA {}", duration(s.eta()));
            }
        })
        .progress_chars("=> ")
}

/// `x` with three significant digits (`0.0123`, `1.23`, `123`, `12300`).
pub fn sig3(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return "0".into();
    }
    let digits = 2 - x.abs().log10().floor() as i32;
    if digits > 0 {
        format!("{x:.*}", digits as usize)
    } else {
        format!("{x:.0}")
    }
}

/// A duration as `42s`, `3m07s`, `1h02m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// A count flag (`--ring`, `--frames`, `--inspect-every`): a whole number, at least 1.
pub fn count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("0 is out of range; valid range: 1 or more".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number ({e}); valid range: 1 or more")),
    }
}

/// The most seconds a duration flag takes (a year: beyond that the deadline is a typo).
pub const MAX_SECS: u64 = 365 * 24 * 3600;

/// A whole number of seconds, 1 to [`MAX_SECS`].
pub fn secs(s: &str) -> Result<u64, String> {
    let range = format!("valid range: 1 to {MAX_SECS} (a year)");
    match s.trim().parse::<u64>() {
        Ok(0) => Err(format!(
            "must be at least 1 second (0 would run nothing); {range}"
        )),
        Ok(n) if n > MAX_SECS => Err(format!("{n} seconds is too long; {range}")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number of seconds ({e}); {range}")),
    }
}

/// A size in bytes through `parse-size`, K/M/G meaning powers of 1024 (`4096`, `4K`,
/// `1M`, `1MiB`, `1.5M`, `1G`); at least one byte.
pub fn size(s: &str) -> Result<usize, String> {
    const FORMS: &str =
        "a number of bytes, optionally with K, M or G (powers of 1024; KiB, MiB, GiB too), e.g. 4096, 256K, 1.5M, 1GiB";
    let n = parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| format!("{e}; a size is {FORMS}"))?;
    if n == 0 {
        return Err(format!("0 bytes; a size is at least 1 byte: {FORMS}"));
    }
    usize::try_from(n).map_err(|_| format!("{n} bytes does not fit this machine's address space"))
}

/// A heap by name: one that [`dmabuf::heap::heaps`] has.
pub fn heap(s: &str) -> Result<String, String> {
    let names = dmabuf::heap::heaps().names();
    if names.iter().any(|n| n == s) {
        Ok(s.to_string())
    } else {
        Err(format!("no heap {s:?}; heaps: {}", names.join(", ")))
    }
}

/// The process's limit of open descriptors (RLIMIT_NOFILE, `ulimit -n`): soft and hard,
/// `None` for unlimited.
pub fn nofile() -> (Option<u64>, Option<u64>) {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (l.current, l.maximum)
}

fn limit(x: Option<u64>) -> String {
    x.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

/// What a failure's errno means for the user, when there is more to say than the
/// errno's name: which limit was hit and its value.
pub fn explain(errno: i32) -> Option<String> {
    let proc_value = |path: &str| {
        std::fs::read_to_string(path).map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
    };
    match errno {
        24 => {
            let (soft, hard) = nofile();
            Some(format!(
                "out of descriptors: the process hit RLIMIT_NOFILE (`ulimit -n`), {} open descriptors (hard limit {})",
                limit(soft),
                limit(hard)
            ))
        }
        23 => Some(format!(
            "out of descriptors system-wide: the system hit fs.file-max, {} open files",
            proc_value("/proc/sys/fs/file-max")
        )),
        _ => None,
    }
}

/// How to get under RLIMIT_NOFILE: `fewer` (e.g. "--ring 100 or less"), or raising the
/// soft limit where the hard one allows.
pub fn nofile_advice(fewer: &str) -> String {
    match nofile() {
        (Some(s), h) if h.is_none_or(|h| h > s) => {
            format!(
                "use {fewer}, or raise the limit first (`ulimit -n {}`)",
                limit(h)
            )
        }
        _ => format!("use {fewer} (the hard limit is reached: raising it takes root)"),
    }
}
