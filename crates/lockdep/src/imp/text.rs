//! Splat text, in the shape of the kernel's lockdep reports.

use super::graph::{types_text, Step};
use super::held::Held;
use crate::{LockClass, Mode};
use std::fmt::Write as _;
use std::panic::Location;

type Loc = &'static Location<'static>;

/// A class name with its subclass, as the kernel prints it: `A` or `A/1`.
pub(crate) fn class_text(class: &LockClass, subclass: u8) -> String {
    if subclass == 0 {
        class.name().to_string()
    } else {
        format!("{}/{}", class.name(), subclass)
    }
}

fn mode_text(mode: Mode) -> &'static str {
    match mode {
        Mode::Write => "",
        Mode::Read => "{read}",
        Mode::RecursiveRead => "{recursive read}",
    }
}

/// ` (A){read}, at: file:line:col`, one held or wanted lock.
pub(crate) fn lock_line(h: &Held) -> String {
    lock_line_at(h, h.at)
}

/// [`lock_line`] for the lock of entry `h` taken at `at` (one of a merged run).
fn lock_line_at(h: &Held, at: Loc) -> String {
    let mut s = format!(
        "({}){}",
        class_text(h.class, h.how.subclass),
        mode_text(h.how.mode)
    );
    if h.how.trylock {
        s.push_str("{trylock}");
    }
    if let Some(n) = h.how.nest {
        let _ = write!(s, "{{nest lock {n:#x}}}");
    }
    let _ = write!(s, ", at: {at}");
    s
}

/// The kernel's `lockdep_print_held_locks`, one line per lock (the locks merged into
/// one entry under a nest lock each get theirs).
pub(crate) fn held_text(thread: &str, held: &[Held]) -> String {
    let mut s = String::new();
    match held.iter().map(Held::count).sum::<usize>() {
        0 => {
            let _ = writeln!(s, "no locks held by {thread}.");
        }
        1 => {
            let _ = writeln!(s, "1 lock held by {thread}:");
        }
        n => {
            let _ = writeln!(s, "{n} locks held by {thread}:");
        }
    }
    let lines = held
        .iter()
        .flat_map(|h| h.instances().map(move |(_, at)| (h, at)));
    for (i, (h, at)) in lines.enumerate() {
        let _ = writeln!(s, " #{i}: {}", lock_line_at(h, at));
    }
    s
}

/// Banner, title, underline.
pub(crate) fn header(title: &str) -> String {
    let bar = "=".repeat(title.len() + 9);
    let dash = "-".repeat(title.len() + 9);
    format!("\n{bar}\nWARNING: {title}\n{dash}\n")
}

fn lock_word(mode: Mode) -> &'static str {
    match mode {
        Mode::Write => "lock",
        Mode::Read | Mode::RecursiveRead => "rlock",
    }
}

/// The circular-dependency splat: `next` wanted while `prev` is held, and `path` is the
/// existing chain `next → … → prev`.
pub(crate) fn circular(
    thread: &str,
    next: &Held,
    prev: &Held,
    path: &[Step],
    held: &[Held],
    context: &str,
) -> String {
    let mut s = header("possible circular locking dependency detected");
    let _ = writeln!(s, "{thread} is trying to acquire lock:");
    let _ = writeln!(s, " {}", lock_line(next));
    let _ = writeln!(s, "\nbut task is already holding lock:");
    let _ = writeln!(s, " {}", lock_line(prev));
    if !context.is_empty() {
        let _ = writeln!(s, "\n{context}");
    }
    let _ = writeln!(s, "\nwhich lock already depends on the new lock.\n");
    let _ = writeln!(s, "\nthe existing dependency chain (in reverse order) is:");
    let depth = path.len();
    for (i, step) in path.iter().enumerate().rev() {
        let n = i + 1;
        let _ = writeln!(
            s,
            "\n-> #{n} ({}) [{}]:",
            class_text(step.to_class, step.to_sub),
            types_text(step.types)
        );
        let _ = writeln!(s, "       acquired at {}", step.next_at);
        let _ = writeln!(
            s,
            "       while holding ({}), acquired at {}",
            class_text(step.from_class, step.from_sub),
            step.prev_at
        );
    }
    let _ = writeln!(
        s,
        "\n-> #0 ({}):",
        class_text(next.class, next.how.subclass)
    );
    let _ = writeln!(s, "       acquiring at {}", next.at);
    let _ = writeln!(
        s,
        "       while holding ({}), acquired at {}",
        class_text(prev.class, prev.how.subclass),
        prev.at
    );
    let _ = writeln!(s, "\nother info that might help us debug this:\n");
    // The last path step is the edge into `prev`; its source is what CPU1 holds.
    let prev_name = class_text(prev.class, prev.how.subclass);
    let next_name = class_text(next.class, next.how.subclass);
    if let Some(last) = path.last() {
        let parent = class_text(last.from_class, last.from_sub);
        if depth > 1 {
            let mut chain = vec![next_name.clone()];
            chain.extend(path.iter().map(|st| class_text(st.to_class, st.to_sub)));
            let _ = writeln!(s, "Chain exists of:\n  {}\n", chain.join(" --> "));
        }
        let _ = writeln!(s, " Possible unsafe locking scenario:\n");
        let _ = writeln!(s, "       CPU0                    CPU1");
        let _ = writeln!(s, "       ----                    ----");
        let _ = writeln!(s, "  {}({prev_name});", lock_word(prev.how.mode));
        let _ = writeln!(s, "                               lock({parent});");
        let _ = writeln!(s, "                               lock({prev_name});");
        let _ = writeln!(s, "  {}({next_name});", lock_word(next.how.mode));
        let _ = writeln!(s, "\n *** DEADLOCK ***\n");
    }
    s.push_str(&held_text(thread, held));
    s
}

/// The recursive-locking (AA) splat.
pub(crate) fn recursive(thread: &str, next: &Held, prev: &Held, held: &[Held]) -> String {
    let mut s = header("possible recursive locking detected");
    let _ = writeln!(s, "{thread} is trying to acquire lock:");
    let _ = writeln!(s, " {}", lock_line(next));
    let _ = writeln!(s, "\nbut task is already holding lock:");
    let _ = writeln!(s, " {}", lock_line(prev));
    let _ = writeln!(s, "\nother info that might help us debug this:");
    let name = class_text(next.class, next.how.subclass);
    let _ = writeln!(s, " Possible unsafe locking scenario:\n");
    let _ = writeln!(s, "       CPU0");
    let _ = writeln!(s, "       ----");
    let _ = writeln!(s, "  {}({name});", lock_word(prev.how.mode));
    let _ = writeln!(s, "  {}({name});", lock_word(next.how.mode));
    let _ = writeln!(s, "\n *** DEADLOCK ***\n");
    let _ = writeln!(
        s,
        " May be due to missing lock nesting notation (a subclass or a nest lock)\n"
    );
    s.push_str(&held_text(thread, held));
    s
}

/// The bad-unlock splat.
pub(crate) fn bad_unlock(
    thread: &str,
    class: &LockClass,
    instance: usize,
    at: Loc,
    held: &[Held],
) -> String {
    let mut s = header("bad unlock balance detected!");
    let _ = writeln!(
        s,
        "{thread} is trying to release lock ({}) [instance {instance:#x}] at:\n{at}",
        class.name()
    );
    if held.is_empty() {
        let _ = writeln!(s, "but there are no more locks to release!");
    } else {
        let _ = writeln!(s, "but it does not hold that lock!");
    }
    let _ = writeln!(s, "\nother info that might help us debug this:");
    s.push_str(&held_text(thread, held));
    s
}

/// The splat for a thread that ends while holding locks.
pub(crate) fn held_at_exit(thread: &str, held: &[Held]) -> String {
    let mut s = header("lock held when thread exits!");
    let _ = writeln!(s, "{thread} is exiting with locks still held!\n");
    s.push_str(&held_text(thread, held));
    s
}

/// The splat for a failed `assert_held` / `assert_not_held`.
pub(crate) fn assert_failed(
    thread: &str,
    class: &LockClass,
    want_held: bool,
    at: Loc,
    held: &[Held],
) -> String {
    let mut s = header("lock assertion failed");
    let what = if want_held { "held" } else { "not held" };
    let _ = writeln!(
        s,
        "{thread} expected lock ({}) to be {what}, at:\n{at}\n",
        class.name()
    );
    s.push_str(&held_text(thread, held));
    s
}

/// A free-form splat (misuse found by a lock implementation, bad annotations).
pub(crate) fn generic(title: &str, thread: &str, detail: &str, at: Loc, held: &[Held]) -> String {
    let mut s = header(title);
    let _ = writeln!(s, "{thread} at {at}:");
    let detail = detail.trim_end();
    if !detail.is_empty() {
        let _ = writeln!(s, "{detail}");
    }
    let _ = writeln!(s);
    s.push_str(&held_text(thread, held));
    s
}
