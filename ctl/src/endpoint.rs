//! Endpoints as operators type them: `198.18.1.11:8080`,
//! `[2001:2::11]:8080`, and for backends an optional `@WEIGHT`.
//!
//! Only the shape is checked here (where the address ends and the port
//! begins); whether the address is a usable IP address is for the daemon to
//! say, in the same words a config file would get.

/// An address (as typed) and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The address, without brackets.
    pub address: String,
    /// The port.
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.address.contains(':') {
            write!(f, "[{}]:{}", self.address, self.port)
        } else {
            write!(f, "{}:{}", self.address, self.port)
        }
    }
}

/// Parses `ADDRESS:PORT`, an IPv6 address in brackets.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let shape = || {
        format!(
            "bad endpoint {text:?}: expected ADDRESS:PORT, an IPv6 address in brackets \
             (198.18.1.11:8080, [2001:2::11]:8080)"
        )
    };
    let (address, port) = if let Some(rest) = text.strip_prefix('[') {
        let (address, port) = rest.split_once(']').ok_or_else(shape)?;
        (address, port.strip_prefix(':').ok_or_else(shape)?)
    } else {
        let (address, port) = text.rsplit_once(':').ok_or_else(shape)?;
        if address.contains(':') {
            return Err(shape());
        }
        (address, port)
    };
    if address.is_empty() {
        return Err(shape());
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("bad port {port:?} in {text:?}: expected a number from 1 to 65535"))?;
    Ok(Endpoint {
        address: address.to_owned(),
        port,
    })
}

/// Parses a backend: `ADDRESS:PORT` or `ADDRESS:PORT@WEIGHT`.
pub fn parse_backend(text: &str) -> Result<(Endpoint, Option<u32>), String> {
    match text.rsplit_once('@') {
        None => Ok((parse_endpoint(text)?, None)),
        Some((endpoint, weight)) => {
            let weight = weight.parse::<u32>().map_err(|_| {
                format!("bad weight {weight:?} in {text:?}: expected a number from 0 to 10000")
            })?;
            Ok((parse_endpoint(endpoint)?, Some(weight)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(address: &str, port: u16) -> Endpoint {
        Endpoint {
            address: address.into(),
            port,
        }
    }

    #[test]
    fn parses_both_families() {
        assert_eq!(
            parse_endpoint("198.18.1.11:8080"),
            Ok(ep("198.18.1.11", 8080))
        );
        assert_eq!(parse_endpoint("[2001:2::11]:80"), Ok(ep("2001:2::11", 80)));
        // The shape is ours to check; the address is the daemon's.
        assert_eq!(parse_endpoint("198.18.1.300:1"), Ok(ep("198.18.1.300", 1)));
        assert_eq!(ep("2001:2::11", 80).to_string(), "[2001:2::11]:80");
        assert_eq!(ep("198.18.1.11", 80).to_string(), "198.18.1.11:80");
    }

    #[test]
    fn refuses_bad_shapes_with_the_reason() {
        for bad in [
            "198.18.1.11",
            "2001:2::11:80",
            "[2001:2::11]80",
            "[2001:2::11",
            ":80",
            "",
        ] {
            let e = parse_endpoint(bad).unwrap_err();
            assert!(e.starts_with("bad endpoint"), "{bad}: {e}");
        }
        for bad in [
            "198.18.1.11:",
            "198.18.1.11:70000",
            "198.18.1.11:-1",
            "198.18.1.11:http",
        ] {
            let e = parse_endpoint(bad).unwrap_err();
            assert!(e.starts_with("bad port"), "{bad}: {e}");
        }
    }

    #[test]
    fn backends_take_an_optional_weight() {
        assert_eq!(
            parse_backend("198.18.1.11:8080"),
            Ok((ep("198.18.1.11", 8080), None))
        );
        assert_eq!(
            parse_backend("[2001:2::11]:8080@3"),
            Ok((ep("2001:2::11", 8080), Some(3)))
        );
        assert!(parse_backend("198.18.1.11:8080@x")
            .unwrap_err()
            .starts_with("bad weight"));
        assert!(parse_backend("198.18.1.11:8080@-2")
            .unwrap_err()
            .starts_with("bad weight"));
    }
}
