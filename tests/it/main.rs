//! Integration tests, compiled as one binary (house rule 15c): they run the
//! real binaries in unique temp directories.

mod support;

mod server_process;
mod server_protocol;
mod server_scale;
