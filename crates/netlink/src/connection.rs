//! The rtnetlink connection every link, address, route and neighbour
//! operation goes through, bound to one network namespace.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;

use crate::error::{Error, Result, netlink_io_error};
use crate::netns::NetNs;

/// An rtnetlink connection to one network namespace.
///
/// Cloning is cheap and clones share the connection. The socket closes when
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    netns: Option<PathBuf>,
}

impl Netlink {
    /// A connection to the caller's network namespace. Must be called from
    /// inside a tokio runtime, which drives the connection.
    pub fn connect() -> Result<Netlink> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|error| Error::Netlink {
                action: "opening",
                object: "an rtnetlink socket".into(),
                netns: None,
                error,
            })?;
        tokio::spawn(connection);
        Ok(Netlink {
            handle,
            netns: None,
        })
    }

    /// A connection to the namespace `netns`. The socket is opened by a
    /// dedicated thread that enters the namespace, opens it, and goes back;
    /// the same thread then drives the connection until the last clone of
    /// the returned handle is dropped. Works from any async runtime.
    pub async fn connect_in(netns: &NetNs) -> Result<Netlink> {
        let target = netns.try_clone()?;
        let path = target.path().to_owned();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("netlink-netns".into())
            .spawn(move || match open_in(&target) {
                Ok((connection, runtime, handle)) => {
                    if sender.send(Ok(handle)).is_ok() {
                        // The socket is registered with `runtime`'s reactor,
                        // so this thread drives it until the handles go.
                        runtime.block_on(connection);
                    }
                }
                Err(error) => {
                    let _ = sender.send(Err(error));
                }
            })
            .map_err(|error| Error::Namespace {
                action: "starting a netlink thread for",
                path: path.clone(),
                error,
            })?;
        let handle = receiver.await.map_err(|_| Error::Namespace {
            action: "opening a netlink socket in",
            path: path.clone(),
            error: std::io::Error::other("netlink thread exited"),
        })??;
        Ok(Netlink {
            handle,
            netns: Some(path),
        })
    }

    /// The namespace this connection talks to (`None`: the caller's own).
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// The underlying rtnetlink handle, for requests this crate does not
    /// wrap yet.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Builds the error for a failed request on `object`.
    pub(crate) fn error(
        &self,
        action: &'static str,
        object: impl Into<String>,
        error: rtnetlink::Error,
    ) -> Error {
        Error::Netlink {
            action,
            object: object.into(),
            netns: self.netns.clone(),
            error: netlink_io_error(error),
        }
    }

    pub(crate) fn not_found(&self, kind: &'static str, name: impl Into<String>) -> Error {
        Error::NotFound {
            kind,
            name: name.into(),
            netns: self.netns.clone(),
        }
    }

    /// Sends a request that expects only an acknowledgement, with the
    /// given netlink header flags (added to `NLM_F_REQUEST | NLM_F_ACK`).
    pub(crate) async fn request_ack(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> std::result::Result<(), rtnetlink::Error> {
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut responses = handle.request(request)?;
        while let Some(response) = responses.next().await {
            if let NetlinkPayload::Error(error) = response.payload {
                return Err(rtnetlink::Error::NetlinkError(error));
            }
        }
        Ok(())
    }
}

type OpenedConnection = (
    rtnetlink::proto::Connection<RouteNetlinkMessage>,
    tokio::runtime::Runtime,
    rtnetlink::Handle,
);

/// Opens an rtnetlink socket inside `netns` from the calling (dedicated)
/// thread and moves the thread back to where it was.
fn open_in(netns: &NetNs) -> Result<OpenedConnection> {
    let home = NetNs::current()?;
    // The socket's reactor registration happens at creation, so the runtime
    // that will drive it has to exist first.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|error| Error::Namespace {
            action: "starting a netlink runtime for",
            path: netns.path().to_owned(),
            error,
        })?;
    netns.enter()?;
    let opened = {
        let _guard = runtime.enter();
        rtnetlink::new_connection()
    };
    home.enter()?;
    let (connection, handle, _) = opened.map_err(|error| Error::Netlink {
        action: "opening",
        object: "an rtnetlink socket".into(),
        netns: Some(netns.path().to_owned()),
        error,
    })?;
    Ok((connection, runtime, handle))
}
