//! Live state over a per-process Unix socket — the userspace stand-in for the kernel's
//! debugfs files: any program using the library can expose its buffers, fences and
//! lockdep state, and `dmabuf bufinfo --pid N` (`fences`, `lockdep`) reads them.
//!
//! Opt-in: call [`serve`], or set the environment variable `DMABUF_DEBUG_SOCKET=1`
//! (checked when the process-wide heap registry is first used, see
//! [`heaps`](crate::heap::heaps)). The socket is `<dir>/<pid>.sock`, where `<dir>` is
//! [`socket_dir`]: `$XDG_RUNTIME_DIR/dmabuf-rs`, else `/tmp/dmabuf-rs-<uid>`, made
//! mode `0700` and refused if another user owns it. The socket itself is mode `0600`,
//! and each connection's peer credentials are checked: only the same user (or root)
//! gets an answer.
//!
//! The protocol: the client sends one word and a newline, the server answers with the
//! text and closes. Words ([`Query`]):
//!
//! | word | answer, in the kernel's format |
//! |---|---|
//! | `bufinfo` | debugfs `dma_buf/bufinfo`: buffers, their attachments and fences ([`bufinfo`](crate::buf::bufinfo::bufinfo)) |
//! | `fences` | sw_sync's `sync/info`: timelines and sync files ([`info_text`](crate::sync_file::info_text)), then the engines' fence contexts ([`contexts_text`](crate::device::engine::contexts_text)) |
//! | `lockdep` | `/proc/lockdep`: classes and dependencies ([`lockdep::classes_text`]) |
//!
//! An unknown word gets one line, `unknown query`. The server is one thread, answering
//! one connection at a time; a client that sends nothing is dropped after a second.

use crate::error::{Error, Result};
use std::io::{BufRead, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// What a client may ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    /// The buffers (`dma_buf/bufinfo`).
    Bufinfo,
    /// The fences: sw_sync timelines and sync files (`sync/info`).
    Fences,
    /// Lockdep's classes and dependencies (`/proc/lockdep`).
    Lockdep,
}

impl Query {
    /// The protocol's word for it.
    pub fn word(self) -> &'static str {
        match self {
            Query::Bufinfo => "bufinfo",
            Query::Fences => "fences",
            Query::Lockdep => "lockdep",
        }
    }

    fn from_word(w: &str) -> Option<Query> {
        [Query::Bufinfo, Query::Fences, Query::Lockdep]
            .into_iter()
            .find(|q| q.word() == w)
    }

    /// The answer, from this process's state.
    pub fn answer(self) -> String {
        match self {
            Query::Bufinfo => crate::buf::bufinfo::bufinfo(),
            Query::Fences => {
                let mut t = crate::sync_file::info_text();
                t.push_str(&crate::device::engine::contexts_text());
                t
            }
            Query::Lockdep => lockdep::classes_text(),
        }
    }
}

fn io_err(e: std::io::Error) -> Error {
    Error::Os(rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
}

/// The directory of the sockets: `$XDG_RUNTIME_DIR/dmabuf-rs`, else
/// `/tmp/dmabuf-rs-<uid>`.
pub fn socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join("dmabuf-rs"),
        _ => PathBuf::from(format!(
            "/tmp/dmabuf-rs-{}",
            rustix::process::getuid().as_raw()
        )),
    }
}

/// Make the socket directory (mode 0700) or check the existing one: a directory, not a
/// link, owned by this user, closed to others.
fn private_dir() -> Result<PathBuf> {
    let d = socket_dir();
    match std::fs::create_dir(&d) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(e)),
    }
    let st = rustix::fs::lstat(&d)?;
    let me = rustix::process::getuid().as_raw();
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory
        || st.st_uid != me
    {
        return Err(Error::Access(
            "the debug socket directory is not a directory of this user",
        ));
    }
    rustix::fs::chmod(&d, rustix::fs::Mode::from_raw_mode(0o700))?;
    Ok(d)
}

/// The socket path of process `pid`.
pub fn socket_path(pid: u32) -> PathBuf {
    socket_dir().join(format!("{pid}.sock"))
}

static SERVING: OnceLock<std::result::Result<PathBuf, i32>> = OnceLock::new();

/// Expose this process's state on its debug socket (see the module docs), from a
/// thread of its own; the socket's path. Idempotent: later calls return the same path
/// (or the first call's error). A socket left by an earlier process with the same pid is
/// replaced. Takes no lock of the library's while answering but those the answers take
/// (briefly: the buffer list, the sync-file registry, lockdep's graph).
///
/// # Errors
///
/// `Access` when the socket directory belongs to another user or is not a directory;
/// the file system's and the socket's errors (`EMFILE`, `EADDRINUSE`…) as `Os`; a
/// thread that cannot be started as `NoMem`. Nothing is left behind on error.
pub fn serve() -> Result<PathBuf> {
    SERVING
        .get_or_init(|| start().map_err(|e| e.errno()))
        .clone()
        .map_err(|n| Error::Os(rustix::io::Errno::from_raw_os_error(n)))
}

fn start() -> Result<PathBuf> {
    let dir = private_dir()?;
    let path = dir.join(format!("{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).map_err(io_err)?;
    if let Err(e) = rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(0o600)) {
        let _ = std::fs::remove_file(&path);
        return Err(e.into());
    }
    let p = path.clone();
    std::thread::Builder::new()
        .name("dmabuf-debug".into())
        .spawn(move || {
            for c in l.incoming() {
                match c {
                    Ok(c) => answer(c),
                    Err(e) => tracing::debug!("debug socket {}: {e}", p.display()),
                }
            }
        })
        .map_err(|_| {
            let _ = std::fs::remove_file(&path);
            Error::NoMem
        })?;
    Ok(path)
}

/// Answer one connection, if its peer is this user (or root).
fn answer(c: UnixStream) {
    let me = rustix::process::getuid().as_raw();
    match rustix::net::sockopt::socket_peercred(&c) {
        Ok(cred) if cred.uid.as_raw() == me || cred.uid.is_root() => {}
        _ => return,
    }
    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
    let mut line = String::new();
    let mut r = std::io::BufReader::new(&c).take(64);
    if r.read_line(&mut line).is_err() {
        return;
    }
    let text = match Query::from_word(line.trim()) {
        Some(q) => q.answer(),
        None => "unknown query\n".to_string(),
    };
    let _ = (&c).write_all(text.as_bytes());
}

use std::io::Read as _;

/// Ask process `pid` for `q` over its debug socket; its answer.
///
/// # Errors
///
/// `NoEntry` when the process exposes no socket (not running, or not serving);
/// `Access` when the socket may not be opened; other socket errors as `Os`.
pub fn query(pid: u32, q: Query) -> Result<String> {
    let path = socket_path(pid);
    let mut c = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            Error::NoEntry("no debug socket for that process (is it serving?)")
        }
        std::io::ErrorKind::PermissionDenied => Error::Access("debug socket not ours"),
        _ => io_err(e),
    })?;
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    c.write_all(format!("{}\n", q.word()).as_bytes())
        .map_err(io_err)?;
    let mut out = String::new();
    c.read_to_string(&mut out).map_err(io_err)?;
    Ok(out)
}

/// The processes of this user that serve a debug socket now, by pid (sockets of
/// processes that are gone are removed).
pub fn serving() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(socket_dir()) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid: u32 = name.strip_suffix(".sock")?.parse().ok()?;
            if UnixStream::connect(e.path()).is_ok() {
                Some(pid)
            } else {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_file(e.path());
                }
                None
            }
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Serve if the environment asks for it (`DMABUF_DEBUG_SOCKET=1`); called once when
/// the heap registry is made.
pub(crate) fn serve_if_asked() {
    if std::env::var_os("DMABUF_DEBUG_SOCKET").is_some_and(|v| v == "1") {
        if let Err(e) = serve() {
            tracing::warn!("DMABUF_DEBUG_SOCKET=1 but the debug socket failed: {e}");
        }
    }
}
