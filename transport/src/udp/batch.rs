//! Batched UDP IO: many datagrams per system call each way, with no
//! allocation per datagram.
//!
//! A [`RecvBatch`] receives up to its capacity of datagrams with one
//! `recvmmsg(2)` into buffers allocated once; a [`SendBatch`] gathers
//! datagrams for any number of destinations into one byte arena and sends
//! them with `sendmmsg(2)`, as many per call as the kernel takes. Both can
//! carry the local address of each datagram (`IP_PKTINFO` /
//! `IPV6_PKTINFO`): received, the address it was sent to; sent, the source
//! address to use. That lets one socket bound to the wildcard address speak
//! for thousands of loopback addresses (`127.x.y.z`), which is how the load
//! generator runs thousands of raw UDP clients over one socket.
//!
//! Why not a crate: `quinn-udp` receives with `recvmmsg` but sends one
//! `sendmsg` per destination (GSO only merges datagrams to one destination,
//! and a shard sends each snapshot to a different client), and `nix`'s
//! `sendmmsg` applies one set of control messages to every message and
//! allocates on each call. The system calls are wrapped here, in one module,
//! over `libc`; elsewhere (not Linux) the same API falls back to one
//! `send_to` / `recv_from` per datagram.
//!
//! Both calls expect a non-blocking socket and return
//! [`std::io::ErrorKind::WouldBlock`] when nothing could be moved, so a tokio
//! driver wraps them in `UdpSocket::try_io`.

use std::io;
use std::net::{IpAddr, SocketAddr};

/// Largest datagram a [`RecvBatch`] slot holds by default: above any rally
/// packet (the 256-byte request, 1 KiB control segments), below a jumbo frame.
pub const DEFAULT_SLOT: usize = 2048;

/// Where one queued datagram lies in a [`SendBatch`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    dest: SocketAddr,
    src: Option<IpAddr>,
    start: usize,
    len: usize,
}

/// Datagrams to send, for any destinations, in one arena. Reused: [`Self::clear`]
/// keeps the allocations.
#[derive(Debug, Default)]
pub struct SendBatch {
    data: Vec<u8>,
    entries: Vec<Entry>,
    /// Entries before this one were sent (or dropped) already.
    cursor: usize,
    scratch: sys::SendScratch,
}

impl SendBatch {
    /// An empty batch with room for `datagrams` of `bytes` in all before it grows.
    pub fn with_capacity(datagrams: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            entries: Vec::with_capacity(datagrams),
            cursor: 0,
            scratch: sys::SendScratch::default(),
        }
    }

    /// Queues one datagram made of `parts` (copied, one after the other) for
    /// `dest`, sent from local address `src` when given (the socket's own address otherwise).
    pub fn push(&mut self, dest: SocketAddr, src: Option<IpAddr>, parts: &[&[u8]]) {
        let start = self.data.len();
        for part in parts {
            self.data.extend_from_slice(part);
        }
        self.entries.push(Entry { dest, src, start, len: self.data.len() - start });
    }

    /// Datagrams queued and not yet sent.
    pub fn pending(&self) -> usize {
        self.entries.len() - self.cursor
    }

    /// Whether nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// Forgets every datagram, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.entries.clear();
        self.cursor = 0;
    }

    /// The `idx`-th pending datagram: its destination and bytes.
    pub fn get(&self, idx: usize) -> Option<(SocketAddr, &[u8])> {
        let entry = self.entries.get(self.cursor + idx)?;
        Some((entry.dest, &self.data[entry.start..entry.start + entry.len]))
    }
}

/// What one [`send_batch`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel took.
    pub datagrams: usize,
    /// Datagrams refused with an error other than a full buffer (too large,
    /// an unusable source address, an unreachable destination) and skipped.
    pub refused: usize,
    /// System calls made.
    pub calls: usize,
}

/// Sends what `batch` holds until it is empty or the socket's buffer is full
/// (then the rest stays queued for the next call). Returns what was moved;
/// [`io::ErrorKind::WouldBlock`] only if nothing could be.
pub fn send_batch(socket: &std::net::UdpSocket, batch: &mut SendBatch) -> io::Result<Sent> {
    let mut sent = Sent::default();
    while !batch.is_empty() {
        match sys::send(socket, batch) {
            Ok(count) => {
                sent.calls += 1;
                sent.datagrams += count;
                batch.cursor += count;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                if sent.datagrams + sent.refused == 0 {
                    return Err(err);
                }
                break;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // The first pending datagram was refused on its own merits: skip it.
                sent.calls += 1;
                sent.refused += 1;
                batch.cursor += 1;
            }
        }
    }
    if batch.is_empty() {
        batch.clear();
    }
    Ok(sent)
}

/// One received datagram, borrowed from its [`RecvBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    /// Who sent it.
    pub from: SocketAddr,
    /// The local address it was sent to, when [`enable_local_addresses`] was
    /// called on the socket (and the platform reports it).
    pub to: Option<IpAddr>,
    /// Its bytes.
    pub bytes: &'a [u8],
    /// It was larger than a slot and cut short (or otherwise unusable): drop it.
    pub truncated: bool,
}

/// Buffers for up to `capacity` received datagrams, allocated once.
#[derive(Debug)]
pub struct RecvBatch {
    slot: usize,
    buffers: Vec<u8>,
    meta: Vec<(SocketAddr, Option<IpAddr>, usize, bool)>,
    scratch: sys::RecvScratch,
}

impl RecvBatch {
    /// Room for `capacity` datagrams of up to `slot` bytes each.
    pub fn new(capacity: usize, slot: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            slot,
            buffers: vec![0; capacity * slot],
            meta: Vec::with_capacity(capacity),
            scratch: sys::RecvScratch::new(capacity),
        }
    }

    /// Datagrams received by the last [`recv_batch`].
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Whether the last [`recv_batch`] received nothing.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Most datagrams one call receives.
    pub fn capacity(&self) -> usize {
        self.buffers.len() / self.slot.max(1)
    }

    /// The `idx`-th datagram of the last [`recv_batch`].
    pub fn get(&self, idx: usize) -> Option<Received<'_>> {
        let &(from, to, len, truncated) = self.meta.get(idx)?;
        let start = idx * self.slot;
        Some(Received { from, to, bytes: &self.buffers[start..start + len], truncated })
    }

    /// Every datagram of the last [`recv_batch`], in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = Received<'_>> {
        (0..self.len()).filter_map(|idx| self.get(idx))
    }
}

/// Receives as many datagrams as are waiting, up to the batch's capacity, in
/// one system call where the platform allows. [`io::ErrorKind::WouldBlock`]
/// when none is waiting.
pub fn recv_batch(socket: &std::net::UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    batch.meta.clear();
    loop {
        match sys::recv(socket, batch) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Asks the kernel to report each received datagram's local (destination)
/// address and to accept a source address per sent datagram
/// (`IP_PKTINFO`, and `IPV6_RECVPKTINFO` on IPv6 sockets). Without it,
/// [`Received::to`] is `None`; sending with a source address works either way on Linux.
pub fn enable_local_addresses(socket: &std::net::UdpSocket) -> io::Result<()> {
    sys::enable_pktinfo(socket)
}

/// Sets the don't-fragment bit on everything the socket sends and ignores
/// path MTU discovery (`IP_MTU_DISCOVER` = `IP_PMTUDISC_PROBE`, as quinn does
/// for QUIC). rally's datagrams are far below any MTU, and Linux numbers
/// every datagram without DF from a shared, hashed counter
/// (`__ip_select_ident`), a measurable share of a loopback send; with DF it
/// skips that. IPv4 sockets only; elsewhere a no-op.
pub fn set_dont_fragment(socket: &std::net::UdpSocket) -> io::Result<()> {
    sys::dont_fragment(socket)
}

#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "recvmmsg/sendmmsg with per-message control messages have no safe wrapper (see the module docs)"
)]
mod sys {
    //! The Linux system calls. Every pointer written into the scratch headers
    //! points into the batch that is borrowed for the duration of the call,
    //! and the headers are rebuilt at the start of every call, so none is
    //! ever used after the buffers it names could have moved.

    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use super::{RecvBatch, SendBatch};

    /// Most datagrams handed to one `sendmmsg` (the kernel's UIO_MAXIOV bound is 1024).
    const SEND_CHUNK: usize = 256;
    /// Control-message room per datagram: one `in6_pktinfo` (the larger of the two), aligned.
    const CMSG_ROOM: usize = 64;

    /// Headers, addresses and control buffers for one `sendmmsg` or `recvmmsg` call.
    pub(super) struct Scratch {
        headers: Vec<libc::mmsghdr>,
        iovecs: Vec<libc::iovec>,
        addrs: Vec<libc::sockaddr_storage>,
        cmsgs: Vec<[u64; CMSG_ROOM / 8]>,
    }

    /// A send batch's scratch: room for one [`SEND_CHUNK`].
    pub(super) type SendScratch = Scratch;
    /// A receive batch's scratch: room for its capacity.
    pub(super) type RecvScratch = Scratch;

    // SAFETY: the raw pointers inside the headers are rewritten before every
    // call and only dereferenced by the kernel during it (see the module docs);
    // between calls they are inert data.
    unsafe impl Send for Scratch {}
    unsafe impl Sync for Scratch {}

    impl std::fmt::Debug for Scratch {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Scratch").field("capacity", &self.headers.len()).finish()
        }
    }

    impl Default for Scratch {
        fn default() -> Self {
            Self::new(SEND_CHUNK)
        }
    }

    impl Scratch {
        pub(super) fn new(capacity: usize) -> Self {
            // SAFETY: these C structs are plain data for which all-zero bytes are valid.
            unsafe {
                Self {
                    headers: vec![zeroed(); capacity],
                    iovecs: vec![zeroed(); capacity],
                    addrs: vec![zeroed(); capacity],
                    cmsgs: vec![[0; CMSG_ROOM / 8]; capacity],
                }
            }
        }
    }

    /// Writes `addr` into `storage`; returns its length.
    fn write_addr(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_storage is large enough and aligned for any sockaddr.
                let sin = unsafe { &mut *std::ptr::from_mut(storage).cast::<libc::sockaddr_in>() };
                *sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                    sin_zero: [0; 8],
                };
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(v6) => {
                // SAFETY: as above.
                let sin6 = unsafe { &mut *std::ptr::from_mut(storage).cast::<libc::sockaddr_in6>() };
                *sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo(),
                    sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                    sin6_scope_id: v6.scope_id(),
                };
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    fn read_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in (family says so).
                let sin = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 (family says so).
                let sin6 = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Writes a pktinfo control message asking for source `src` into `buf`; returns its length.
    fn write_source(src: IpAddr, buf: &mut [u64; CMSG_ROOM / 8], header: &mut libc::msghdr) -> usize {
        header.msg_control = buf.as_mut_ptr().cast();
        header.msg_controllen = CMSG_ROOM as _;
        // SAFETY: msg_control points at CMSG_ROOM aligned bytes, enough for one
        // cmsghdr with an in6_pktinfo (CMSG_SPACE(20) = 40 on 64-bit Linux).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(header);
            match src {
                IpAddr::V4(ip) => {
                    (*cmsg).cmsg_level = libc::IPPROTO_IP;
                    (*cmsg).cmsg_type = libc::IP_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr { s_addr: u32::from(ip).to_be() },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>(), info);
                    libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize
                }
                IpAddr::V6(ip) => {
                    (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                    (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                    let info =
                        libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: ip.octets() }, ipi6_ifindex: 0 };
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>(), info);
                    libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize
                }
            }
        }
    }

    /// One `sendmmsg` of up to [`SEND_CHUNK`] pending datagrams; the count the kernel took.
    pub(super) fn send(socket: &std::net::UdpSocket, batch: &mut SendBatch) -> io::Result<usize> {
        let count = batch.pending().min(SEND_CHUNK);
        let SendBatch { data, entries, cursor, scratch } = batch;
        for (idx, entry) in entries[*cursor..*cursor + count].iter().enumerate() {
            scratch.iovecs[idx] = libc::iovec { iov_base: data[entry.start..].as_mut_ptr().cast(), iov_len: entry.len };
            let addr_len = write_addr(entry.dest, &mut scratch.addrs[idx]);
            // SAFETY: all-zero is a valid msghdr.
            let mut header: libc::msghdr = unsafe { zeroed() };
            header.msg_name = std::ptr::from_mut(&mut scratch.addrs[idx]).cast();
            header.msg_namelen = addr_len;
            header.msg_iov = &raw mut scratch.iovecs[idx];
            header.msg_iovlen = 1;
            if let Some(src) = entry.src {
                header.msg_controllen = write_source(src, &mut scratch.cmsgs[idx], &mut header) as _;
            }
            scratch.headers[idx] = libc::mmsghdr { msg_hdr: header, msg_len: 0 };
        }
        // SAFETY: `count` headers were just written, each naming live buffers of
        // `batch`, which stays borrowed until the call returns.
        let sent = unsafe {
            libc::sendmmsg(socket.as_raw_fd(), scratch.headers.as_mut_ptr(), count as u32, libc::MSG_DONTWAIT)
        };
        if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(sent as usize) }
    }

    /// One `recvmmsg` into the batch's slots.
    pub(super) fn recv(socket: &std::net::UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        let capacity = batch.capacity();
        let RecvBatch { slot, buffers, meta, scratch } = batch;
        for idx in 0..capacity {
            scratch.iovecs[idx] = libc::iovec { iov_base: buffers[idx * *slot..].as_mut_ptr().cast(), iov_len: *slot };
            // SAFETY: all-zero is a valid msghdr.
            let mut header: libc::msghdr = unsafe { zeroed() };
            header.msg_name = std::ptr::from_mut(&mut scratch.addrs[idx]).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &raw mut scratch.iovecs[idx];
            header.msg_iovlen = 1;
            header.msg_control = scratch.cmsgs[idx].as_mut_ptr().cast();
            header.msg_controllen = CMSG_ROOM as _;
            scratch.headers[idx] = libc::mmsghdr { msg_hdr: header, msg_len: 0 };
        }
        // SAFETY: `capacity` headers name live buffers of `batch`, borrowed for the call.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                scratch.headers.as_mut_ptr(),
                capacity as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        for idx in 0..received as usize {
            let header = &scratch.headers[idx];
            // A source that is neither IPv4 nor IPv6 cannot come from a UDP
            // socket; were it to, the datagram is marked unusable rather than lost from the count.
            let from = read_addr(&scratch.addrs[idx]);
            let unusable = from.is_none() || header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let from = from.unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
            let len = (header.msg_len as usize).min(*slot);
            meta.push((from, local_address(&header.msg_hdr), len, unusable));
        }
        Ok(meta.len())
    }

    /// The pktinfo control message's destination address, if the kernel wrote one.
    fn local_address(header: &libc::msghdr) -> Option<IpAddr> {
        // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG
        // macros walk only within it.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(header);
            while !cmsg.is_null() {
                match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        let info = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>());
                        return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                        let info = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>());
                        return Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                    }
                    _ => cmsg = libc::CMSG_NXTHDR(header, cmsg),
                }
            }
        }
        None
    }

    pub(super) fn dont_fragment(socket: &std::net::UdpSocket) -> io::Result<()> {
        if !socket.local_addr()?.is_ipv4() {
            return Ok(());
        }
        set_int(socket, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_PROBE)
    }

    fn set_int(
        socket: &std::net::UdpSocket,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: a valid fd, and a pointer to a c_int of the size given.
        let status = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if status == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    pub(super) fn enable_pktinfo(socket: &std::net::UdpSocket) -> io::Result<()> {
        match socket.local_addr()? {
            SocketAddr::V4(_) => set_int(socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1),
            SocketAddr::V6(_) => set_int(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1),
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! The portable fallback: one system call per datagram, no local addresses.

    use std::io;

    use super::{RecvBatch, SendBatch};

    #[derive(Debug, Default)]
    pub(super) struct SendScratch;

    #[derive(Debug)]
    pub(super) struct RecvScratch;

    impl RecvScratch {
        pub(super) fn new(_capacity: usize) -> Self {
            Self
        }
    }

    pub(super) fn send(socket: &std::net::UdpSocket, batch: &mut SendBatch) -> io::Result<usize> {
        let (dest, bytes) = batch.get(0).ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        socket.send_to(bytes, dest).map(|_| 1)
    }

    pub(super) fn recv(socket: &std::net::UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        let capacity = batch.capacity();
        let RecvBatch { slot, buffers, meta, .. } = batch;
        while meta.len() < capacity {
            let idx = meta.len();
            match socket.recv_from(&mut buffers[idx * *slot..(idx + 1) * *slot]) {
                Ok((len, from)) => meta.push((from, None, len, false)),
                Err(err) if meta.is_empty() => return Err(err),
                Err(_) => break,
            }
        }
        Ok(meta.len())
    }

    pub(super) fn enable_pktinfo(_socket: &std::net::UdpSocket) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn dont_fragment(_socket: &std::net::UdpSocket) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, UdpSocket};
    use std::time::{Duration, Instant};

    use super::*;

    fn socket(addr: &str) -> UdpSocket {
        let socket = UdpSocket::bind(addr).expect("bind");
        socket.set_nonblocking(true).expect("non-blocking");
        socket
    }

    /// Receives into `batch` until `want` datagrams arrived in all (or 5 s passed),
    /// handing each batch to `each`.
    fn receive_all(socket: &UdpSocket, batch: &mut RecvBatch, want: usize, mut each: impl FnMut(Received<'_>)) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = 0;
        while got < want && Instant::now() < deadline {
            match recv_batch(socket, batch) {
                Ok(_) => {
                    got += batch.len();
                    batch.iter().for_each(&mut each);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(err) => panic!("recv: {err}"),
            }
        }
        assert_eq!(got, want, "datagrams received");
    }

    #[test]
    fn many_destinations_in_one_batch_arrive_whole_and_in_order() {
        let receivers: Vec<UdpSocket> = (0..4).map(|_| socket("127.0.0.1:0")).collect();
        let sender = socket("127.0.0.1:0");
        // 200 per receiver: the default receive buffer holds about 270 small datagrams.
        let mut batch = SendBatch::with_capacity(800, 16_000);
        for idx in 0..800u32 {
            let dest = receivers[idx as usize % 4].local_addr().unwrap();
            batch.push(dest, None, &[&[4], &idx.to_le_bytes()]);
        }
        let mut sent = Sent::default();
        while !batch.is_empty() {
            match send_batch(&sender, &mut batch) {
                Ok(more) => {
                    sent.datagrams += more.datagrams;
                    sent.calls += more.calls;
                    sent.refused += more.refused;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(err) => panic!("send: {err}"),
            }
        }
        assert_eq!((sent.datagrams, sent.refused), (800, 0));
        #[cfg(target_os = "linux")]
        assert!(sent.calls <= 800 / 256 + 4, "batched: {} calls for 800 datagrams", sent.calls);
        let mut recv = RecvBatch::new(64, DEFAULT_SLOT);
        for (which, receiver) in receivers.iter().enumerate() {
            let mut next = which as u32;
            receive_all(receiver, &mut recv, 200, |received| {
                assert_eq!(received.from, sender.local_addr().unwrap());
                assert!(!received.truncated);
                assert_eq!(received.bytes[0], 4);
                assert_eq!(u32::from_le_bytes(received.bytes[1..5].try_into().unwrap()), next, "in order");
                next += 4;
            });
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn one_wildcard_socket_speaks_for_many_loopback_addresses() {
        // The load generator's trick: each client its own 127.x address on one socket.
        let server = socket("127.0.0.1:0");
        let swarm = socket("0.0.0.0:0");
        enable_local_addresses(&swarm).expect("pktinfo");
        set_dont_fragment(&swarm).expect("don't fragment");
        set_dont_fragment(&server).expect("don't fragment");
        let swarm_port = swarm.local_addr().unwrap().port();
        let clients: Vec<Ipv4Addr> = (1..=200u32).map(|n| Ipv4Addr::new(127, 3, (n >> 8) as u8, n as u8)).collect();
        let mut batch = SendBatch::default();
        for (idx, &ip) in clients.iter().enumerate() {
            batch.push(server.local_addr().unwrap(), Some(IpAddr::V4(ip)), &[&(idx as u16).to_le_bytes()]);
        }
        let sent = send_batch(&swarm, &mut batch).expect("send");
        assert_eq!(sent.datagrams, 200);
        // The server sees 200 distinct sources, and answers each.
        let mut recv = RecvBatch::new(32, DEFAULT_SLOT);
        let mut answers = SendBatch::default();
        receive_all(&server, &mut recv, 200, |received| {
            let idx = u16::from_le_bytes(received.bytes.try_into().unwrap());
            assert_eq!(received.from, SocketAddr::from((clients[usize::from(idx)], swarm_port)));
            assert_eq!(received.to, None, "pktinfo not enabled on the server");
            answers.push(received.from, None, &[received.bytes]);
        });
        send_batch(&server, &mut answers).expect("answers");
        // The swarm learns from each answer's destination which client it is for.
        let mut seen = [false; 200];
        receive_all(&swarm, &mut recv, 200, |received| {
            let idx = usize::from(u16::from_le_bytes(received.bytes.try_into().unwrap()));
            assert_eq!(received.to, Some(IpAddr::V4(clients[idx])));
            seen[idx] = true;
        });
        assert!(seen.iter().all(|&seen| seen));
    }

    #[test]
    fn an_oversized_datagram_is_marked_truncated_and_a_bad_one_is_skipped() {
        let receiver = socket("127.0.0.1:0");
        let sender = socket("127.0.0.1:0");
        let mut batch = SendBatch::default();
        batch.push(receiver.local_addr().unwrap(), None, &[&[7u8; 100]]);
        // Larger than any UDP datagram: refused by the kernel, skipped, the rest still sent.
        batch.push(receiver.local_addr().unwrap(), None, &[&vec![0u8; 70_000]]);
        batch.push(receiver.local_addr().unwrap(), None, &[b"after"]);
        let sent = send_batch(&sender, &mut batch).expect("send");
        assert_eq!((sent.datagrams, sent.refused), (2, 1));
        assert!(batch.is_empty());
        let mut recv = RecvBatch::new(8, 64);
        let mut got = Vec::new();
        receive_all(&receiver, &mut recv, 2, |received| got.push((received.bytes.to_vec(), received.truncated)));
        assert_eq!(got, vec![(vec![7u8; 64], true), (b"after".to_vec(), false)]);
    }

    #[test]
    fn nothing_waiting_is_would_block_and_buffers_are_reused() {
        let receiver = socket("127.0.0.1:0");
        let mut recv = RecvBatch::new(4, 64);
        let err = recv_batch(&receiver, &mut recv).expect_err("nothing sent");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(recv.is_empty());
        let mut batch = SendBatch::with_capacity(4, 64);
        let sender = socket("127.0.0.1:0");
        for round in 0..3u8 {
            batch.push(receiver.local_addr().unwrap(), None, &[&[round]]);
            send_batch(&sender, &mut batch).expect("send");
            assert!(batch.is_empty() && batch.data.is_empty() && batch.data.capacity() >= 64, "cleared, kept");
            receive_all(&receiver, &mut recv, 1, |received| assert_eq!(received.bytes, [round]));
        }
    }
}
