//! Bounds-checked, borrowing decoders for the client messages the router
//! inspects (PostgreSQL docs §55.7). Nothing here panics on malformed input:
//! every read is checked and reported as [`ProtocolError::Malformed`].

use smallvec::SmallVec;

use super::ProtocolError;

/// A cursor over a message body.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Starts at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    fn err(what: &str) -> ProtocolError {
        ProtocolError::Malformed(format!("truncated message: missing {what}"))
    }
    /// Reads a NUL-terminated UTF-8 string.
    pub fn cstr(&mut self) -> Result<&'a str, ProtocolError> {
        let rest = self
            .buf
            .get(self.pos..)
            .ok_or_else(|| Self::err("string"))?;
        let end = memchr::memchr(0, rest).ok_or_else(|| Self::err("string terminator"))?;
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| ProtocolError::Malformed("invalid UTF-8 in string".into()))?;
        self.pos += end + 1;
        Ok(s)
    }
    /// Reads a big-endian i16.
    pub fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    /// Reads a big-endian i32.
    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.bytes(1)?[0])
    }
    /// Reads `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self.pos.checked_add(n).ok_or_else(|| Self::err("bytes"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| Self::err("bytes"))?;
        self.pos = end;
        Ok(s)
    }
    /// Reads a count (i16 interpreted as unsigned, as PostgreSQL does).
    pub fn count(&mut self) -> Result<usize, ProtocolError> {
        Ok(self.i16()? as u16 as usize)
    }
    /// Byte offset into the body.
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// Parse ('P'): statement name, query text, parameter type OIDs.
#[derive(Debug)]
pub struct Parse<'a> {
    /// Statement name ("" = unnamed).
    pub name: &'a str,
    /// Query text.
    pub query: &'a str,
    /// Parameter type OIDs (0 = unspecified).
    pub param_types: Vec<u32>,
}

impl<'a> Parse<'a> {
    /// The statement name and query text of a Parse body, without
    /// decoding (or allocating for) its parameter types.
    ///
    /// Errors: [`ProtocolError::Malformed`] when they are not
    /// NUL-terminated UTF-8.
    pub fn name_and_query(body: &'a [u8]) -> Result<(&'a str, &'a str), ProtocolError> {
        let mut c = Cursor::new(body);
        Ok((c.cstr()?, c.cstr()?))
    }

    /// Decodes a Parse body.
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut c = Cursor::new(body);
        let name = c.cstr()?;
        let query = c.cstr()?;
        let n = c.count()?;
        let mut param_types = Vec::with_capacity(n.min(body.len() / 4));
        for _ in 0..n {
            param_types.push(c.i32()? as u32);
        }
        Ok(Parse {
            name,
            query,
            param_types,
        })
    }
}

/// Bind ('B'): portal, statement, parameter formats and values.
#[derive(Debug)]
pub struct Bind<'a> {
    /// Destination portal ("" = unnamed).
    pub portal: &'a str,
    /// Source statement ("" = unnamed).
    pub statement: &'a str,
    /// Parameter format codes (0 text, 1 binary); empty = all text, one = all.
    pub param_formats: Formats,
    /// Parameter values; `None` = NULL.
    pub params: SmallVec<[Option<&'a [u8]>; 8]>,
    /// Byte offset in the body where the parameter-format section starts
    /// (everything after the two names), used to rewrite the statement name.
    pub after_names: usize,
    /// Byte offset in the body where the result-format section starts:
    /// `body[after_names..params_end]` is the parameter section (formats
    /// and values) as the client sent it.
    pub params_end: usize,
    /// Result-column format codes.
    pub result_formats: Formats,
}

/// Format codes of a Bind (parameters or result columns): up to 4 inline,
/// as drivers send none, one, or one per column of a narrow row.
pub type Formats = SmallVec<[i16; 4]>;

impl<'a> Bind<'a> {
    /// The source statement name of a Bind body, without decoding (or
    /// allocating for) its parameters.
    ///
    /// Errors: [`ProtocolError::Malformed`] when the names are not
    /// NUL-terminated UTF-8.
    pub fn statement_name(body: &'a [u8]) -> Result<&'a str, ProtocolError> {
        let mut c = Cursor::new(body);
        c.cstr()?;
        c.cstr()
    }

    /// The destination portal name of a Bind body, without decoding its
    /// parameters.
    ///
    /// Errors: [`ProtocolError::Malformed`] when the name is not
    /// NUL-terminated UTF-8.
    pub fn portal_name(body: &'a [u8]) -> Result<&'a str, ProtocolError> {
        Cursor::new(body).cstr()
    }

    /// Decodes a Bind body.
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut c = Cursor::new(body);
        let portal = c.cstr()?;
        let statement = c.cstr()?;
        let after_names = c.position();
        let nf = c.count()?;
        let mut param_formats = Formats::with_capacity(nf.min(body.len() / 2));
        for _ in 0..nf {
            param_formats.push(c.i16()?);
        }
        let np = c.count()?;
        let mut params = SmallVec::with_capacity(np.min(body.len() / 4));
        for _ in 0..np {
            let len = c.i32()?;
            if len < -1 {
                return Err(ProtocolError::Malformed(format!(
                    "invalid parameter length {len}"
                )));
            }
            params.push(if len == -1 {
                None
            } else {
                Some(c.bytes(len as usize)?)
            });
        }
        let params_end = c.position();
        let nr = c.count()?;
        let mut result_formats = Formats::with_capacity(nr.min(body.len() / 2));
        for _ in 0..nr {
            result_formats.push(c.i16()?);
        }
        Ok(Bind {
            portal,
            statement,
            param_formats,
            params,
            after_names,
            params_end,
            result_formats,
        })
    }

    /// Format code (0 text, 1 binary) of parameter `i`.
    pub fn param_format(&self, i: usize) -> i16 {
        match self.param_formats.len() {
            0 => 0,
            1 => self.param_formats[0],
            _ => self.param_formats.get(i).copied().unwrap_or(0),
        }
    }
}

/// Describe ('D') or Close ('C'): target kind (`b'S'` statement or `b'P'`
/// portal) and name.
#[derive(Debug)]
pub struct Target<'a> {
    /// `b'S'` or `b'P'`.
    pub kind: u8,
    /// Statement or portal name.
    pub name: &'a str,
}

impl<'a> Target<'a> {
    /// Decodes a Describe or Close body.
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut c = Cursor::new(body);
        let kind = c.u8()?;
        if kind != b'S' && kind != b'P' {
            return Err(ProtocolError::Malformed(format!(
                "invalid Describe/Close target '{}'",
                kind as char
            )));
        }
        Ok(Target {
            kind,
            name: c.cstr()?,
        })
    }
}

/// Execute ('E'): portal and row limit (0 = no limit).
#[derive(Debug)]
pub struct Execute<'a> {
    /// Portal name.
    pub portal: &'a str,
    /// Maximum rows to return, 0 = all.
    pub max_rows: i32,
}

impl<'a> Execute<'a> {
    /// Decodes an Execute body.
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut c = Cursor::new(body);
        Ok(Execute {
            portal: c.cstr()?,
            max_rows: c.i32()?,
        })
    }
}

/// Decodes a Query ('Q') body: the query string.
pub fn query_text(body: &[u8]) -> Result<&str, ProtocolError> {
    Cursor::new(body).cstr()
}

/// StartupMessage contents (PostgreSQL docs §55.7 StartupMessage).
#[derive(Debug, Clone, Default)]
pub struct Startup {
    /// Protocol version number (196608 for 3.0).
    pub version: i32,
    /// Parameters in the order sent (user, database, options, GUCs...).
    pub params: Vec<(String, String)>,
}

impl Startup {
    /// Decodes the body after the length word.
    pub fn decode(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut c = Cursor::new(body);
        let version = c.i32()?;
        let mut params = Vec::new();
        loop {
            let k = c.cstr()?;
            if k.is_empty() {
                break;
            }
            let v = c.cstr()?;
            params.push((k.to_string(), v.to_string()));
        }
        Ok(Startup { version, params })
    }
    /// Value of a startup parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_bind_is_an_error_not_a_panic() {
        // portal "", statement "s", 1 format, then cut off.
        let body = b"\0s\0\0\x01";
        assert!(Bind::decode(body).is_err());
        let body = b"\0s\0\0\0\0\x01\x7f\xff\xff\xff";
        assert!(Bind::decode(body).is_err());
    }

    #[test]
    fn bind_roundtrip() {
        let mut b = Vec::new();
        b.extend_from_slice(b"p\0s\0");
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&2i16.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(b"42");
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        let d = Bind::decode(&b).unwrap();
        assert_eq!(d.portal, "p");
        assert_eq!(d.statement, "s");
        assert_eq!(d.params.as_slice(), [Some(&b"42"[..]), None]);
        assert_eq!(d.after_names, 4);
        assert_eq!(Bind::statement_name(&b).unwrap(), "s");
        assert!(Bind::statement_name(b"p\0s").is_err());
        assert_eq!(Bind::portal_name(&b).unwrap(), "p");
        assert!(Bind::portal_name(b"p").is_err());
    }

    #[test]
    fn invalid_utf8_and_missing_nul() {
        assert!(query_text(b"select 1").is_err());
        assert!(query_text(b"\xff\xfe\0").is_err());
        assert_eq!(query_text(b"select 1\0").unwrap(), "select 1");
        assert!(Target::decode(b"X\0").is_err());
        assert!(Parse::decode(b"\0q\0\xff\xff").is_err());
    }
}
