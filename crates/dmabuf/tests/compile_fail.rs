//! The locking convention, enforced by types: calls that need the reservation lock do not
//! compile without its guard, and guards cannot escape their lock or their thread.

#[test]
fn locking_convention_is_enforced_by_types() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

/// Compiles only when `T` is *not* `Send`: with a `Send` `T` both impls apply and the
/// call is ambiguous.
trait AmbiguousIfSend<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfSend<()> for T {}
impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}

#[test]
fn guards_stay_on_their_thread() {
    // A lock is released by the thread that took it.
    <dmabuf::resv::ResvGuard<'static> as AmbiguousIfSend<_>>::check();
    <dmabuf::ww::WwGuard<'static, u8> as AmbiguousIfSend<_>>::check();
    // A buffer's locked view borrows its guard mutably: it stays on the guard's thread.
    <dmabuf::buf::LockedBuf<'static, 'static> as AmbiguousIfSend<_>>::check();
}
