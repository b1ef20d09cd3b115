//! A raw HTTP/1.1 answer as tests read it off a socket: status, headers, body.

#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// From a response head (status line and header lines, the blank line optional) and its body.
    pub(crate) fn from_head(head: &str, body: Vec<u8>) -> Self {
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter(|line| !line.is_empty())
            .map(|line| line.split_once(':').unwrap_or_else(|| panic!("bad header line {line:?}")))
            .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
            .collect();
        Self { status, headers, body }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}
