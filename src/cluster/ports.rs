//! Picking free loopback TCP ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// Ports already handed out by this process, so that instances started in
/// parallel never get the same one (the kernel may hand a just-released
/// ephemeral port out again).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process
/// has not handed out before. Another process can still take it before the
/// server binds it: callers retry with a new port when the start fails with
/// "Address already in use".
///
/// # Errors
/// The I/O error of binding `127.0.0.1:0`.
pub(crate) fn pick_free_port() -> std::io::Result<u16> {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    let mut port = 0;
    for _ in 0..64 {
        port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if !used.contains(&port) {
            break;
        }
    }
    used.insert(port);
    Ok(port)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_distinct() {
        let ports: std::collections::HashSet<u16> =
            (0..50).map(|_| super::pick_free_port().unwrap()).collect();
        assert_eq!(ports.len(), 50);
    }
}
