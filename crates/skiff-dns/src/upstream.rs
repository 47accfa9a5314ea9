//! The resolvers names outside the cluster domain are asked: the node's
//! own, from its `resolv.conf`, as CoreDNS's `forward . /etc/resolv.conf`.
//! A query goes to each in turn until one answers it, over the transport
//! the client used.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one resolver may take to answer.
const WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Upstream {
    servers: Vec<SocketAddr>,
}

impl Upstream {
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        Self { servers }
    }

    /// The `nameserver`s of a `resolv.conf`, on port 53, but the cluster
    /// DNS itself at `own`, which would ask itself forever. Bound to every
    /// address, it is also whatever loopback address names its port.
    pub fn from_resolv_conf(text: &str, own: SocketAddr) -> Self {
        let itself = |addr: &SocketAddr| {
            *addr == own
                || (own.ip().is_unspecified()
                    && addr.port() == own.port()
                    && addr.ip().is_loopback())
        };
        let servers = text
            .lines()
            .filter_map(|line| line.strip_prefix("nameserver"))
            .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .filter(|addr| !itself(addr))
            .collect();
        Self { servers }
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The first reply to `query` (a whole message) that a resolver gives
    /// within [`WAIT`], over TCP or UDP; none if none does.
    pub async fn ask(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let id = query.get(..2)?;
        for server in &self.servers {
            let asked = async {
                match tcp {
                    true => over_tcp(*server, query).await,
                    false => over_udp(*server, query).await,
                }
            };
            match tokio::time::timeout(WAIT, asked).await {
                Ok(Ok(reply)) if reply.get(..2) == Some(id) => return Some(reply),
                Ok(Ok(_)) => tracing::debug!(%server, "a resolver answered another query"),
                Ok(Err(e)) => tracing::debug!(%server, error = %e, "a resolver failed"),
                Err(_) => tracing::debug!(%server, "a resolver did not answer in time"),
            }
        }
        None
    }
}

async fn over_udp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => ([0u16; 8], 0).into(),
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; u16::MAX as usize];
    let n = socket.recv(&mut buf).await?;
    buf.truncate(n);
    Ok(buf)
}

async fn over_tcp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    conn.write_all(&framed).await?;
    let len = conn.read_u16().await?;
    let mut reply = vec![0u8; len as usize];
    conn.read_exact(&mut reply).await?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_resolvers_but_the_cluster_dns_itself() {
        let own: SocketAddr = "10.0.0.1:53".parse().unwrap();
        let conf = "# resolvers\nsearch example.org\nnameserver 192.0.2.53\nnameserver  10.0.0.1\nnameserver bogus\nnameserver 2001:db8::53\n";
        let upstream = Upstream::from_resolv_conf(conf, own);
        assert_eq!(
            upstream.servers,
            [
                "192.0.2.53:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ] as [SocketAddr; 2]
        );
        assert!(Upstream::from_resolv_conf("", own).is_empty());
        let everywhere: SocketAddr = "0.0.0.0:53".parse().unwrap();
        let local = Upstream::from_resolv_conf(
            "nameserver 127.0.0.53\nnameserver 192.0.2.53\n",
            everywhere,
        );
        assert_eq!(
            local.servers,
            ["192.0.2.53:53".parse().unwrap()] as [SocketAddr; 1]
        );
    }
}
