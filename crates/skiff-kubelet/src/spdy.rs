//! The server side of a SPDY/3.1 session, as much as Kubernetes' streaming
//! protocols use: the peer opens streams (SYN_STREAM with headers), both
//! sides send data frames, FIN half-closes. Header blocks are zlib streams
//! primed with the protocol's dictionary, one per direction per session.
//! WINDOW_UPDATEs are sent for what is read; the peer's windows are not
//! enforced, as Kubernetes' own peers do not rely on them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex};

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 1;
/// RST_STREAM status CANCEL.
const CANCEL: u32 = 5;
/// The largest frame accepted from the peer.
const MAX_FRAME: usize = 16 << 20;

/// The header names in SPDY/3's compression dictionary, each written
/// length-prefixed, then its run of common values (draft-mbelshe-spdy-3,
/// section 2.6.10.1).
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];
const DICTIONARY_VALUES: &str = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut d = Vec::new();
        for w in DICTIONARY_WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(DICTIONARY_VALUES.as_bytes());
        d
    })
}

/// Why a session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("spdy: {0}")]
    Io(#[from] std::io::Error),
    #[error("spdy: {0}")]
    Protocol(String),
}

/// A stream the peer opened: its headers and the data it sends.
pub struct Stream {
    pub id: u32,
    pub headers: HashMap<String, String>,
    /// The peer's data; ends when the peer half-closes.
    pub data: mpsc::Receiver<Bytes>,
}

/// The sending half of a session, shared by every stream.
pub struct Sender<W> {
    inner: Mutex<(W, Compress)>,
}

impl<W: AsyncWrite + Unpin> Sender<W> {
    async fn frame(&self, head: [u8; 8], body: &[u8]) -> Result<(), Error> {
        let mut guard = self.inner.lock().await;
        guard.0.write_all(&head).await?;
        guard.0.write_all(body).await?;
        guard.0.flush().await?;
        Ok(())
    }

    async fn control(&self, kind: u16, flags: u8, body: &[u8]) -> Result<(), Error> {
        let mut head = [0u8; 8];
        head[..2].copy_from_slice(&(0x8000 | VERSION).to_be_bytes());
        head[2..4].copy_from_slice(&kind.to_be_bytes());
        head[4..].copy_from_slice(&(body.len() as u32).to_be_bytes());
        head[4] = flags;
        self.frame(head, body).await
    }

    /// Accepts a stream the peer opened.
    pub async fn reply(&self, id: u32) -> Result<(), Error> {
        let mut guard = self.inner.lock().await;
        // The header block is empty: zero name/value pairs.
        let block = compress(&mut guard.1, &0u32.to_be_bytes())?;
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&block);
        let mut head = [0u8; 8];
        head[..2].copy_from_slice(&(0x8000 | VERSION).to_be_bytes());
        head[2..4].copy_from_slice(&SYN_REPLY.to_be_bytes());
        head[4..].copy_from_slice(&(body.len() as u32).to_be_bytes());
        guard.0.write_all(&head).await?;
        guard.0.write_all(&body).await?;
        guard.0.flush().await?;
        Ok(())
    }

    /// Sends data on a stream; `fin` half-closes it.
    pub async fn data(&self, id: u32, data: &[u8], fin: bool) -> Result<(), Error> {
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
        head[4..].copy_from_slice(&(data.len() as u32).to_be_bytes());
        head[4] = if fin { FLAG_FIN } else { 0 };
        self.frame(head, data).await
    }

    /// Abandons a stream.
    pub async fn reset(&self, id: u32) -> Result<(), Error> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&CANCEL.to_be_bytes());
        self.control(RST_STREAM, 0, &body).await
    }
}

fn compress(c: &mut Compress, input: &[u8]) -> Result<Vec<u8>, Error> {
    if c.total_in() == 0 {
        c.set_dictionary(dictionary())
            .map_err(|e| Error::Protocol(e.to_string()))?;
    }
    let mut out = Vec::with_capacity(input.len() + 64);
    loop {
        let consumed = c.total_in();
        c.compress_vec(input, &mut out, FlushCompress::Sync)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let done = (c.total_in() - consumed) as usize >= input.len();
        if done && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64));
        if done {
            // Output was full: flush what is left.
            c.compress_vec(&[], &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Protocol(e.to_string()))?;
            return Ok(out);
        }
    }
}

/// The largest header block accepted once decompressed.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Inflates one header block. Refuses a block that inflates past
/// [`MAX_HEADER_BLOCK`] or that zlib stops reading (input after the end
/// of the stream), rather than looping on it.
fn decompress(d: &mut Decompress, input: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity((input.len() * 4 + 64).min(MAX_HEADER_BLOCK));
    let mut at = 0;
    while at < input.len() {
        let (before_in, before_out) = (d.total_in(), d.total_out());
        let mut retried = false;
        match d.decompress_vec(&input[at..], &mut out, FlushDecompress::Sync) {
            Ok(_) => {}
            Err(e) if e.needs_dictionary().is_some() => {
                d.set_dictionary(dictionary())
                    .map_err(|e| Error::Protocol(e.to_string()))?;
                retried = true;
            }
            Err(e) => return Err(Error::Protocol(format!("header block: {e}"))),
        }
        let consumed = (d.total_in() - before_in) as usize;
        at += consumed;
        if out.len() > MAX_HEADER_BLOCK {
            return Err(Error::Protocol("header block too large".into()));
        }
        let room = out.len() < out.capacity();
        if consumed == 0 && d.total_out() == before_out && room && !retried {
            return Err(Error::Protocol(
                "header block: input zlib does not read".into(),
            ));
        }
        if !room {
            out.reserve(out.capacity().min(MAX_HEADER_BLOCK));
        }
    }
    Ok(out)
}

/// Parses a decompressed header block: a count, then length-prefixed
/// names and values (a value may hold several, NUL-separated: the first
/// is kept).
fn parse_headers(block: &[u8]) -> Result<HashMap<String, String>, Error> {
    let bad = || Error::Protocol("malformed header block".into());
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], Error> {
        let s = block.get(at..at + n).ok_or_else(bad)?;
        at += n;
        Ok(s)
    };
    let int = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = int(take(4)?);
    let mut headers = HashMap::new();
    for _ in 0..count {
        let n = int(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = int(take(4)?);
        let value = String::from_utf8_lossy(take(n)?);
        let first = value.split('\0').next().unwrap_or_default().to_owned();
        headers.insert(name, first);
    }
    Ok(headers)
}

/// The writing half of a session over `IO`.
pub type SessionSender<IO> = Arc<Sender<tokio::io::WriteHalf<IO>>>;

/// Starts a session over `io`: returns its sender and the streams the peer
/// opens. Frames are read by a task until the connection ends.
pub fn session<IO>(io: IO) -> (SessionSender<IO>, mpsc::Receiver<Stream>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reader, writer) = tokio::io::split(io);
    let sender = Arc::new(Sender {
        inner: Mutex::new((writer, Compress::new(Compression::default(), true))),
    });
    let (tx, rx) = mpsc::channel(16);
    let s = sender.clone();
    tokio::spawn(async move {
        if let Err(e) = read_frames(reader, s, tx).await {
            tracing::debug!(error = %e, "spdy session ended");
        }
    });
    (sender, rx)
}

/// Reads frames until the connection ends, routing them to streams.
async fn read_frames<R, W>(
    mut reader: R,
    sender: Arc<Sender<W>>,
    streams: mpsc::Sender<Stream>,
) -> Result<(), Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut inflate = Decompress::new(true);
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut head = [0u8; 8];
    loop {
        if let Err(e) = reader.read_exact(&mut head).await {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Ok(()),
                _ => Err(e.into()),
            };
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(Error::Protocol(format!("frame of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).await?;
        let word = |at: usize| {
            body.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| Error::Protocol("short control frame".into()))
        };
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            if !body.is_empty() {
                let mut update = (id & 0x7fff_ffff).to_be_bytes().to_vec();
                update.extend_from_slice(&(body.len() as u32).to_be_bytes());
                sender.control(WINDOW_UPDATE, 0, &update).await?;
                if let Some(tx) = open.get(&id) {
                    // A stream nobody reads any more just drops its data.
                    let _ = tx.send(Bytes::from(body)).await;
                }
            }
            if flags & FLAG_FIN != 0 {
                open.remove(&id);
            }
            continue;
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        match kind {
            SYN_STREAM => {
                let id = word(0)? & 0x7fff_ffff;
                let block = body.get(10..).unwrap_or_default();
                let headers = parse_headers(&decompress(&mut inflate, block)?)?;
                let (tx, rx) = mpsc::channel(64);
                if flags & FLAG_FIN == 0 {
                    open.insert(id, tx);
                }
                let stream = Stream {
                    id,
                    headers,
                    data: rx,
                };
                if streams.send(stream).await.is_err() {
                    return Ok(());
                }
            }
            RST_STREAM => {
                open.remove(&(word(0)? & 0x7fff_ffff));
            }
            PING => sender.control(PING, 0, &body).await?,
            GOAWAY => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_protocols() {
        // SPDY/3's dictionary is 1423 bytes; zlib names it by its Adler-32.
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
    }

    #[test]
    fn header_blocks_round_trip_through_both_zlib_streams() {
        let mut deflate = Compress::new(Compression::default(), true);
        let mut inflate = Decompress::new(true);
        for port in ["80", "8080"] {
            let mut raw = Vec::new();
            raw.extend_from_slice(&2u32.to_be_bytes());
            for (k, v) in [("streamType", "data"), ("port", port)] {
                raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
                raw.extend_from_slice(k.as_bytes());
                raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
                raw.extend_from_slice(v.as_bytes());
            }
            let wire = compress(&mut deflate, &raw).unwrap();
            let headers = parse_headers(&decompress(&mut inflate, &wire).unwrap()).unwrap();
            assert_eq!(headers["streamtype"], "data");
            assert_eq!(headers["port"], port);
        }
        assert!(parse_headers(&[0, 0, 0, 1, 0, 0]).is_err());
    }

    /// A zlib stream that ends, then one byte more: zlib reads nothing
    /// further, which once spun the reader for ever.
    #[test]
    fn input_after_the_end_of_the_stream_is_refused() {
        let mut deflate = Compress::new(Compression::default(), true);
        let mut wire = Vec::with_capacity(256);
        deflate
            .compress_vec(&0u32.to_be_bytes(), &mut wire, FlushCompress::Finish)
            .unwrap();
        wire.push(0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(decompress(&mut Decompress::new(true), &wire).is_err());
        });
        let refused = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(refused, Ok(true), "refused, and promptly");
    }

    #[test]
    fn header_blocks_that_inflate_too_far_are_refused() {
        let mut deflate = Compress::new(Compression::default(), true);
        let bomb = vec![b'a'; 10 * MAX_HEADER_BLOCK];
        let wire = compress(&mut deflate, &bomb).unwrap();
        assert!(wire.len() < 4096, "a small block on the wire");
        assert!(decompress(&mut Decompress::new(true), &wire).is_err());
    }

    /// Random and truncated frames, some carrying valid-looking control
    /// headers and compressed blocks, end the session (or leave it waiting
    /// for more input) without a panic or a spin: the reader always gives
    /// the runtime back within the deadline.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_and_truncated_frames_never_hang_the_reader() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let rounds: usize = std::env::var("SKIFF_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        for round in 0..rounds {
            let mut wire = Vec::new();
            for _ in 0..rng.random_range(1..4) {
                let control = rng.random_bool(0.7);
                let mut body: Vec<u8> =
                    (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
                if control && rng.random_bool(0.5) {
                    // A SYN_STREAM with a real zlib block, maybe cut or
                    // followed by junk.
                    let mut deflate = Compress::new(Compression::default(), true);
                    let mut block = compress(&mut deflate, &1u32.to_be_bytes()).unwrap();
                    if rng.random_bool(0.5) {
                        block.truncate(rng.random_range(0..=block.len()));
                    }
                    body = [vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0], block, body].concat();
                }
                let mut head = [0u8; 8];
                if control {
                    head[..2].copy_from_slice(&(0x8000 | VERSION).to_be_bytes());
                    let kind = [SYN_STREAM, RST_STREAM, PING, GOAWAY, 42][rng.random_range(0..5)];
                    head[2..4].copy_from_slice(&kind.to_be_bytes());
                } else {
                    head[..4].copy_from_slice(&rng.random::<u32>().to_be_bytes());
                    head[0] &= 0x7f;
                }
                head[4..].copy_from_slice(&(body.len() as u32).to_be_bytes());
                head[4] = rng.random::<u8>() & 1;
                wire.extend_from_slice(&head);
                wire.extend_from_slice(&body);
            }
            if rng.random_bool(0.3) {
                wire.truncate(rng.random_range(0..=wire.len()));
            }
            let (mut ours, theirs) = tokio::io::duplex(1 << 16);
            let (_sender, mut incoming) = session(theirs);
            use tokio::io::AsyncWriteExt;
            ours.write_all(&wire).await.unwrap();
            ours.shutdown().await.unwrap();
            // Drain what the peer sends back (replies, window updates).
            let drain = tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut sink = vec![0u8; 4096];
                while let Ok(1..) = ours.read(&mut sink).await {}
            });
            let ended = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                while incoming.recv().await.is_some() {}
            })
            .await;
            assert!(ended.is_ok(), "round {round}: the session did not end");
            drain.abort();
        }
    }
}
