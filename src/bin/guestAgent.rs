//! guestAgent binary: the controller-side guest heartbeat broker. All the
//! work is in `guest_heartbeat::agent`; see `agent::run` for start-up.

fn main() {
    std::process::exit(guest_heartbeat::agent::run::main());
}
