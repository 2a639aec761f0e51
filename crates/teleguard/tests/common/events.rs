//! Server-Sent Events from `GET /api/events`, read over a plain socket.

use super::Server;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Reads Server-Sent Events from `GET /api/events` over a plain socket.
pub struct EventStream {
    lines: BufReader<TcpStream>,
}

impl EventStream {
    pub fn open(server: &Server) -> EventStream {
        let address = server.base.trim_start_matches("http://");
        let mut socket = TcpStream::connect(address).expect("connect to teleguard");
        socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(socket, "GET /api/events HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        let mut lines = BufReader::new(socket);
        let mut status = String::new();
        lines.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "GET /api/events answered {status:?}");
        EventStream { lines }
    }

    /// The data of the next event named `name` (skipping others).
    pub fn next(&mut self, name: &str) -> Value {
        let mut current = String::new();
        loop {
            let mut line = String::new();
            assert!(self.lines.read_line(&mut line).expect("read the event stream") > 0, "the event stream ended");
            let line = line.trim_end();
            // Chunked transfer encoding puts size lines between events; they never start so.
            if let Some(event) = line.strip_prefix("event: ") {
                current = event.to_string();
            } else if let Some(data) = line.strip_prefix("data: ")
                && current == name
            {
                return serde_json::from_str(data).expect("event data is JSON");
            }
        }
    }
}
