//! A minimal blocking HTTP/1.1 GET over `std::net::TcpStream`, for reading a log
//! served by [`crate::router`] (or any plain `http://` server). No TLS, no redirects,
//! no keep-alive: one connection per request, read to the end.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The largest response body accepted (a replay file is at most 32 MiB).
const MAX_BODY: u64 = 64 << 20;
/// How long a connect or a read may stall.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed `http://host[:port][/base]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpBase {
    host: String,
    port: u16,
    /// The path prefix, without a trailing slash ("" for the root).
    base: String,
}

impl HttpBase {
    /// Parses an `http://` URL; `https://` and others are refused with a message.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(format!("{url:?}: only http:// URLs are supported (verify a copy of the directory otherwise)"));
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(authority, path)| (authority, path));
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]:8080` has a port, `[::1]` none.
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| format!("{url:?}: bad port {port:?}"))?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Self { host: host.to_owned(), port, base: path.trim_end_matches('/').to_owned() })
    }

    /// `GET <base>/<path>`: `Ok(Some(body))` on 200, `Ok(None)` on 404, an error
    /// naming the status (and the server's message) otherwise.
    pub(crate) fn get(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        let target = if self.base.is_empty() { format!("/{path}") } else { format!("/{}/{path}", self.base) };
        let describe = |what: &dyn std::fmt::Display| format!("GET http://{}:{}{target}: {what}", self.host, self.port);
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let mut stream = TcpStream::connect((host, self.port)).map_err(|err| describe(&err))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(|err| describe(&err))?;
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n",
            self.host, self.port
        );
        stream.write_all(request.as_bytes()).map_err(|err| describe(&err))?;
        let mut response = vec![];
        stream.take(MAX_BODY + 64 * 1024).read_to_end(&mut response).map_err(|err| describe(&err))?;
        let (status, body) = parse_response(&response).map_err(|err| describe(&err))?;
        match status {
            200 => Ok(Some(body)),
            404 => Ok(None),
            _ => Err(describe(&format!("status {status}: {}", String::from_utf8_lossy(&body).trim()))),
        }
    }
}

/// Splits a whole HTTP/1.1 response into its status and (de-chunked) body.
fn parse_response(response: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let head_end =
        response.windows(4).position(|window| window == b"\r\n\r\n").ok_or("the response has no end of headers")?;
    let head = std::str::from_utf8(&response[..head_end]).map_err(|_| "the response headers are not UTF-8")?;
    let body = &response[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| format!("bad content-length {value:?}"))?);
        }
    }
    if chunked {
        return Ok((status, dechunk(body)?));
    }
    match length {
        Some(length) if body.len() < length => Err(format!("the body ends after {} of {length} bytes", body.len())),
        Some(length) => Ok((status, body[..length].to_vec())),
        None => Ok((status, body.to_vec())),
    }
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = vec![];
    loop {
        let line_end = body.windows(2).position(|window| window == b"\r\n").ok_or("a chunk size line has no end")?;
        let size_text = std::str::from_utf8(&body[..line_end]).map_err(|_| "a chunk size is not text")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("a chunk is cut short".to_owned());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_https_is_refused() {
        let base = HttpBase::parse("http://127.0.0.1:8080/ledger/").unwrap();
        assert_eq!(base, HttpBase { host: "127.0.0.1".into(), port: 8080, base: "ledger".into() });
        assert_eq!(HttpBase::parse("http://example.org").unwrap().port, 80);
        assert!(HttpBase::parse("https://example.org").unwrap_err().contains("only http://"));
        assert!(HttpBase::parse("http://:80").is_err());
        assert!(HttpBase::parse("http://host:x").is_err());
    }

    #[test]
    fn responses_parse_with_length_or_chunks() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(plain).unwrap(), (200, b"hello".to_vec()));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, b"hello".to_vec()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello").is_err());
        assert!(parse_response(b"garbage").is_err());
        assert_eq!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap().0, 404);
    }
}
