//! The `Authorization` header, parsed strictly.

use base64::Engine;

/// What a request presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

/// Why a header was refused (each answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("more than one Authorization header")]
    Repeated,
    #[error("malformed Authorization header")]
    Malformed,
    #[error("unsupported authorization scheme")]
    Scheme,
}

/// Longest header accepted (hyper bounds the whole header block too).
const MAX_LEN: usize = 8192;

/// Parses the values of every `Authorization` header of a request.
pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Presented, HeaderError> {
    let mut it = values.into_iter();
    let Some(v) = it.next() else {
        return Ok(Presented::None);
    };
    if it.next().is_some() {
        return Err(HeaderError::Repeated);
    }
    if v.len() > MAX_LEN {
        return Err(HeaderError::Malformed);
    }
    let v = std::str::from_utf8(v)
        .map_err(|_| HeaderError::Malformed)?
        .trim();
    let (scheme, rest) = v.split_once(' ').ok_or(HeaderError::Malformed)?;
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| HeaderError::Malformed)?;
            let text = String::from_utf8(raw).map_err(|_| HeaderError::Malformed)?;
            let (user, password) = text.split_once(':').ok_or(HeaderError::Malformed)?;
            if user.is_empty() && password.is_empty() {
                return Ok(Presented::None); // `Basic Og==`: no credentials at all
            }
            Ok(Presented::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            })
        }
        "bearer" => Ok(Presented::Bearer(rest.trim().to_owned())),
        _ => Err(HeaderError::Scheme),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: &str) -> Result<Presented, HeaderError> {
        parse([v.as_bytes()])
    }

    #[test]
    fn headers() {
        assert_eq!(parse([]), Ok(Presented::None));
        assert_eq!(
            one("Basic YWxpY2U6czNjcjN0Omlu"),
            Ok(Presented::Basic {
                user: "alice".into(),
                password: "s3cr3t:in".into()
            })
        );
        assert_eq!(one("basic Og=="), Ok(Presented::None));
        assert_eq!(one("Bearer abc"), Ok(Presented::Bearer("abc".into())));
        assert_eq!(one("Basic !!!"), Err(HeaderError::Malformed));
        assert_eq!(one("Basic bm9jb2xvbg=="), Err(HeaderError::Malformed));
        assert_eq!(one("Basic"), Err(HeaderError::Malformed));
        assert_eq!(one("Digest x"), Err(HeaderError::Scheme));
        assert_eq!(
            one(&format!("Basic {}", "A".repeat(9000))),
            Err(HeaderError::Malformed)
        );
        assert_eq!(
            parse(["Basic Og==".as_bytes(), "Basic Og==".as_bytes()]),
            Err(HeaderError::Repeated)
        );
    }
}
