//! The NETLINK_NETFILTER socket: sending batches, reading acknowledgements
//! and errors, and dumping what exists.
//!
//! Calls block (each is one `send` plus the replies), so async callers
//! should use `spawn_blocking`. A batch is processed by the kernel inside
//! the `send` call itself, so its replies are all queued when `send`
//! returns and are read without waiting.

use std::io;
use std::path::Path;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};

use super::batch::Batch;
use super::error::{Error, Failure};
use super::list::{self, ListedRule};
use super::objects::{Chain, Family, Table};
use super::set::{Set, SetElement};
use super::sys;
use super::wire::{self, Writer};

/// How often a dump is retried when the ruleset changed during it.
const DUMP_ATTEMPTS: usize = 10;
/// Receive buffer: room for many error replies of a refused batch.
const RECV_BUFFER: usize = 1 << 20;

/// A connection to nf_tables in one network namespace.
#[derive(Debug)]
pub struct Connection {
    socket: Socket,
    seq: u32,
    send_buffer: usize,
}

impl Connection {
    /// Opens a connection in the calling thread's network namespace.
    pub fn open() -> Result<Self, Error> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(Error::Socket)?;
        socket.bind_auto().map_err(Error::Socket)?;
        // Errors then carry only the failing message's header (not the
        // whole message back) plus the kernel's pointer to the bad attribute.
        socket.set_cap_ack(true).map_err(Error::Socket)?;
        if let Err(error) = socket.set_ext_ack(true) {
            tracing::debug!(%error, "nf_tables: no extended acks");
        }
        if setsockopt(&socket, sockopt::RcvBufForce, &RECV_BUFFER).is_err() {
            let _ = setsockopt(&socket, sockopt::RcvBuf, &RECV_BUFFER);
        }
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Connection {
            socket,
            seq,
            send_buffer: 0,
        })
    }

    /// Opens a connection in the network namespace at `path`
    /// (`/run/netns/NAME` or `/proc/PID/ns/net`). The socket stays in that
    /// namespace; the calling thread does not move.
    pub fn open_in_netns(path: impl AsRef<Path>) -> Result<Self, Error> {
        super::netns::run_in(path.as_ref(), Connection::open)
    }

    fn next_seq(&mut self, count: usize) -> u32 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(count as u32);
        seq
    }

    /// Applies the batch atomically: every change or none.
    ///
    /// On failure the error names each refused message (operation, object,
    /// errno, and the failing element or expression when the kernel points
    /// at it). An empty batch is a no-op.
    pub fn apply(&mut self, batch: &Batch) -> Result<(), Error> {
        if let Some(error) = batch.encode_error() {
            return Err(error);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let count = batch.len();
        let seq = self.next_seq(count + 2);
        let frame = batch.frame(seq);
        self.ensure_send_buffer(frame.len());
        self.discard_pending()?;
        let sent = self
            .socket
            .send_to(&frame, &SocketAddr::new(0, 0), 0)
            .map_err(Error::Io)?;
        if sent != frame.len() {
            return Err(Error::Protocol(format!(
                "sent {sent} of {} bytes",
                frame.len()
            )));
        }

        let last = seq.wrapping_add(count as u32);
        let mut failures = Vec::new();
        let mut batch_errno = None;
        let mut acknowledged = false;
        let mut lost = false;
        self.socket.set_non_blocking(true).map_err(Error::Io)?;
        let result = loop {
            let data = match self.socket.recv_from_full() {
                Ok((data, _)) => data,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    lost = true;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(Error::Io(e)),
            };
            for message in wire::messages(&data) {
                if message.msg_type != sys::NLMSG_ERROR {
                    continue;
                }
                let Some(reply) = ErrorReply::parse(&message) else {
                    continue;
                };
                let index = message.seq.wrapping_sub(seq);
                if message.seq == seq {
                    batch_errno = reply.errno;
                } else if (1..=count as u32).contains(&index) {
                    let Some(errno) = reply.errno else {
                        acknowledged |= message.seq == last;
                        continue;
                    };
                    let index = (index - 1) as usize;
                    let info = &batch.messages()[index];
                    let detail = reply
                        .offset
                        .and_then(|offset| batch.describe_offset(index, offset))
                        .into_iter()
                        .chain(reply.message)
                        .reduce(|a, b| format!("{a}: {b}"));
                    failures.push(Failure {
                        operation: info.operation,
                        object: info.object.clone(),
                        errno,
                        detail,
                    });
                }
            }
        };
        self.socket.set_non_blocking(false).map_err(Error::Io)?;
        result?;

        if let Some(errno) = batch_errno {
            return Err(match (errno, batch.generation()) {
                (Errno::ERESTART, Some(expected)) => Error::GenerationChanged { expected },
                _ => Error::Batch { errno },
            });
        }
        if !failures.is_empty() {
            return Err(Error::Rejected { failures });
        }
        if lost {
            return Err(Error::Protocol(
                "replies lost (receive buffer overflow); the batch may not be applied".into(),
            ));
        }
        if !acknowledged {
            return Err(Error::Protocol(
                "the kernel did not acknowledge the batch".into(),
            ));
        }
        Ok(())
    }

    /// Makes sure one `send` can carry `len` bytes: the whole batch must
    /// reach the kernel in a single datagram.
    fn ensure_send_buffer(&mut self, len: usize) {
        // The kernel refuses datagrams larger than the buffer minus 32.
        let needed = len + 4096;
        if needed <= self.send_buffer || needed <= 200_000 {
            return;
        }
        // The kernel doubles the value; FORCE passes net.core.wmem_max.
        if setsockopt(&self.socket, sockopt::SndBufForce, &needed).is_err() {
            let _ = setsockopt(&self.socket, sockopt::SndBuf, &needed);
        }
        self.send_buffer = needed;
    }

    /// Drops replies left over from an earlier request.
    fn discard_pending(&mut self) -> Result<(), Error> {
        self.socket.set_non_blocking(true).map_err(Error::Io)?;
        let result = loop {
            match self.socket.recv_from_full() {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(Error::Io(e)),
            }
        };
        self.socket.set_non_blocking(false).map_err(Error::Io)?;
        result
    }

    /// The ruleset's generation: it changes with every committed batch.
    /// Pass it to [`Batch::expect_generation`] to apply a diff computed
    /// from listings only if nobody changed the ruleset in between.
    pub fn generation(&mut self) -> Result<u32, Error> {
        let seq = self.next_seq(1);
        let mut request = Vec::with_capacity(20);
        let mut w = Writer::new(&mut request);
        let start = w.begin_message(
            message_type(sys::NFT_MSG_GETGEN),
            sys::NLM_F_REQUEST,
            seq,
            0,
            0,
        );
        w.end_message(start);
        self.send(&request)?;
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(Error::Io)?;
            for message in wire::messages(&data) {
                if message.seq != seq {
                    continue;
                }
                if message.msg_type == sys::NLMSG_ERROR {
                    let errno = ErrorReply::parse(&message)
                        .map(|r| r.errno)
                        .unwrap_or(Some(Errno::EPROTO));
                    if let Some(errno) = errno {
                        return Err(Error::Dump {
                            what: "the generation".into(),
                            errno,
                        });
                    }
                }
                if message.msg_type == message_type(sys::NFT_MSG_NEWGEN) {
                    return list::generation(message.payload)
                        .ok_or_else(|| Error::Protocol("generation reply without an id".into()));
                }
            }
        }
    }

    /// Tables of one family, or of all families.
    pub fn list_tables(&mut self, family: Option<Family>) -> Result<Vec<Table>, Error> {
        self.dump(
            sys::NFT_MSG_GETTABLE,
            family,
            "tables",
            |_| Ok(()),
            |payload, out| out.extend(list::table(payload)),
        )
    }

    /// The chains of a table.
    pub fn list_chains(&mut self, table: &Table) -> Result<Vec<Chain>, Error> {
        let chains = self.dump(
            sys::NFT_MSG_GETCHAIN,
            Some(table.family),
            &format!("chains of {table}"),
            |w| w.str(sys::NFTA_CHAIN_TABLE, &table.name),
            |payload, out| out.extend(list::chain(payload)),
        )?;
        Ok(chains
            .into_iter()
            .filter(|c| c.table == table.name)
            .collect())
    }

    /// The named sets and maps of a table.
    pub fn list_sets(&mut self, table: &Table) -> Result<Vec<Set>, Error> {
        let sets = self.dump(
            sys::NFT_MSG_GETSET,
            Some(table.family),
            &format!("sets of {table}"),
            |w| w.str(sys::NFTA_SET_TABLE, &table.name),
            |payload, out| out.extend(list::set(payload)),
        )?;
        Ok(sets.into_iter().filter(|s| s.table == table.name).collect())
    }

    /// The elements of a set, decoded with `set`'s key and value types
    /// (take `set` from [`Self::list_sets`] to use the live definition).
    pub fn list_elements(&mut self, set: &Set) -> Result<Vec<SetElement>, Error> {
        self.dump(
            sys::NFT_MSG_GETSETELEM,
            Some(set.family),
            &format!("elements of {set}"),
            |w| {
                w.str(sys::NFTA_SET_ELEM_LIST_TABLE, &set.table)?;
                w.str(sys::NFTA_SET_ELEM_LIST_SET, &set.name)
            },
            |payload, out| list::elements(set, payload, out),
        )
    }

    /// The rules of a table (of one chain if given), in chain order, with
    /// their handles.
    pub fn list_rules(
        &mut self,
        table: &Table,
        chain: Option<&str>,
    ) -> Result<Vec<ListedRule>, Error> {
        let what = match chain {
            Some(chain) => format!("rules of chain {} {} {chain}", table.family, table.name),
            None => format!("rules of {table}"),
        };
        self.dump(
            sys::NFT_MSG_GETRULE,
            Some(table.family),
            &what,
            |w| {
                w.str(sys::NFTA_RULE_TABLE, &table.name)?;
                match chain {
                    Some(chain) => w.str(sys::NFTA_RULE_CHAIN, chain),
                    None => Ok(()),
                }
            },
            |payload, out| out.extend(list::rule(payload)),
        )
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.socket
            .send_to(bytes, &SocketAddr::new(0, 0), 0)
            .map(|_| ())
            .map_err(Error::Io)
    }

    /// Runs one dump request, retrying when the kernel reports that the
    /// ruleset changed while it was being dumped.
    fn dump<T>(
        &mut self,
        msg: u8,
        family: Option<Family>,
        what: &str,
        attrs: impl Fn(&mut Writer<'_>) -> Result<(), wire::TooLarge>,
        decode: impl Fn(&[u8], &mut Vec<T>),
    ) -> Result<Vec<T>, Error> {
        let mut request = Vec::with_capacity(128);
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.next_seq(1);
            request.clear();
            let mut w = Writer::new(&mut request);
            let start = w.begin_message(
                message_type(msg),
                sys::NLM_F_REQUEST | sys::NLM_F_DUMP,
                seq,
                family.map(Family::nfproto).unwrap_or(0),
                0,
            );
            attrs(&mut w).map_err(|_| Error::Protocol(format!("{what}: name too long")))?;
            w.end_message(start);
            self.send(&request)?;

            let mut out = Vec::new();
            let mut interrupted = false;
            'reading: loop {
                let (data, _) = self.socket.recv_from_full().map_err(Error::Io)?;
                for message in wire::messages(&data) {
                    if message.seq != seq {
                        continue;
                    }
                    interrupted |= message.flags & sys::NLM_F_DUMP_INTR != 0;
                    match message.msg_type {
                        sys::NLMSG_DONE => break 'reading,
                        sys::NLMSG_ERROR => {
                            let errno = ErrorReply::parse(&message)
                                .map(|r| r.errno)
                                .unwrap_or(Some(Errno::EPROTO));
                            let Some(errno) = errno else {
                                break 'reading; // an ACK
                            };
                            if errno == Errno::EINTR {
                                interrupted = true;
                                break 'reading;
                            }
                            return Err(Error::Dump {
                                what: what.to_string(),
                                errno,
                            });
                        }
                        _ => decode(message.payload, &mut out),
                    }
                }
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(Error::Dump {
            what: what.to_string(),
            errno: Errno::EINTR,
        })
    }
}

fn message_type(msg: u8) -> u16 {
    (sys::NFNL_SUBSYS_NFTABLES << 8) | msg as u16
}

/// An `NLMSG_ERROR` reply: the errno (`None` for an ACK) and the
/// extended-ack details.
struct ErrorReply {
    errno: Option<Errno>,
    message: Option<String>,
    /// Offset of the bad attribute in the original message.
    offset: Option<usize>,
}

impl ErrorReply {
    fn parse(message: &wire::Message<'_>) -> Option<ErrorReply> {
        let payload = message.payload;
        let error = i32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?);
        let original_len = wire::ne_u32(payload.get(4..8)?)? as usize;
        let tlvs = if message.flags & sys::NLM_F_CAPPED != 0 {
            4 + sys::NLMSG_HDRLEN
        } else {
            4 + wire::align(original_len)
        };
        let mut reply = ErrorReply {
            errno: (error != 0).then(|| Errno::from_raw(-error)),
            message: None,
            offset: None,
        };
        if message.flags & sys::NLM_F_ACK_TLVS != 0 {
            for (t, value) in wire::attrs(payload.get(tlvs..).unwrap_or_default()) {
                match t {
                    sys::NLMSGERR_ATTR_MSG => reply.message = Some(wire::string(value)),
                    sys::NLMSGERR_ATTR_OFFS => {
                        reply.offset = wire::ne_u32(value).map(|o| o as usize)
                    }
                    _ => {}
                }
            }
        }
        Some(reply)
    }
}
