//! The floor of a proxy on io_uring, next to `tokio_floor.rs`: the same
//! protocol-unaware TCP forwarder (a fresh backend connection per client,
//! bytes copied both ways) as one thread driving one io_uring ring
//! (accept, recv and send submitted as ring operations; one
//! `io_uring_enter` per loop turn submits and waits). Its instructions per
//! query show what issue 19's io_uring prototype could save against the
//! tokio floor. `benches/callgrind_fast_path.sh` runs it with `FLOOR=1`
//! when the `uring-floor` feature builds it.
//!
//! Usage: `uring_floor <listen port> <backend port>` (127.0.0.1).

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{opcode, types, IoUring};

/// Bytes per direction buffer.
const BUF: usize = 64 * 1024;
/// `user_data` of the accept operation.
const ACCEPT: u64 = u64::MAX;

/// One direction of a forwarded connection: read from `from`, write to `to`.
struct Pipe {
    from: RawFd,
    to: RawFd,
    buf: Vec<u8>,
    /// Bytes received and not yet sent.
    len: usize,
    /// Bytes of `len` already sent.
    sent: usize,
    /// The connection ended: completions still in flight are ignored.
    dead: bool,
}

/// `user_data`: pipe index * 2 + (0 = recv, 1 = send).
fn tag(pipe: usize, send: bool) -> u64 {
    (pipe as u64) << 1 | u64::from(send)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = |i: usize| -> u16 {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
            eprintln!("usage: uring_floor <listen port> <backend port>");
            std::process::exit(2)
        })
    };
    let (listen, backend) = (port(1), port(2));
    if let Err(e) = run(listen, backend) {
        eprintln!("uring_floor: {e}");
        std::process::exit(1);
    }
}

fn run(listen: u16, backend: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", listen))?;
    let mut ring = IoUring::new(256)?;
    let mut pipes: Vec<Pipe> = Vec::new();
    // Sockets are shut down when their connection ends and never closed,
    // so a completion still in flight never meets a reused fd number (a
    // benchmark runs a handful of connections).
    let mut sockets: HashMap<RawFd, TcpStream> = HashMap::new();
    let accept = opcode::Accept::new(
        types::Fd(listener.as_raw_fd()),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .build()
    .user_data(ACCEPT);
    push(&mut ring, &accept)?;
    eprintln!("uring_floor is ready on {listen}");
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            // A signal (e.g. valgrind's vgdb attaching): wait again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (data, res) in done {
            if data == ACCEPT {
                push(&mut ring, &accept)?;
                if res < 0 {
                    continue;
                }
                // SAFETY: the kernel returned a new, owned socket fd.
                let client = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(res) };
                let server = TcpStream::connect(("127.0.0.1", backend))?;
                client.set_nodelay(true)?;
                server.set_nodelay(true)?;
                let (c, s) = (client.as_raw_fd(), server.as_raw_fd());
                sockets.insert(c, client);
                sockets.insert(s, server);
                for (from, to) in [(c, s), (s, c)] {
                    pipes.push(Pipe {
                        from,
                        to,
                        buf: vec![0; BUF],
                        len: 0,
                        sent: 0,
                        dead: false,
                    });
                    let i = pipes.len() - 1;
                    push(&mut ring, &recv(&mut pipes[i], i))?;
                }
                continue;
            }
            let i = (data >> 1) as usize;
            let Some(p) = pipes.get_mut(i) else { continue };
            if p.dead {
                continue;
            }
            if res <= 0 {
                // End of stream or error: end both directions.
                let (a, b) = (p.from, p.to);
                for q in pipes.iter_mut().filter(|q| q.from == a || q.from == b) {
                    q.dead = true;
                }
                for fd in [a, b] {
                    if let Some(sock) = sockets.get(&fd) {
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                    }
                }
                continue;
            }
            if data & 1 == 0 {
                p.len = res as usize;
                p.sent = 0;
                let sqe = send(p, i);
                push(&mut ring, &sqe)?;
            } else {
                p.sent += res as usize;
                let sqe = if p.sent < p.len {
                    send(p, i)
                } else {
                    recv(p, i)
                };
                push(&mut ring, &sqe)?;
            }
        }
    }
}

fn recv(p: &mut Pipe, i: usize) -> io_uring::squeue::Entry {
    opcode::Recv::new(types::Fd(p.from), p.buf.as_mut_ptr(), BUF as u32)
        .build()
        .user_data(tag(i, false))
}

fn send(p: &mut Pipe, i: usize) -> io_uring::squeue::Entry {
    let rest = &p.buf[p.sent..p.len];
    opcode::Send::new(types::Fd(p.to), rest.as_ptr(), rest.len() as u32)
        .build()
        .user_data(tag(i, true))
}

fn push(ring: &mut IoUring, sqe: &io_uring::squeue::Entry) -> std::io::Result<()> {
    // SAFETY: every buffer an entry points at lives in `pipes` (never
    // dropped or moved while its operation is in flight: pipes only grow
    // and each buffer is a separate heap allocation).
    while unsafe { ring.submission().push(sqe) }.is_err() {
        ring.submit()?;
    }
    Ok(())
}
