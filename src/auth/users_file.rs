//! The users file: PgBouncer's `auth_file` (`userlist.txt`) format, one
//! user per line as two double-quoted fields, `"name" "secret"`, with `""`
//! for a quote inside a field. Blank lines and lines starting with `;` or
//! `#` are comments; fields after the second are ignored (PgBouncer
//! docs, "Authentication file format").

/// One users-file entry: `(line number, user, secret)`; lines count from 1.
pub type Entry = (usize, String, String);

/// A malformed users-file line: `(line number, message)`.
pub type LineError = (usize, String);

/// Parses the file text into `(line number, user, secret)` entries.
///
/// Errors: `(line number, message)` for the first malformed line.
pub fn parse(text: &str) -> Result<Vec<Entry>, LineError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let (name, rest) = quoted(line).map_err(|m| (n, format!("user name: {m}")))?;
        let (secret, _) = quoted(rest.trim_start()).map_err(|m| (n, format!("secret: {m}")))?;
        if name.is_empty() {
            return Err((n, "empty user name".into()));
        }
        out.push((n, name, secret));
    }
    Ok(out)
}

/// Reads one `"..."` field from the start of `s`; returns it and the rest.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let body = s
        .strip_prefix('"')
        .ok_or("expected a double-quoted field")?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if body[i + 1..].starts_with('"') {
                out.push('"');
                chars.next();
            } else {
                return Ok((out, &body[i + 1..]));
            }
        } else {
            out.push(c);
        }
    }
    Err("missing closing double quote".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbouncer_format() {
        let text = "; comment\n\n\"alice\" \"SCRAM-SHA-256$4096:c2FsdA==$a:b\"\n  \"bob \"\"b\"\"\" \"md5abc\" \"extra\"\n# done\n";
        let e = parse(text).unwrap();
        assert_eq!(
            e,
            vec![
                (3, "alice".into(), "SCRAM-SHA-256$4096:c2FsdA==$a:b".into()),
                (4, "bob \"b\"".into(), "md5abc".into()),
            ]
        );
        assert_eq!(parse("alice pw").unwrap_err().0, 1);
        assert_eq!(parse("\"a\"\n\"b\" \"pw").unwrap_err().0, 1);
        assert_eq!(parse("\"a\" \"x\"\n\"b\" \"pw").unwrap_err().0, 2);
        assert_eq!(parse("\"\" \"x\"").unwrap_err().0, 1);
    }
}
