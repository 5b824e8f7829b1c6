//! Reading one request line from a client, within a size limit and time
//! limits, so that no client can hold the server's memory or a connection
//! slot for long.

use std::io::{self, BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Why no request line was read.
#[derive(Debug)]
pub(crate) enum LineError {
    /// The client closed the connection between requests.
    Closed,
    /// No byte arrived within the idle timeout.
    Idle,
    /// A line was started but not finished within the request timeout.
    Incomplete,
    /// The line is longer than allowed.
    TooLarge,
    /// The socket failed.
    Io(io::Error),
}

/// Time limits of one read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LineTimeouts {
    /// Longest wait for the first byte of a request.
    pub idle: Duration,
    /// Longest time from the first byte of a request to its newline.
    pub whole: Duration,
}

/// Reads the next line (without its newline, and without a `\r` before
/// it) into `line`. A last line without a newline, ended by the client
/// closing its side, counts as a line.
pub(crate) fn read_line(
    reader: &mut BufReader<UnixStream>,
    line: &mut Vec<u8>,
    max: usize,
    timeouts: LineTimeouts,
) -> Result<(), LineError> {
    line.clear();
    let waiting_since = Instant::now();
    let mut first_byte: Option<Instant> = None;
    loop {
        let deadline = match first_byte {
            None => waiting_since + timeouts.idle,
            Some(at) => at + timeouts.whole,
        };
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Err(timed_out(first_byte));
        };
        reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(LineError::Io)?;
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out(first_byte))
            }
            Err(e) => return Err(LineError::Io(e)),
        };
        if available.is_empty() {
            return if line.is_empty() {
                Err(LineError::Closed)
            } else {
                trim_cr(line);
                Ok(())
            };
        }
        first_byte.get_or_insert_with(Instant::now);
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (available.get(..i).unwrap_or_default(), true),
            None => (available, false),
        };
        if line.len().saturating_add(chunk.len()) > max {
            return Err(LineError::TooLarge);
        }
        line.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(done);
        reader.consume(used);
        if done {
            trim_cr(line);
            return Ok(());
        }
    }
}

fn timed_out(first_byte: Option<Instant>) -> LineError {
    match first_byte {
        None => LineError::Idle,
        Some(_) => LineError::Incomplete,
    }
}

fn trim_cr(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const T: LineTimeouts = LineTimeouts {
        idle: Duration::from_millis(300),
        whole: Duration::from_millis(300),
    };

    fn pair() -> (UnixStream, BufReader<UnixStream>) {
        let (a, b) = UnixStream::pair().unwrap();
        (a, BufReader::with_capacity(16, b))
    }

    #[test]
    fn reads_lines_across_buffer_refills() {
        let (mut w, mut r) = pair();
        w.write_all(b"first line longer than the buffer\r\nsecond\nlast")
            .unwrap();
        drop(w);
        let mut line = Vec::new();
        read_line(&mut r, &mut line, 100, T).unwrap();
        assert_eq!(line, b"first line longer than the buffer");
        read_line(&mut r, &mut line, 100, T).unwrap();
        assert_eq!(line, b"second");
        read_line(&mut r, &mut line, 100, T).unwrap();
        assert_eq!(line, b"last");
        assert!(matches!(
            read_line(&mut r, &mut line, 100, T),
            Err(LineError::Closed)
        ));
    }

    #[test]
    fn refuses_a_line_over_the_limit() {
        let (mut w, mut r) = pair();
        w.write_all(b"0123456789\n").unwrap();
        let mut line = Vec::new();
        assert!(matches!(read_line(&mut r, &mut line, 10, T), Ok(())));
        w.write_all(b"0123456789A\n").unwrap();
        assert!(matches!(
            read_line(&mut r, &mut line, 10, T),
            Err(LineError::TooLarge)
        ));
    }

    #[test]
    fn times_out_silent_and_slow_clients() {
        let (mut w, mut r) = pair();
        let mut line = Vec::new();
        assert!(matches!(
            read_line(&mut r, &mut line, 100, T),
            Err(LineError::Idle)
        ));
        w.write_all(b"{\"version\":").unwrap();
        assert!(matches!(
            read_line(&mut r, &mut line, 100, T),
            Err(LineError::Incomplete)
        ));
    }
}
