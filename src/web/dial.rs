//! Opening an upstream connection: the address resolved, TCP within the connect timeout
//! (no Nagle delay), TLS with SNI and the pool's rustls configuration for `https`, and the
//! HTTP/1.1 handshake. The connection is not spawned: whoever sends on it drives it
//! ([`Conn::drive`]), so an exchange runs in the caller's task.

use hyper::body::Body;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// An upstream socket, plain or TLS.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Bounds hyper puts on a request body type.
pub(super) trait SendBody:
    Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Unpin + 'static
{
}

impl<B> SendBody for B where B: Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Unpin + 'static
{}

/// One upstream connection sending bodies of type `B`: the handle requests are sent
/// through and the state machine that reads and writes the socket, polled by whoever waits
/// on the connection.
pub(super) struct Conn<B: SendBody> {
    pub(super) sender: http1::SendRequest<B>,
    /// `None` once the connection has ended (closed by either side, or failed).
    driver: Option<http1::Connection<TokioIo<Stream>, B>>,
}

/// Why no connection was made.
pub(super) enum DialError {
    /// Unresolvable, refused, unreachable, timed out (`TimedOut`), or the TLS handshake
    /// failed (a `rustls::Error` inside).
    Connect(std::io::Error),
    /// hyper refused the connection.
    Handshake(hyper::Error),
}

impl<B: SendBody> Conn<B> {
    /// Lets the connection make progress (write the request, read the answer, notice a
    /// close) and asks `cx` to be woken when it can make more.
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver
            && Pin::new(driver).poll(cx).is_ready()
        {
            // Ended: an error, if any, has reached the waiting response or body already.
            self.driver = None;
        }
    }

    /// Whether a new request can go out on this connection now: it has not ended, the
    /// upstream has not closed it while it sat idle, and the last exchange is over.
    pub(super) fn usable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx);
        self.driver.is_some() && self.sender.is_ready()
    }

    /// Whether the connection has not ended.
    pub(super) fn open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }
}

/// Where and how to connect.
pub(super) struct Target<'a> {
    pub(super) https: bool,
    pub(super) host: &'a str,
    pub(super) port: u16,
    pub(super) tls: &'a tokio_rustls::TlsConnector,
    pub(super) connect_timeout: Duration,
}

/// Opens a connection to `target`.
///
/// # Errors
/// Unresolvable, refused, unreachable, not connected within the connect timeout, or the
/// TLS handshake failed.
pub(super) async fn dial<B: SendBody>(target: &Target<'_>) -> Result<Box<Conn<B>>, DialError> {
    let tcp = tokio::time::timeout(target.connect_timeout, tcp(target.host, target.port))
        .await
        .map_err(|_elapsed| DialError::Connect(std::io::ErrorKind::TimedOut.into()))?
        .map_err(DialError::Connect)?;
    let stream = if target.https {
        // An IP host is verified against the certificate's IP names; rustls sends no SNI.
        let name = rustls_pki_types::ServerName::try_from(target.host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| DialError::Connect(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?
            .to_owned();
        // The handshake is bounded by the trigger's response timeout, as the exchange is.
        let tls = target.tls.connect(name, tcp).await.map_err(DialError::Connect)?;
        Stream::Tls(Box::new(tls))
    } else {
        Stream::Plain(tcp)
    };
    let (sender, driver) = http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(DialError::Handshake)?;
    // Boxed: hyper's connection state is large, and a call moves its connection from
    // the pool to the exchange, the response body and back.
    Ok(Box::new(Conn { sender, driver: Some(driver) }))
}

/// A TCP connection to the first address of `host` that accepts one.
async fn tcp(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let stream = if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        TcpStream::connect((ip, port)).await?
    } else {
        let mut last = None;
        let mut found = None;
        for address in tokio::net::lookup_host((bare, port)).await? {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    found = Some(stream);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        match (found, last) {
            (Some(stream), _) => stream,
            (None, Some(error)) => return Err(error),
            (None, None) => return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no address")),
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
