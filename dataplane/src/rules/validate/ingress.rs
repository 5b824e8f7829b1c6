//! The validator's part for `[ingress]`: each bogon prefix usable, none
//! listed twice.

use hashbrown::HashMap;

use super::super::place::{Item, Place};
use super::super::ClientPrefix;
use super::Validator;

impl Validator<'_> {
    /// `ingress.bogons`.
    pub(super) fn ingress(&mut self) {
        let bogons = &self.config.ingress.bogons;
        let mut first: HashMap<ClientPrefix, usize> = HashMap::with_capacity(bogons.len());
        for (k, prefix) in bogons.iter().enumerate() {
            let place = Place::element(Item::Ingress, "bogons", k);
            if !self.prefix(place, prefix, "ingress bogon") {
                continue;
            }
            if let Some(&j) = first.get(prefix) {
                let message = format!("ingress bogon prefix {prefix} is listed twice");
                let earlier = Place::element(Item::Ingress, "bogons", j);
                self.report_duplicate(place, earlier, message);
            } else {
                first.insert(*prefix, k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::{load_str, ConfigError};

    fn errors(text: &str) -> Vec<String> {
        match load_str(text, "g.toml") {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn bogon_prefixes_are_read_with_their_family() {
        let config = load_str(
            "[ingress]\nbogons = [\"10.0.0.0/8\", \"fc00::/7\", \"192.0.2.1\"]\n",
            "g.toml",
        )
        .unwrap();
        let shown: Vec<String> = config
            .ingress
            .bogons
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "fc00::/7", "192.0.2.1/32"]);
        assert!(load_str("", "g.toml").unwrap().ingress.bogons.is_empty());
    }

    #[test]
    fn a_bad_bogon_prefix_is_refused_at_its_line_and_column() {
        let text = "[ingress]\nbogons = [\n  \"10.0.0.0/8\",\n  \"10.1.2.3/8\",\n  \"nonsense\",\n  \"10.0.0.0/40\",\n  \"10.0.0.0/8\",\n]\n";
        assert_eq!(
            errors(text),
            [
                "g.toml:4:3: ingress bogon prefix 10.1.2.3/8 has host bits set",
                "g.toml:5:3: ingress bogon prefix \"nonsense\" is not an address/length prefix",
                "g.toml:6:3: ingress bogon prefix 10.0.0.0/40 is longer than /32",
                "g.toml:7:3: ingress bogon prefix 10.0.0.0/8 is listed twice (first at line 3)",
            ]
        );
    }

    #[test]
    fn an_unknown_ingress_key_is_refused() {
        let e = errors("[ingress]\nmartians = []\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("martians"), "{e:?}");
    }
}
