//! The kernel parsers on crafted packets, through `BPF_PROG_TEST_RUN` (root only; skipped with a
//! printed reason otherwise). Every run must return the allow verdict, and each packet must bump
//! exactly the counters and send exactly the events it justifies.
mod dns;
mod harness;
mod http;
mod packets;
