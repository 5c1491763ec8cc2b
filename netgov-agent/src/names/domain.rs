//! Domain patterns of `expectedEgress[].domains`, in the syntax of the
//! ClusterNetworkPolicy `domainNames` peer: an exact name, or `*.` and a
//! name, which matches names with one or more labels before it (not the
//! name itself).

use super::Hostname;

/// A domain pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainPattern {
    /// This name only.
    Exact(Hostname),
    /// Names ending in `.` and this one, with at least one label before.
    Subdomains(Hostname),
}

/// Why a pattern was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainPatternError {
    /// A `*` anywhere but a leading `*.`.
    #[error("`*` is only allowed as a leading `*.` (one or more labels)")]
    Wildcard,
    /// Not a hostname.
    #[error("not a DNS name (letters, digits, `-`, `_` in dot-separated labels)")]
    NotAName,
    /// A single label (`com`, `*.com`): it would match a whole top-level
    /// domain, or names no cluster resolves.
    #[error("needs at least two labels")]
    SingleLabel,
}

impl DomainPattern {
    /// Parses `example.com` or `*.example.com`.
    ///
    /// # Errors
    /// [`DomainPatternError`] saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, DomainPatternError> {
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if name.contains('*') {
            return Err(DomainPatternError::Wildcard);
        }
        let name = Hostname::parse(name).ok_or(DomainPatternError::NotAName)?;
        if !name.as_str().contains('.') {
            return Err(DomainPatternError::SingleLabel);
        }
        Ok(if wildcard {
            Self::Subdomains(name)
        } else {
            Self::Exact(name)
        })
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &Hostname) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Subdomains(parent) => name
                .as_str()
                .strip_suffix(parent.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_cluster_network_policy_domain_names_do() {
        let name = |text| Hostname::parse(text).expect("hostname");
        let rows: [(&str, &str, bool); 9] = [
            ("example.com", "example.com", true),
            ("example.com", "EXAMPLE.com.", true),
            ("example.com", "www.example.com", false),
            ("*.example.com", "www.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "badexample.com", false),
            ("*.mirror.example", "models.mirror.example", true),
            ("*.mirror.example", "mirror.example.evil", false),
        ];
        for (pattern, host, expected) in rows {
            let pattern = DomainPattern::parse(pattern).expect("pattern");
            assert_eq!(pattern.matches(&name(host)), expected, "{pattern:?} {host}");
        }
    }

    #[test]
    fn bad_patterns_say_why() {
        let rows = [
            ("a.*.example", DomainPatternError::Wildcard),
            ("*example.com", DomainPatternError::Wildcard),
            ("**.example.com", DomainPatternError::Wildcard),
            ("exa mple.com", DomainPatternError::NotAName),
            ("", DomainPatternError::NotAName),
            ("com", DomainPatternError::SingleLabel),
            ("*.com", DomainPatternError::SingleLabel),
        ];
        for (text, error) in rows {
            assert_eq!(DomainPattern::parse(text), Err(error), "{text}");
        }
    }
}
