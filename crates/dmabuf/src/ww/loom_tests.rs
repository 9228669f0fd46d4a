//! Loom models of the wound/wait state machine.
