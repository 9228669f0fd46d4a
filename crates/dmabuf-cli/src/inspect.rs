//! `dmabuf bufinfo|fences|lockdep [--pid N]`: another process's live state, read from
//! its debug socket (see `dmabuf::debug::server`), in the kernel's debugfs formats.

pub use dmabuf::debug::server::Query;
use dmabuf::debug::server::{query, serving, socket_dir};
use std::process::ExitCode;

/// With a pid, print its answer to `q`; without, list the processes that serve one.
pub fn main(q: Query, pid: Option<u32>) -> ExitCode {
    let Some(pid) = pid else {
        let pids = serving();
        if pids.is_empty() {
            println!(
                "no process of this user exposes its state in {}: run one with DMABUF_DEBUG_SOCKET=1 (or call dmabuf::debug::server::serve())",
                socket_dir().display()
            );
            return ExitCode::SUCCESS;
        }
        println!("{:>8}  command", "pid");
        for p in pids {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            println!("{p:>8}  {}", comm.trim());
        }
        println!("(dmabuf {} --pid PID shows one)", q.word());
        return ExitCode::SUCCESS;
    };
    match query(pid, q) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "dmabuf {}: process {pid}: {e} (errno {}); `dmabuf {}` lists the processes that serve",
                q.word(),
                e.errno(),
                q.word()
            );
            ExitCode::FAILURE
        }
    }
}
